//! Baselines: what the disk and the CPU allow with no log format at all.
//!
//! - [`RawFdatasync`] (`fdatasync_raw`): one writer `pwrite`s each payload
//!   at increasing offsets of a preallocated file, then `fdatasync`s it: the
//!   floor of a durable append on this disk.
//! - [`RawGroupCommit`] (`raw_group_commit`): many writers `pwrite` at
//!   offsets they reserve; one of the waiting writers (the leader)
//!   `fdatasync`s for every writer whose write completed before the sync
//!   began: the simplest group commit there is.
//! - [`RawFile`] (`raw_read_crc`, `raw_read_crc_cold`): `read` a file of the
//!   payloads and CRC32C it (the crc32c crate): the ceiling of a replay, and
//!   with the page cache dropped, the floor of a recovery.
//!
//! Invariants:
//! - a data file is `fallocate`d, then written whole with zeros and synced
//!   before the first timed append, so no timed append allocates blocks,
//!   converts unwritten extents or changes the file size: `fdatasync` then
//!   has only the data to write;
//! - the group commit acknowledges a writer only after an `fdatasync` that
//!   began after its `pwrite` returned; after a failed `fdatasync` every
//!   waiter fails, like a poisoned log;
//! - [`RawFile`] checks the CRC of every byte it reads against the one
//!   computed when it wrote them.

use std::any::Any;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context as _, Result, anyhow, ensure};

use super::workload::Payloads;
use super::{AppendLog, Appender, ColdStart, OpenPlan, ReplaySource};
use crate::measure::Named;

/// Bytes per write when filling or reading a file.
const CHUNK: usize = 1 << 20;

/// One writer, `pwrite` + `fdatasync` per append.
#[derive(Debug)]
pub(crate) struct RawFdatasync;

impl Named for RawFdatasync {
    fn name(&self) -> &'static str {
        "fdatasync_raw"
    }
}

impl AppendLog for RawFdatasync {
    fn setup(&self) -> String {
        "pwrite of the payload alone at increasing offsets + fdatasync; file fallocated and \
         pre-written with zeros"
            .into()
    }

    fn open(&self, dir: &Path, plan: &OpenPlan) -> Result<Vec<Box<dyn Appender>>> {
        ensure!(plan.writers == 1, "fdatasync_raw has exactly one writer");
        let (file, end) = preallocated(&dir.join("raw.log"), plan.payload_bytes())?;
        Ok(vec![Box::new(RawAppender {
            file,
            offset: 0,
            end,
        })])
    }
}

struct RawAppender {
    file: File,
    offset: u64,
    end: u64,
}

impl Appender for RawAppender {
    fn append(&mut self, _stream: u64, payload: &[u8]) -> Result<()> {
        let next = self.offset + payload.len() as u64;
        ensure!(next <= self.end, "the raw log is full ({} bytes)", self.end);
        self.file.write_all_at(payload, self.offset)?;
        self.file.sync_data().context("fdatasync")?;
        self.offset = next;
        Ok(())
    }
}

/// Many writers sharing one `fdatasync` per batch (leader/follower).
#[derive(Debug)]
pub(crate) struct RawGroupCommit;

impl Named for RawGroupCommit {
    fn name(&self) -> &'static str {
        "raw_group_commit"
    }
}

impl AppendLog for RawGroupCommit {
    fn setup(&self) -> String {
        "pwrite of the payload alone at a reserved offset, then wait for an fdatasync begun \
         after it (a waiting writer leads the next sync); file fallocated and pre-written"
            .into()
    }

    fn open(&self, dir: &Path, plan: &OpenPlan) -> Result<Vec<Box<dyn Appender>>> {
        let (file, end) = preallocated(&dir.join("raw.log"), plan.payload_bytes())?;
        let shared = Arc::new(Shared {
            file,
            end,
            next: AtomicU64::new(0),
            state: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
        });
        Ok((0..plan.writers)
            .map(|_| {
                Box::new(GroupAppender {
                    shared: Arc::clone(&shared),
                }) as Box<dyn Appender>
            })
            .collect())
    }
}

