//! All file I/O of the log goes through [`Storage`], so tests can replace
//! the disk with one that crashes, tears writes and fails on demand
//! (`tiffany-testkit`'s fault-injecting storage).
//!
//! Invariants of [`FileStorage`]:
//! - Segment files are created at their full size with `fallocate`, so
//!   writes inside them never allocate blocks or grow the file, and are
//!   mapped shared for writing: [`StorageFile::write_at`] is a `memcpy`
//!   into the page cache (no system call), which survives a crash of the
//!   process; [`StorageFile::sync_data`] (`fdatasync`) makes it survive a
//!   power loss.
//! - The log writes each byte range from one thread at a time (under its
//!   append lock) and readers only read ranges the writer has finished and
//!   will not touch again until the slot is recycled, which the log does
//!   only when no reader holds a view of it.

// This module *is* the blocking file I/O layer; the log's callers that must
// not block (agent tasks) reach it through a thread of their own.
#![allow(clippy::disallowed_methods)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// A file system for the log: directories, named files, atomic replacement.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// An open file.
    type File: StorageFile;
    /// Holds the directory's lock until dropped.
    type Lock: Send + Sync;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates (or truncates) a file of exactly `len` zero bytes, with its
    /// blocks allocated.
    fn create(&self, path: &Path, len: u64) -> io::Result<Self::File>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of `dir`; fails when another process (or
    /// another open log) holds it.
    fn lock(&self, dir: &Path) -> io::Result<Self::Lock>;

    /// Replaces `dir/name` with `bytes` atomically and durably: a reader
    /// after any crash sees the old contents or the new, never a mix.
    fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = dir.join(format!("{name}.tmp"));
        let len = u64::try_from(bytes.len()).map_err(io::Error::other)?;
        let file = self.create(&tmp, len)?;
        file.write_at(0, bytes)?;
        file.sync_data()?;
        drop(file);
        self.rename(&tmp, &dir.join(name))?;
        self.sync_dir(dir)
    }

    /// Reads a whole (small) file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path)?;
        let len = usize::try_from(file.len()).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        file.read_at(0, &mut buf)?;
        Ok(buf)
    }
}

/// An open file of a [`Storage`].
pub trait StorageFile: Send + Sync + 'static {
    /// A read-only view of the whole file (a memory map for real files).
    type View: AsRef<[u8]> + Send + Sync + 'static;

    /// The file's length.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (inside the file's length).
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// A read-only view of the file's current contents.
    fn view(&self) -> io::Result<Arc<Self::View>>;

    /// The first range `[start, end)` at or after `offset` that may hold
    /// written bytes; `None` when nothing after `offset` ever was. File
    /// systems report never-written preallocated ranges as holes (they read
    /// as zeroes), so recovery need not read them. The default assumes the
    /// whole rest of the file holds data.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        Ok((offset < self.len()).then_some((offset, self.len())))
    }

    /// Whether any page of the file is in memory (the OS's page cache)
    /// now. `Some(false)` means that whatever is read from it next comes
    /// from the disk, so is durable. The default: `None`, not known.
    fn in_page_cache(&self) -> io::Result<Option<bool>> {
        Ok(None)
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStorage;

/// A real file: the descriptor and a shared writable mapping.
pub struct RealFile {
    file: File,
    len: u64,
    map: memmap2::MmapRaw,
}

impl fmt::Debug for RealFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealFile").field("len", &self.len).finish()
    }
}

/// The lock of a log directory: an `flock`ed file, released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl RealFile {
    fn new(file: File) -> io::Result<RealFile> {
        let len = file.metadata()?.len();
        let map = memmap2::MmapOptions::new().map_raw(&file)?;
        Ok(RealFile { file, len, map })
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<usize> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= self.len);
        match end {
            Some(_) => usize::try_from(offset).map_err(io::Error::other),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {offset}+{len} outside a file of {} bytes", self.len),
            )),
        }
    }
}

impl StorageFile for RealFile {
    type View = memmap2::Mmap;

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let start = self.range(offset, buf.len())?;
        // SAFETY: `range` checked that `start + buf.len()` lies inside the
        // mapping, which lives as long as `self`. The log writes a range from
        // one thread at a time and never while a reader reads that range
        // (module invariants), so the copy races with nothing.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr(),
                self.map.as_mut_ptr().add(start),
                buf.len(),
            );
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        // fdatasync writes back the mapping's dirty pages with the file's.
        self.file.sync_data()
    }

    fn view(&self) -> io::Result<Arc<memmap2::Mmap>> {
        // SAFETY: the log only reads ranges that are no longer written
        // (module invariants); nothing truncates a segment file while the
        // log is open.
        let map = unsafe { memmap2::MmapOptions::new().map(&self.file)? };
        Ok(Arc::new(map))
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let Ok(from) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on a descriptor we own; no memory is involved. The
        // file position it moves is never used (all I/O is positioned).
        let start = unsafe { libc::lseek(fd, from, libc::SEEK_DATA) };
        if start < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                // No SEEK_DATA here: everything may be data.
                Some(libc::EINVAL) => Ok((offset < self.len).then_some((offset, self.len))),
                _ => Err(err),
            };
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let end = if end < 0 { self.len } else { end as u64 };
        Ok(Some((start as u64, end.min(self.len))))
    }

    fn in_page_cache(&self) -> io::Result<Option<bool>> {
        /// `struct cachestat_range`: `len` 0 is to the end of the file.
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        /// `struct cachestat`.
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        /// cachestat(2), Linux 6.5 on: the same number on every
        /// architecture. It counts the cached pages of a range by walking
        /// only those present (mincore(2) looks up every page: 1 ms for a
        /// 64 MiB slot).
        const SYS_CACHESTAT: libc::c_long = 451;
        let range = Range { off: 0, len: 0 };
        let mut stat = Stat::default();
        // SAFETY: cachestat reads `range` and writes `stat`, both live and
        // laid out as the kernel's structs; flags must be 0. The descriptor
        // is ours and open for writing, which the kernel asks of callers
        // that do not own the file.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                self.file.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0,
            )
        };
        if rc == 0 {
            return Ok(Some(stat.nr_cache > 0));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Older kernels: not known.
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(err),
        }
    }
}