struct Shared {
    file: File,
    end: u64,
    /// The next free offset.
    next: AtomicU64,
    state: Mutex<SyncState>,
    /// Signalled whenever a sync ends.
    synced: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Tickets handed out: one per write completed.
    completed: u64,
    /// Every ticket below this is durable.
    durable: u64,
    /// A leader is inside `fdatasync`.
    syncing: bool,
    /// An `fdatasync` failed: nothing is durable any more.
    failed: bool,
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, SyncState>> {
        self.state
            .lock()
            .map_err(|_| anyhow!("a writer panicked holding the group-commit lock"))
    }

    /// Waits until the write that just completed is durable, leading a
    /// sync when none is running.
    // Blocking on purpose: a benchmark thread waiting for the leader's sync.
    #[allow(clippy::disallowed_methods)]
    fn commit(&self) -> Result<()> {
        let mut state = self.lock()?;
        let ticket = state.completed;
        state.completed += 1;
        loop {
            ensure!(!state.failed, "an earlier fdatasync failed");
            if state.durable > ticket {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .map_err(|_| anyhow!("a writer panicked holding the group-commit lock"))?;
                continue;
            }
            // Lead: every ticket handed out so far belongs to a finished
            // write, so this sync covers them all.
            state.syncing = true;
            let target = state.completed;
            drop(state);
            let synced = self.file.sync_data();
            state = self.lock()?;
            state.syncing = false;
            match synced {
                Ok(()) => state.durable = target,
                Err(_) => state.failed = true,
            }
            self.synced.notify_all();
            synced.context("fdatasync")?;
        }
    }
}

struct GroupAppender {
    shared: Arc<Shared>,
}

impl Appender for GroupAppender {
    fn append(&mut self, _stream: u64, payload: &[u8]) -> Result<()> {
        let len = payload.len() as u64;
        let offset = self.shared.next.fetch_add(len, Ordering::Relaxed);
        ensure!(
            offset + len <= self.shared.end,
            "the raw log is full ({} bytes)",
            self.shared.end
        );
        self.shared.file.write_all_at(payload, offset)?;
        self.shared.commit()
    }
}

/// A file of payloads, read back whole and CRC-checked.
#[derive(Debug)]
pub(crate) struct RawFile {
    name: &'static str,
    path: PathBuf,
    bytes: u64,
    crc: u32,
}

impl RawFile {
    /// Writes `bytes` of `payloads` (in their cycle order) to a new file in
    /// `dir` and syncs it; `name` is the contender's name.
    pub(crate) fn create(
        name: &'static str,
        dir: &Path,
        bytes: u64,
        payloads: &Payloads,
    ) -> Result<Self> {
        let path = dir.join("payloads.raw");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut crc = 0;
        let mut buf = Vec::with_capacity(CHUNK + payloads.len());
        let (mut written, mut i) = (0u64, 0u64);
        while written < bytes {
            buf.clear();
            while buf.len() < CHUNK && written + (buf.len() as u64) < bytes {
                buf.extend_from_slice(payloads.get(i));
                i += 1;
            }
            buf.truncate(
                usize::try_from(bytes - written)
                    .unwrap_or(usize::MAX)
                    .min(buf.len()),
            );
            file.write_all_at(&buf, written)?;
            crc = crc32c::crc32c_append(crc, &buf);
            written += buf.len() as u64;
        }
        file.sync_all()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        Ok(RawFile {
            name,
            path,
            bytes,
            crc,
        })
    }

    /// Reads the whole file, CRC32C over every byte; returns the bytes read.
    fn read_checked(&self) -> Result<u64> {
        let mut file = OpenOptions::new()
            .read(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let mut buf = vec![0; CHUNK];
        let (mut crc, mut read) = (0, 0u64);
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("read"),
            };
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            read += n as u64;
        }
        ensure!(
            read == self.bytes && crc == self.crc,
            "{} read back {read} bytes with crc {crc:#x}, wrote {} with {:#x}",
            self.path.display(),
            self.bytes,
            self.crc
        );
        Ok(read)
    }
}

impl Named for RawFile {
    fn name(&self) -> &'static str {
        self.name
    }
}