impl Storage for FileStorage {
    type File = RealFile;
    type Lock = DirLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<RealFile> {
        RealFile::new(OpenOptions::new().read(true).write(true).open(path)?)
    }

    fn create(&self, path: &Path, len: u64) -> io::Result<RealFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        if len > 0 {
            allocate(&file, len)?;
        }
        RealFile::new(file)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))?;
        // A process killed a moment ago may have left a child between fork
        // and exec, still holding a copy of its descriptor (closed at
        // exec): wait briefly for it before calling the log locked.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the log directory is locked by another process",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// How long [`FileStorage::lock`] waits for a lock held by another process.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Gives `file` exactly `len` bytes with their blocks allocated.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let size = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: fallocate on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without fallocate (tmpfs on old kernels, some
        // network file systems): write zeroes so blocks exist.
        file.set_len(0)?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            file.write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
            at += n as u64;
        }
        return Ok(());
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_file_writes_through_the_mapping_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage;
        let path = dir.path().join("f");
        let f = s.create(&path, 8192).expect("create");
        assert_eq!(f.len(), 8192);
        f.write_at(4096, b"abc").expect("write");
        f.sync_data().expect("sync");
        let mut buf = [0u8; 3];
        f.read_at(4096, &mut buf).expect("read");
        assert_eq!(&buf, b"abc");
        assert_eq!(&f.view().expect("view").as_ref()[4096..4099], b"abc");
        assert!(
            f.write_at(8190, b"abc").is_err(),
            "writes past the end are refused"
        );
        drop(f);
        let again = s.open(&path).expect("reopen");
        let mut buf = [0u8; 3];
        again.read_at(4096, &mut buf).expect("read");
        assert_eq!(&buf, b"abc");
    }

    #[test]
    fn storage_next_data_covers_every_written_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FileStorage
            .create(&dir.path().join("f"), 4 << 20)
            .expect("create");
        let written = [
            (0u64, b"head".as_slice()),
            (1 << 20, b"middle"),
            ((3 << 20) + 5, b"late"),
        ];
        for (at, bytes) in written {
            f.write_at(at, bytes).expect("write");
        }
        f.sync_data().expect("sync");
        for (at, bytes) in written {
            // From anywhere before a written byte, some reported range
            // holds it (a file system without holes reports everything).
            for from in [0, at.saturating_sub(1), at] {
                let mut offset = from;
                let found = loop {
                    match f.next_data(offset).expect("next_data") {
                        None => break false,
                        Some((start, end)) if start <= at && at + bytes.len() as u64 <= end => {
                            break true;
                        }
                        Some((start, end)) => {
                            assert!(
                                start >= offset && end > start,
                                "{start}..{end} from {offset}"
                            );
                            if start > at {
                                break false;
                            }
                            offset = end;
                        }
                    }
                };
                assert!(
                    found,
                    "the bytes at {at} are not in a range found from {from}"
                );
            }
        }
        assert_eq!(f.next_data(4 << 20).expect("at the end"), None);
    }

    #[test]
    fn storage_in_page_cache_sees_a_written_page() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FileStorage
            .create(&dir.path().join("f"), 64 << 10)
            .expect("create");
        f.write_at(8192, b"written").expect("write");
        assert_ne!(f.in_page_cache().expect("cachestat"), Some(false));
    }

    #[test]
    fn storage_write_atomic_replaces_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage;
        s.write_atomic(dir.path(), "C", b"one").expect("first");
        s.write_atomic(dir.path(), "C", b"second").expect("second");
        assert_eq!(s.read_all(&dir.path().join("C")).expect("read"), b"second");
        assert!(
            !s.list(dir.path())
                .expect("list")
                .iter()
                .any(|n| n.ends_with(".tmp"))
        );
        let lock = s.lock(dir.path()).expect("lock");
        let err = s.lock(dir.path()).expect_err("second lock");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(lock);
        s.lock(dir.path()).expect("lock after release");
    }
}