impl ReplaySource for RawFile {
    fn replay(&self) -> Result<u64> {
        self.read_checked()
    }
}

impl ColdStart for RawFile {
    fn files(&self) -> Result<Vec<PathBuf>> {
        Ok(vec![self.path.clone()])
    }

    fn start(&self) -> Result<Box<dyn Any>> {
        Ok(Box::new(self.read_checked()?))
    }
}

/// Creates `path` with at least `bytes` (rounded up to 4 KiB, at least
/// one block) `fallocate`d, written with zeros and synced; returns the file
/// and its length.
fn preallocated(path: &Path, bytes: u64) -> Result<(File, u64)> {
    let len = bytes.max(1).div_ceil(4096) * 4096;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let off_len = libc::off_t::try_from(len).context("file too large")?;
    // SAFETY: the descriptor is open for the whole call; fallocate touches
    // no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, off_len) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // Writing the zeros below allocates the blocks anyway.
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(err).with_context(|| format!("fallocate {}", path.display()));
        }
    }
    let zeros = vec![0; CHUNK];
    let mut offset = 0;
    while offset < len {
        let n = CHUNK.min(usize::try_from(len - offset).unwrap_or(CHUNK));
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok((file, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    fn plan(writers: usize, appends: u64) -> OpenPlan {
        OpenPlan {
            writers,
            appends,
            payload_len: 256,
        }
    }

    #[test]
    fn raw_appends_land_at_increasing_offsets_and_stop_when_full() {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-raw-test").unwrap();
        let mut appenders = RawFdatasync.open(dir.path(), &plan(1, 16)).unwrap();
        let a = &mut appenders[0];
        a.append(0, &[1; 256]).unwrap();
        a.append(0, &[2; 256]).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .open(dir.path().join("raw.log"))
            .unwrap();
        assert_eq!(
            file.metadata().unwrap().len(),
            4096,
            "16 x 256 B, one block"
        );
        let mut back = [0u8; 512];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(back[..256].iter().all(|&b| b == 1) && back[256..].iter().all(|&b| b == 2));
        for _ in 2..16 {
            a.append(0, &[3; 256]).unwrap();
        }
        assert!(a.append(0, &[4; 256]).is_err(), "full");
        assert!(RawFdatasync.open(dir.path(), &plan(2, 16)).is_err());
    }

    #[test]
    fn raw_group_commit_makes_every_writer_durable() {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-raw-test").unwrap();
        let appenders = RawGroupCommit.open(dir.path(), &plan(4, 40)).unwrap();
        std::thread::scope(|s| {
            for (w, mut a) in appenders.into_iter().enumerate() {
                s.spawn(move || {
                    for _ in 0..10 {
                        a.append(w as u64, &[w as u8 + 1; 256]).unwrap();
                    }
                });
            }
        });
        let file = OpenOptions::new()
            .read(true)
            .open(dir.path().join("raw.log"))
            .unwrap();
        let mut all = vec![0u8; 40 * 256];
        file.read_exact_at(&mut all, 0).unwrap();
        for w in 1..=4u8 {
            let records = all
                .chunks(256)
                .filter(|r| r.iter().all(|&b| b == w))
                .count();
            assert_eq!(records, 10, "writer {w}");
        }
    }

    #[test]
    fn raw_file_reads_back_what_it_wrote() {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-raw-test").unwrap();
        let payloads = Payloads::random(5, 8, 256);
        let raw = RawFile::create(
            "raw_read_crc",
            dir.path(),
            3 * CHUNK as u64 + 100,
            &payloads,
        )
        .unwrap();
        assert_eq!(raw.replay().unwrap(), 3 * CHUNK as u64 + 100);
        assert_eq!(raw.files().unwrap(), [dir.path().join("payloads.raw")]);
        let expected = (0..4).fold(0, |crc, i| crc32c::crc32c_append(crc, payloads.get(i)));
        let small = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-raw-test").unwrap();
        assert_eq!(
            RawFile::create("x", small.path(), 1024, &payloads)
                .unwrap()
                .crc,
            expected
        );
    }
}
