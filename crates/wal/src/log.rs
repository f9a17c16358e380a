//! The log: recovery, appends with group commit, rotation over ring slots,
//! checkpoints and replay.
//!
//! Invariants:
//! - `Writer` (behind the append lock) owns the write position. A record is
//!   copied into the active segment under that lock, then `written` is
//!   raised to its LSN; `durable` only ever rises, to an LSN whose record
//!   and all earlier ones have been covered by an `fdatasync`.
//! - At most one sync round runs at a time (`SyncRound::running`). Its
//!   leader syncs the segment that was active when it read its target LSN;
//!   a rotation syncs the segment it seals before leaving it, so every
//!   record up to the target is in a synced file either way.
//! - Live segments have consecutive sequence numbers; the back of
//!   `segments` is the active one, always in a slot. Slots of segments
//!   wholly before the newest checkpoint are recycled, but only once no
//!   replay holds their file (`Arc` count), so a reader never sees a slot
//!   rewritten under it.
//! - Archived segments are a prefix of `segments`: the archiver takes the
//!   oldest sealed segment still in a slot, and stops at the first failure.
//!   A segment moves from its slot to its archive (and the slot to `free`)
//!   only once the archive is durable. An archive is removed only when it
//!   is wholly before the newest checkpoint and no replay holds it; until
//!   then it waits in `doomed`.
//! - Compression runs on its own thread, outside the append lock, which it
//!   takes only to pick a segment and to install the archive: appends and
//!   syncs never wait for it.
//! - After a failed sync the log is poisoned for good: nothing is written
//!   or acknowledged again by this handle.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::archive::{self, ArchiveEntry, Archived};
use crate::format::{
    self, CheckpointFile, FLAG_CHECKPOINT, FLAG_SEAL, FRAME_HEADER, Frame, FrameHeader,
    HEADER_BLOCK, HEADER_LEN, HeaderError, SegmentHeader, frame_size,
};
use crate::storage::{FileStorage, Storage, StorageFile};
use crate::{Archiver, Compression, Error, Lsn, RecoveryMode, SyncMode, WalConfig};

const CHECKPOINT_NAME: &str = "CHECKPOINT";
/// The smallest segment size accepted.
const MIN_SEGMENT: u64 = 64 << 10;

fn slot_name(slot: u32) -> String {
    format!("slot-{slot:04}.seg")
}

fn parse_slot(name: &str) -> Option<u32> {
    name.strip_prefix("slot-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// A checkpoint: the caller's state up to `lsn` is saved elsewhere, under
/// `snapshot_ref`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Everything up to and including this LSN is covered by the snapshot.
    pub lsn: Lsn,
    /// The caller's reference to its snapshot (a file name, a key...).
    pub snapshot_ref: Vec<u8>,
}

/// A torn record at the end of the log, left by a crash in mid-write, and
/// cut off by recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Slot file index.
    pub slot: u32,
    /// Offset of the torn frame.
    pub offset: u64,
}

/// What a live segment holds; see [`Wal::segments`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Slot file index; `None` once the segment is archived (its slot is
    /// free then, or holds a later segment).
    pub slot: Option<u32>,
    /// Segment sequence number.
    pub seq: u64,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// LSN of its last record (`first_lsn - 1` when empty).
    pub last_lsn: Lsn,
    /// Bytes used, header block included (for an archived segment: before
    /// compression).
    pub used_bytes: u64,
    /// Bytes it takes on disk: the slot file's size, or the archive's.
    pub size: u64,
    /// Whether it is sealed (not the active segment).
    pub sealed: bool,
    /// Whether it lives in a compressed archive (`sealed-<seq>.lz4`).
    pub archived: bool,
}

impl SegmentInfo {
    /// For an archived segment, its bytes before compression over its
    /// bytes on disk.
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.archived && self.size > 0).then(|| self.used_bytes as f64 / self.size as f64)
    }
}

/// What [`Wal::open_with_report`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The newest checkpoint, where replay should start.
    pub checkpoint: Option<Checkpoint>,
    /// The first LSN the log still holds (1 for a new log).
    pub first_lsn: Lsn,
    /// The last LSN recovered (0 for an empty log).
    pub last_lsn: Lsn,
    /// Bytes of records after the checkpoint (what a boot replays).
    pub tail_bytes: u64,
    /// True when `tail_bytes` exceeds [`WalConfig::max_tail_bytes`].
    pub tail_over_cap: bool,
    /// A torn last record that was cut off.
    pub torn_tail: Option<TornTail>,
    /// Damage cut off under [`RecoveryMode::TolerateCorruptTail`]: where,
    /// and why.
    pub truncated_corruption: Option<(TornTail, &'static str)>,
    /// Slots whose header was unreadable (a rotation interrupted by a crash
    /// before any record was written to it) and were reclaimed.
    pub reclaimed_slots: Vec<u32>,
    /// Segments scanned.
    pub segments_scanned: usize,
    /// True when the `CHECKPOINT` file was missing or damaged and the
    /// checkpoint was taken from the newest checkpoint record in the log.
    pub checkpoint_from_log: bool,
    newest_checkpoint_record: Option<CheckpointFile>,
}

/// An open write-ahead log. Cheap to share: wrap it in an `Arc`; every
/// method takes `&self`.
pub struct Wal<S: Storage = FileStorage> {
    inner: Arc<Inner<S>>,
    /// The background syncer (absent for read-only handles).
    syncer: Option<std::thread::JoinHandle<()>>,
    /// The archiver (present with compression and [`Archiver::Thread`]).
    archiver: Option<std::thread::JoinHandle<()>>,
}

struct Inner<S: Storage> {
    /// Shared with replays, which read archives through it.
    storage: Arc<S>,
    dir: PathBuf,
    config: WalConfig,
    /// `None` for a read-only handle.
    _lock: Option<S::Lock>,
    write: Mutex<Writer<S>>,
    sync: Mutex<SyncRound>,
    written: AtomicU64,
    durable: AtomicU64,
    poisoned: AtomicBool,
    poison: Mutex<Option<String>>,
    /// Total bytes of frames appended, and of frames covered by a sync.
    written_bytes: AtomicU64,
    durable_bytes: AtomicU64,
    /// The current [`Pressure`], as its `u8`.
    pressure: AtomicU8,
    subscribers: Mutex<Vec<mpsc::Sender<PressureEvent>>>,
    /// Async appenders waiting for durability: (LSN, waker).
    waiters: Mutex<Vec<(u64, Waker)>>,
    background: Mutex<Background>,
    background_wake: Condvar,
    archive_wake: Condvar,
    /// Held for a whole archiving pass: one archiver at a time.
    archiving: Mutex<()>,
}

#[derive(Default)]
struct SyncRound {
    running: bool,
    /// Blocking appenders waiting for a round to cover their LSN. Each
    /// sleeps until a round covers it or it is asked to lead the next one,
    /// so a round wakes only the threads it serves plus one leader.
    waiting: Vec<(u64, Thread)>,
}

/// Requests to the background syncer and the archiver.
#[derive(Default)]
struct Background {
    requested: bool,
    /// A segment was sealed: the archiver has work.
    archive: bool,
    stop: bool,
}

/// How full the queue of appended-but-unsynced bytes is, against
/// [`WalConfig::soft_watermark`] and [`WalConfig::hard_watermark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Below the soft watermark.
    Normal,
    /// Above the soft watermark: appenders are paced (a background sync is
    /// under way).
    Soft,
    /// Above the hard watermark: blocking appenders wait for a sync,
    /// [`Wal::try_append`] fails with [`Error::WouldBlock`].
    Hard,
}

/// A crossing of a watermark; see [`Wal::subscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PressureEvent {
    /// The level now.
    pub pressure: Pressure,
    /// Unsynced bytes when it changed.
    pub unsynced_bytes: u64,
}

struct Segment<S: Storage> {
    seq: u64,
    first_lsn: Lsn,
    place: Place<S>,
    /// Offset just past the last record.
    end: u64,
    /// LSN of the last record (first_lsn - 1 when empty).
    last_lsn: Lsn,
    /// Where some of its records start, for replays from deep inside it.
    marks: Marks,
}

/// Bytes of records between two [`Marks`] of a segment (at least).
const MARK_EVERY: u64 = 64 << 10;

/// The LSNs and offsets of some frames of a segment, at least
/// [`MARK_EVERY`] bytes apart, in order: noted as recovery scans a segment
/// and as records are appended, so every mark is the start of a frame that
/// was found valid. A replay from an LSN deep in a segment starts at the
/// last mark at or before it instead of walking (and checking) every frame
/// from the segment's header: a boot's replay from its checkpoint no longer
/// reads the whole segment again.
#[derive(Clone, Default)]
struct Marks(Vec<(Lsn, u64)>);

impl Marks {
    /// Notes the frame of `lsn` at `offset` when it is far enough past the
    /// last mark.
    fn note(&mut self, lsn: Lsn, offset: u64) {
        if self
            .0
            .last()
            .is_none_or(|&(_, at)| offset >= at + MARK_EVERY)
        {
            self.0.push((lsn, offset));
        }
    }

    /// The offset of the last mark at or before `lsn`.
    fn start_for(&self, lsn: Lsn) -> Option<u64> {
        let after = self.0.partition_point(|&(marked, _)| marked <= lsn);
        let (_, at) = self.0.get(after.checked_sub(1)?)?;
        Some(*at)
    }
}

/// Where a live segment's bytes are.
enum Place<S: Storage> {
    /// In a slot file, read in place through its mapping.
    Slot { slot: u32, file: Arc<S::File> },
    /// In an archive; the slot it was sealed in is free.
    Archive(Arc<Archived>),
}

impl<S: Storage> Place<S> {
    fn slot(&self) -> Option<(u32, &Arc<S::File>)> {
        match self {
            Place::Slot { slot, file } => Some((*slot, file)),
            Place::Archive(_) => None,
        }
    }

    /// The file holding the segment, for errors.
    fn path(&self, dir: &Path) -> PathBuf {
        match self {
            Place::Slot { slot, .. } => dir.join(slot_name(*slot)),
            Place::Archive(archived) => dir.join(archived.name()),
        }
    }
}

impl<S: Storage> Clone for Place<S> {
    fn clone(&self) -> Place<S> {
        match self {
            Place::Slot { slot, file } => Place::Slot {
                slot: *slot,
                file: Arc::clone(file),
            },
            Place::Archive(archived) => Place::Archive(Arc::clone(archived)),
        }
    }
}

impl<S: Storage> Clone for Segment<S> {
    fn clone(&self) -> Segment<S> {
        Segment {
            seq: self.seq,
            first_lsn: self.first_lsn,
            place: self.place.clone(),
            end: self.end,
            last_lsn: self.last_lsn,
            marks: self.marks.clone(),
        }
    }
}

struct Writer<S: Storage> {
    segments: VecDeque<Segment<S>>,
    free: Vec<(u32, Arc<S::File>)>,
    /// Archives wholly before the newest checkpoint that a replay still
    /// holds: removed once it lets go.
    doomed: Vec<Arc<Archived>>,
    slots: u32,
    next_lsn: u64,
    next_seq: u64,
    checkpoint: Option<(Checkpoint, u64)>,
    buf: Vec<u8>,
}

impl Wal<FileStorage> {
    /// Opens the log in `dir` on the real disk for reading only; see
    /// [`Wal::open_read_only_in`].
    pub fn open_read_only(
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal, RecoveryReport), Error> {
        Wal::open_read_only_in(FileStorage, dir, config)
    }

    /// Opens (recovering) or creates the log in `dir` on the real disk.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal, Error> {
        Ok(Wal::open_with_report(dir, config)?.0)
    }

    /// Like [`Wal::open`], also returning what recovery found.
    pub fn open_with_report(
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal, RecoveryReport), Error> {
        Wal::open_in(FileStorage, dir, config)
    }
}

impl<S: Storage> Wal<S> {
    /// Opens (recovering) or creates the log in `dir` on `storage`.
    pub fn open_in(
        storage: S,
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal<S>, RecoveryReport), Error> {
        Wal::open_mode(storage, dir.as_ref(), config, false)
    }

    /// Opens the log in `dir` for reading only: no lock is taken (the log
    /// may be open elsewhere; records appended there later are not seen),
    /// nothing is created or repaired (a torn tail is reported, not cut),
    /// and every write fails with [`Error::ReadOnly`].
    pub fn open_read_only_in(
        storage: S,
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal<S>, RecoveryReport), Error> {
        Wal::open_mode(storage, dir.as_ref(), config, true)
    }

    fn open_mode(
        storage: S,
        dir: &Path,
        config: WalConfig,
        read_only: bool,
    ) -> Result<(Wal<S>, RecoveryReport), Error> {
        let dir = dir.to_path_buf();
        if config.segment_size < MIN_SEGMENT {
            return Err(Error::Config("segment_size must be at least 64 KiB"));
        }
        let lock = if read_only {
            if storage.list(&dir).is_err() {
                return Err(Error::io(
                    "open log directory",
                    &dir,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            }
            None
        } else {
            storage
                .create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
            Some(storage.lock(&dir).map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    Error::Locked { dir: dir.clone() }
                } else {
                    Error::io("lock", &dir, e)
                }
            })?)
        };
        if config.soft_watermark > config.hard_watermark {
            return Err(Error::Config(
                "soft_watermark must not exceed hard_watermark",
            ));
        }
        let (writer, report) = recover(&storage, &dir, &config, read_only)?;
        let last = writer.next_lsn - 1;
        let archive_thread = !read_only
            && config.compression != Compression::None
            && config.archiver == Archiver::Thread;
        let inner = Arc::new(Inner {
            storage: Arc::new(storage),
            dir,
            config,
            _lock: lock,
            write: Mutex::new(writer),
            sync: Mutex::new(SyncRound::default()),
            written: AtomicU64::new(last),
            durable: AtomicU64::new(last),
            poisoned: AtomicBool::new(false),
            poison: Mutex::new(None),
            written_bytes: AtomicU64::new(0),
            durable_bytes: AtomicU64::new(0),
            pressure: AtomicU8::new(Pressure::Normal as u8),
            subscribers: Mutex::new(Vec::new()),
            waiters: Mutex::new(Vec::new()),
            background: Mutex::new(Background {
                // Segments sealed before this open may wait for archiving.
                archive: true,
                ..Background::default()
            }),
            background_wake: Condvar::new(),
            archive_wake: Condvar::new(),
            archiving: Mutex::new(()),
        });
        let mut wal = Wal {
            inner,
            syncer: None,
            archiver: None,
        };
        if !read_only {
            wal.syncer = Some(wal.spawn("tiffany-wal-sync", Inner::background_syncer)?);
        }
        if archive_thread {
            wal.archiver = Some(wal.spawn("tiffany-wal-archive", Inner::background_archiver)?);
        }
        Ok((wal, report))
    }

    /// Starts one of the log's threads. Dropping the log stops and joins it.
    fn spawn(&self, name: &str, work: fn(&Inner<S>)) -> Result<std::thread::JoinHandle<()>, Error> {
        let worker = Arc::clone(&self.inner);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || work(&worker))
            .map_err(|e| Error::io("start a thread of the log", &self.inner.dir, e))
    }

    /// Appends `payload` to `stream` and returns its LSN once it is as
    /// durable as `mode` asks.
    pub fn append(&self, stream: u64, payload: &[u8], mode: SyncMode) -> Result<Lsn, Error> {
        self.inner.check_poison()?;
        if self.inner.pressure() == Pressure::Hard {
            // Hard watermark: wait until a sync has drained the queue.
            self.inner.request_sync();
            self.inner.wait_durable(self.last_lsn())?;
        }
        let lsn = self.inner.append_record(stream, payload, 0)?;
        if mode == SyncMode::Data {
            self.inner.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Like [`Wal::append`] but never blocks for backpressure: above the
    /// hard watermark it fails with [`Error::WouldBlock`] (the record is
    /// not written). With [`SyncMode::Data`] it still waits for the sync.
    pub fn try_append(&self, stream: u64, payload: &[u8], mode: SyncMode) -> Result<Lsn, Error> {
        self.inner.check_poison()?;
        if self.inner.pressure() == Pressure::Hard {
            self.inner.request_sync();
            return Err(Error::WouldBlock {
                unsynced_bytes: self.inner.unsynced_bytes(),
            });
        }
        let lsn = self.inner.append_record(stream, payload, 0)?;
        if mode == SyncMode::Data {
            self.inner.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Appends without blocking the calling thread: the record is copied in
    /// now (a few microseconds), and the returned future resolves once it
    /// is as durable as `mode` asks, the sync being done by the log's sync
    /// thread. For use from tasks of a cooperative scheduler. Above the hard
    /// watermark the record is still written (the future then waits for the
    /// sync that drains the queue).
    pub fn append_async(&self, stream: u64, payload: &[u8], mode: SyncMode) -> Durable<'_, S> {
        let result = self
            .inner
            .check_poison()
            .and_then(|()| self.inner.append_record(stream, payload, 0));
        let wait = match (&result, mode) {
            (Ok(_), SyncMode::Data) => true,
            (Ok(_), _) => self.inner.pressure() == Pressure::Hard,
            (Err(_), _) => false,
        };
        Durable {
            inner: &self.inner,
            result: Some(result),
            wait,
        }
    }

    /// A future that resolves once every record up to `lsn` is durable: for
    /// a caller that appended with [`SyncMode::Buffer`] (for example under
    /// its own lock) and waits for durability afterwards.
    pub fn durable(&self, lsn: Lsn) -> Durable<'_, S> {
        Durable {
            inner: &self.inner,
            result: Some(Ok(lsn)),
            wait: true,
        }
    }

    /// The current backpressure level.
    pub fn pressure(&self) -> Pressure {
        self.inner.pressure()
    }

    /// Bytes appended but not yet covered by a sync.
    pub fn unsynced_bytes(&self) -> u64 {
        self.inner.unsynced_bytes()
    }

    /// A channel that receives every crossing of a watermark, for an
    /// overload controller. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> mpsc::Receiver<PressureEvent> {
        let (tx, rx) = mpsc::channel();
        if let Ok(mut subs) = self.inner.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    /// Appends several records to one stream with one wait for durability;
    /// returns the LSN of the last.
    pub fn append_batch<'a>(
        &self,
        stream: u64,
        payloads: impl IntoIterator<Item = &'a [u8]>,
        mode: SyncMode,
    ) -> Result<Option<Lsn>, Error> {
        self.inner.check_poison()?;
        let mut last = None;
        {
            for payload in payloads {
                last = Some(self.inner.append_record(stream, payload, 0)?);
            }
        }
        if let (Some(lsn), SyncMode::Data) = (last, mode) {
            self.inner.wait_durable(lsn)?;
        }
        Ok(last)
    }

    /// Makes every record appended so far durable.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.check_poison()?;
        let target = Lsn(self.inner.written.load(Ordering::Acquire));
        self.inner.wait_durable(target)
    }

    /// The LSN of the last record appended (0 when the log is empty).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.inner.written.load(Ordering::Acquire))
    }

    /// The highest LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.inner.durable.load(Ordering::Acquire))
    }

    /// Records a checkpoint: the caller's state up to `lsn` is saved under
    /// `snapshot_ref`. Durable when this returns. Segments holding only
    /// records up to `lsn` become reusable.
    pub fn checkpoint(&self, lsn: Lsn, snapshot_ref: &[u8]) -> Result<Lsn, Error> {
        self.inner.check_poison()?;
        let first = self.first_lsn()?;
        // Records after `lsn` must still be here for a replay from it.
        if lsn > self.last_lsn() || lsn.0 + 1 < first.0 {
            return Err(Error::OutOfRange {
                requested: lsn,
                first,
                last: self.last_lsn(),
            });
        }
        let mut payload = Vec::with_capacity(8 + snapshot_ref.len());
        payload.extend_from_slice(&lsn.0.to_le_bytes());
        payload.extend_from_slice(snapshot_ref);
        let record = self.inner.append_record(0, &payload, FLAG_CHECKPOINT)?;
        self.inner.wait_durable(record)?;
        let mut writer = self.inner.writer()?;
        // The checkpoint record itself follows `lsn`, so `lsn + 1` is held
        // (unless a concurrent checkpoint freed it meanwhile: keep all).
        let keep_from = writer.segment_index_of(Lsn(lsn.0 + 1)).unwrap_or(0);
        let oldest_seq = writer.segments.get(keep_from).map_or(0, |s| s.seq);
        let file = CheckpointFile {
            lsn,
            record_lsn: record,
            segment_seq: oldest_seq,
            snapshot_ref: snapshot_ref.to_vec(),
        };
        self.inner
            .storage
            .write_atomic(&self.inner.dir, CHECKPOINT_NAME, &file.encode())
            .map_err(|e| Error::io("write checkpoint", self.inner.dir.join(CHECKPOINT_NAME), e))?;
        let checkpoint = Checkpoint {
            lsn,
            snapshot_ref: snapshot_ref.to_vec(),
        };
        writer.checkpoint = Some((checkpoint, oldest_seq));
        for _ in 0..keep_from {
            if let Some(segment) = writer.segments.pop_front() {
                match segment.place {
                    Place::Slot { slot, file } => writer.free.push((slot, file)),
                    Place::Archive(archived) => writer.doomed.push(archived),
                }
            }
        }
        let removable = writer.take_removable();
        drop(writer);
        self.inner.remove_archives(removable);
        Ok(record)
    }

    /// Archives every sealed segment still in a slot, now, on the calling
    /// thread, and returns how many it archived (none when
    /// [`WalConfig::compression`] is off). With [`Archiver::Thread`] the
    /// log's thread does this after every rotation: this call waits for a
    /// pass under way and archives what is left, so when it returns every
    /// segment sealed before the call is archived. A failure leaves the
    /// segment in its slot (nothing is lost) and is returned; the log stays
    /// usable.
    pub fn archive(&self) -> Result<usize, Error> {
        if self.inner._lock.is_none() {
            return Err(Error::ReadOnly);
        }
        self.inner.archive_pass(false)
    }

    /// The newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, Error> {
        Ok(self
            .inner
            .writer()?
            .checkpoint
            .as_ref()
            .map(|(c, _)| c.clone()))
    }

    /// The first LSN the log still holds.
    pub fn first_lsn(&self) -> Result<Lsn, Error> {
        Ok(self
            .inner
            .writer()?
            .segments
            .front()
            .map_or(Lsn(1), |s| s.first_lsn))
    }

    /// What each live segment holds, oldest first.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, Error> {
        let writer = self.inner.writer()?;
        let count = writer.segments.len();
        Ok(writer
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (slot, size) = match &s.place {
                    Place::Slot { slot, file } => (Some(*slot), file.len()),
                    Place::Archive(archived) => (None, archived.file_len),
                };
                SegmentInfo {
                    slot,
                    seq: s.seq,
                    first_lsn: s.first_lsn,
                    last_lsn: s.last_lsn,
                    used_bytes: s.end,
                    size,
                    sealed: i + 1 < count,
                    archived: slot.is_none(),
                }
            })
            .collect())
    }

    /// Number of slot files waiting to be reused (including the slots of
    /// archived segments).
    pub fn free_slots(&self) -> Result<usize, Error> {
        Ok(self.inner.writer()?.free.len())
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Iterates the records with LSNs in `range` (checkpoint records
    /// included; see [`Record::is_checkpoint`]), checking each checksum.
    /// Records appended after this call are not included.
    pub fn replay(&self, range: impl RangeBounds<Lsn>) -> Result<Replay<S>, Error> {
        let writer = self.inner.writer()?;
        let first = writer.segments.front().map_or(Lsn(1), |s| s.first_lsn);
        let last = Lsn(writer.next_lsn - 1);
        let from = match range.start_bound() {
            Bound::Included(l) => *l,
            Bound::Excluded(l) => Lsn(l.0 + 1),
            Bound::Unbounded => first,
        };
        let to = match range.end_bound() {
            Bound::Included(l) => Lsn(l.0.saturating_add(1)),
            Bound::Excluded(l) => *l,
            Bound::Unbounded => Lsn(last.0 + 1),
        };
        if from < first && from < to {
            return Err(Error::OutOfRange {
                requested: from,
                first,
                last,
            });
        }
        let segments = writer
            .segments
            .iter()
            .filter(|s| s.last_lsn >= from && s.first_lsn < to)
            .cloned()
            .collect();
        Ok(Replay {
            storage: Arc::clone(&self.inner.storage),
            dir: self.inner.dir.clone(),
            segments,
            current: None,
            from,
            to,
            stream: None,
            done: false,
        })
    }
}

impl<S: Storage> Drop for Wal<S> {
    #[allow(clippy::disallowed_methods)] // joining our own threads
    fn drop(&mut self) {
        if let Ok(mut bg) = self.inner.background.lock() {
            bg.stop = true;
            self.inner.background_wake.notify_one();
            self.inner.archive_wake.notify_one();
        }
        for thread in [self.syncer.take(), self.archiver.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

/// Future returned by [`Wal::append_async`]: resolves to the record's LSN
/// once it is as durable as asked (or to the error of the append or of the
/// sync).
#[must_use = "the record is written, but its durability is only known by awaiting this"]
pub struct Durable<'a, S: Storage> {
    inner: &'a Arc<Inner<S>>,
    result: Option<Result<Lsn, Error>>,
    wait: bool,
}

impl<S: Storage> Future for Durable<'_, S> {
    type Output = Result<Lsn, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let lsn = match &self.result {
            Some(Ok(lsn)) => *lsn,
            Some(Err(_)) | None => {
                return Poll::Ready(self.result.take().unwrap_or(Err(Error::ReadOnly)));
            }
        };
        if !self.wait || self.inner.durable.load(Ordering::Acquire) >= lsn.0 {
            return Poll::Ready(Ok(lsn));
        }
        if let Err(e) = self.inner.check_poison() {
            return Poll::Ready(Err(e));
        }
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            match waiters.iter_mut().find(|(l, _)| *l == lsn.0) {
                Some((_, w)) if w.will_wake(cx.waker()) => {}
                Some((_, w)) => *w = cx.waker().clone(),
                None => waiters.push((lsn.0, cx.waker().clone())),
            }
        }
        self.inner.request_sync();
        // The sync may have finished between the check and the registration.
        if self.inner.durable.load(Ordering::Acquire) >= lsn.0 {
            return Poll::Ready(Ok(lsn));
        }
        Poll::Pending
    }
}

impl<S: Storage> fmt::Debug for Durable<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable").field("wait", &self.wait).finish()
    }
}

fn poisoned_lock() -> Error {
    Error::Poisoned {
        cause: "a thread panicked while syncing".to_owned(),
    }
}

impl<S: Storage> Inner<S> {
    fn writer(&self) -> Result<MutexGuard<'_, Writer<S>>, Error> {
        self.write.lock().map_err(|_| Error::Poisoned {
            cause: "a thread panicked while appending".to_owned(),
        })
    }

    fn check_poison(&self) -> Result<(), Error> {
        if self._lock.is_none() {
            return Err(Error::ReadOnly);
        }
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self
            .poison
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        Err(Error::Poisoned { cause })
    }

    /// Group commit: returns once `lsn` is durable, running a sync round
    /// when none is running, or waiting for the running one. Blocks the
    /// calling thread by design (this is the blocking API).
    #[allow(clippy::disallowed_methods)]
    fn wait_durable(&self, lsn: Lsn) -> Result<(), Error> {
        loop {
            if self.durable.load(Ordering::Acquire) >= lsn.0 {
                return Ok(());
            }
            self.check_poison()?;
            let mut round = self.sync.lock().map_err(|_| poisoned_lock())?;
            if self.durable.load(Ordering::Acquire) >= lsn.0 {
                return Ok(());
            }
            if round.running {
                let me = std::thread::current();
                if !round.waiting.iter().any(|(_, t)| t.id() == me.id()) {
                    round.waiting.push((lsn.0, me));
                }
                drop(round);
                // Woken when a round covers us, to lead the next round, or
                // on poison; a spurious wake-up just loops.
                std::thread::park();
                continue;
            }
            round.running = true;
            drop(round);
            let result = self.sync_round();
            let mut round = self.sync.lock().map_err(|_| poisoned_lock())?;
            round.running = false;
            let durable = self.durable.load(Ordering::Acquire);
            let poisoned = self.poisoned.load(Ordering::Acquire);
            round.waiting.retain(|(waiting_for, thread)| {
                let done = poisoned || *waiting_for <= durable;
                if done {
                    thread.unpark();
                }
                !done
            });
            // The records appended during this round need the next one:
            // hand it to the longest waiter.
            let oldest = round
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, (l, _))| *l)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                let (_, leader) = round.waiting.swap_remove(i);
                leader.unpark();
            }
            drop(round);
            result?;
        }
    }

    /// One sync round: syncs the active segment up to the current written
    /// LSN and publishes it as durable; poisons the log on failure.
    fn sync_round(&self) -> Result<(), Error> {
        let inner = self;
        let (target, target_bytes, file, slot) = {
            let writer = self.writer()?;
            let Some((slot, file)) = writer.segments.back().and_then(|s| s.place.slot()) else {
                return Ok(());
            };
            (
                inner.written.load(Ordering::Acquire),
                inner.written_bytes.load(Ordering::Acquire),
                Arc::clone(file),
                slot,
            )
        };
        match file.sync_data() {
            Ok(()) => {
                inner.durable.fetch_max(target, Ordering::AcqRel);
                inner
                    .durable_bytes
                    .fetch_max(target_bytes, Ordering::AcqRel);
                inner.update_pressure();
                inner.wake_waiters();
                Ok(())
            }
            Err(e) => Err(inner.poison(format!(
                "fdatasync of {}: {e}",
                inner.dir.join(slot_name(slot)).display()
            ))),
        }
    }

    /// Copies one record in and publishes it as written.
    fn append_record(&self, stream: u64, payload: &[u8], flags: u16) -> Result<Lsn, Error> {
        let lsn = {
            let mut writer = self.writer()?;
            let lsn = writer.append(self, stream, payload, flags)?;
            // Published under the lock, so `written` and `written_bytes`
            // always describe the same prefix of the log.
            self.written.store(lsn.0, Ordering::Release);
            self.written_bytes
                .fetch_add(frame_size(payload.len()) as u64, Ordering::AcqRel);
            lsn
        };
        self.update_pressure();
        if self.pressure() >= Pressure::Soft {
            self.request_sync();
        }
        Ok(lsn)
    }

    fn unsynced_bytes(&self) -> u64 {
        self.written_bytes
            .load(Ordering::Acquire)
            .saturating_sub(self.durable_bytes.load(Ordering::Acquire))
    }

    fn pressure(&self) -> Pressure {
        match self.pressure.load(Ordering::Acquire) {
            0 => Pressure::Normal,
            1 => Pressure::Soft,
            _ => Pressure::Hard,
        }
    }

    /// Recomputes the pressure level and tells subscribers when it changed.
    fn update_pressure(&self) {
        let unsynced = self.unsynced_bytes();
        let level = if unsynced >= self.config.hard_watermark {
            Pressure::Hard
        } else if unsynced >= self.config.soft_watermark {
            Pressure::Soft
        } else {
            Pressure::Normal
        };
        let previous = self.pressure.swap(level as u8, Ordering::AcqRel);
        if previous != level as u8 {
            let event = PressureEvent {
                pressure: level,
                unsynced_bytes: unsynced,
            };
            if let Ok(mut subs) = self.subscribers.lock() {
                subs.retain(|tx| tx.send(event).is_ok());
            }
        }
    }

    /// Asks the background syncer for a round.
    fn request_sync(&self) {
        if let Ok(mut bg) = self.background.lock() {
            bg.requested = true;
            self.background_wake.notify_one();
        }
    }

    /// Wakes async appenders whose records are now durable.
    fn wake_waiters(&self) {
        let durable = self.durable.load(Ordering::Acquire);
        let poisoned = self.poisoned.load(Ordering::Acquire);
        let ready: Vec<Waker> = match self.waiters.lock() {
            Ok(mut waiters) => {
                let mut ready = Vec::new();
                waiters.retain(|(lsn, waker)| {
                    if poisoned || *lsn <= durable {
                        ready.push(waker.clone());
                        false
                    } else {
                        true
                    }
                });
                ready
            }
            Err(_) => Vec::new(),
        };
        for waker in ready {
            waker.wake();
        }
    }

    /// The sync thread: runs a sync round whenever asked (async appenders
    /// waiting, the soft watermark crossed), until the log is dropped.
    fn background_syncer(&self) {
        while self.wait_for(&self.background_wake, |bg| &mut bg.requested) {
            let target = Lsn(self.written.load(Ordering::Acquire));
            // Errors poison the log and wake every waiter; nothing to add.
            let _ = self.wait_durable(target);
            self.wake_waiters();
        }
    }

    /// For a thread of the log: waits on `wake` until the request `flag`
    /// picks is set, and clears it; `false` once the log is dropped.
    #[allow(clippy::disallowed_methods)] // its own thread; waiting is its job
    fn wait_for(&self, wake: &Condvar, flag: fn(&mut Background) -> &mut bool) -> bool {
        let Ok(mut bg) = self.background.lock() else {
            return false;
        };
        while !*flag(&mut bg) && !bg.stop {
            bg = match wake.wait(bg) {
                Ok(bg) => bg,
                Err(_) => return false,
            };
        }
        !bg.stop && std::mem::take(flag(&mut bg))
    }

    /// Asks the archiver thread (if any) for a pass.
    fn request_archive(&self) {
        if let Ok(mut bg) = self.background.lock() {
            bg.archive = true;
            self.archive_wake.notify_one();
        }
    }

    /// Whether the log is being dropped.
    fn stopping(&self) -> bool {
        self.background.lock().map_or(true, |bg| bg.stop)
    }

    /// The archiver thread: an archiving pass after every rotation, until
    /// the log is dropped.
    fn background_archiver(&self) {
        while self.wait_for(&self.archive_wake, |bg| &mut bg.archive) {
            if let Err(e) = self.archive_pass(true) {
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "archiving a sealed segment failed; it stays in its slot until the next rotation retries"
                );
            }
        }
    }

    /// Archives the sealed segments still in slots, oldest first, stopping
    /// at the first failure (archives stay a prefix of the log) and, for
    /// the thread, when the log is dropped. Then removes the doomed
    /// archives no replay holds any more.
    fn archive_pass(&self, thread: bool) -> Result<usize, Error> {
        if self.config.compression == Compression::None {
            return Ok(0);
        }
        let _pass = self.archiving.lock().map_err(|_| poisoned_lock())?;
        let mut done = 0;
        while !(thread && self.stopping()) {
            let Some(job) = self.writer()?.next_to_archive() else {
                break;
            };
            self.archive_one(job)?;
            done += 1;
        }
        let removable = self.writer()?.take_removable();
        self.remove_archives(removable);
        Ok(done)
    }

    /// Compresses one sealed segment into its archive (outside the append
    /// lock), then moves the segment there and frees its slot.
    fn archive_one(&self, job: Segment<S>) -> Result<(), Error> {
        let Some((slot, file)) = job.place.slot() else {
            return Ok(());
        };
        let path = self.dir.join(slot_name(slot));
        let view = file
            .view()
            .map_err(|e| Error::io("map segment", &path, e))?;
        let end = usize::try_from(job.end).unwrap_or(usize::MAX);
        let raw = (*view).as_ref().get(..end).ok_or(Error::Corrupt {
            file: path,
            offset: job.end,
            last_good: job.last_lsn,
            reason: "a sealed segment is shorter than its records",
        })?;
        let lsns = (job.first_lsn, job.last_lsn);
        let archived = Arc::new(archive::write(
            &*self.storage,
            &self.dir,
            job.seq,
            lsns,
            raw,
        )?);
        drop(view);
        // Our hold on the slot file goes before the slot can be reused.
        drop(job);
        let mut guard = self.writer()?;
        let writer = &mut *guard;
        match writer.segments.iter_mut().find(|s| s.seq == archived.seq) {
            Some(segment) => {
                if let Place::Slot { slot, file } =
                    std::mem::replace(&mut segment.place, Place::Archive(archived))
                {
                    writer.free.push((slot, file));
                }
            }
            // A checkpoint let the segment go meanwhile (its slot is free
            // already): the archive is not needed.
            None => writer.doomed.push(archived),
        }
        Ok(())
    }

    /// Removes archives nobody holds. Not synced: an archive a crash brings
    /// back lies before the checkpoint, and recovery removes it again.
    fn remove_archives(&self, archives: Vec<Arc<Archived>>) {
        for archived in archives {
            let path = self.dir.join(archived.name());
            match self.storage.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "removing an archive before the checkpoint failed; the next open retries"
                ),
            }
        }
    }

    fn poison(&self, cause: String) -> Error {
        tracing::error!(dir = %self.dir.display(), %cause, "write-ahead log poisoned");
        if let Ok(mut p) = self.poison.lock() {
            p.get_or_insert_with(|| cause.clone());
        }
        self.poisoned.store(true, Ordering::Release);
        if let Ok(mut round) = self.sync.lock() {
            for (_, thread) in round.waiting.drain(..) {
                thread.unpark();
            }
        }
        self.wake_waiters();
        Error::Poisoned { cause }
    }
}

impl<S: Storage> Writer<S> {
    fn active(&mut self) -> Result<&mut Segment<S>, Error> {
        self.segments
            .back_mut()
            .ok_or(Error::Config("the log has no active segment"))
    }

    /// A copy of the oldest sealed segment still in a slot, to archive.
    fn next_to_archive(&self) -> Option<Segment<S>> {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .take(sealed)
            .find(|s| s.place.slot().is_some())
            .cloned()
    }

    /// Takes the doomed archives no replay holds any more.
    fn take_removable(&mut self) -> Vec<Arc<Archived>> {
        let (free, held) = std::mem::take(&mut self.doomed)
            .into_iter()
            .partition(|a| Arc::strong_count(a) == 1);
        self.doomed = held;
        free
    }

    /// Index in `segments` of the segment holding `lsn`.
    fn segment_index_of(&self, lsn: Lsn) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| s.first_lsn <= lsn && lsn <= s.last_lsn)
    }

    /// Copies one record into the active segment, rotating first when it
    /// does not fit. Returns its LSN.
    fn append(
        &mut self,
        inner: &Inner<S>,
        stream: u64,
        payload: &[u8],
        flags: u16,
    ) -> Result<Lsn, Error> {
        let size = frame_size(payload.len()) as u64;
        let segment_size = inner.config.segment_size;
        // Room for the record and, after it, a seal.
        let room = segment_size - HEADER_BLOCK - frame_size(0) as u64;
        if size > room {
            return Err(Error::TooLarge {
                len: payload.len(),
                segment_size,
            });
        }
        if self.active()?.end + size + frame_size(0) as u64 > segment_size {
            self.rotate(inner)?;
        }
        let lsn = Lsn(self.next_lsn);
        self.write_frame(inner, stream, payload, flags, lsn)?;
        self.next_lsn += 1;
        Ok(lsn)
    }

    fn write_frame(
        &mut self,
        inner: &Inner<S>,
        stream: u64,
        payload: &[u8],
        flags: u16,
        lsn: Lsn,
    ) -> Result<(), Error> {
        let size = frame_size(payload.len());
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(size, 0);
        let active = self.active()?;
        let header = FrameHeader {
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            lsn,
            stream,
            seq32: active.seq as u32,
            flags,
            synced: Lsn(inner.durable.load(Ordering::Acquire)),
        };
        format::encode_frame(&mut buf, &header, payload);
        let Some((slot, file)) = active.place.slot() else {
            return Err(Error::Config("the active segment is not in a slot"));
        };
        let result = file.write_at(active.end, &buf);
        if result.is_ok() {
            active.marks.note(lsn, active.end);
            active.end += size as u64;
            active.last_lsn = lsn;
        }
        self.buf = buf;
        result.map_err(|e| {
            inner.poison(format!(
                "write to {}: {e}",
                inner.dir.join(slot_name(slot)).display()
            ))
        })
    }

    /// Seals the active segment (a seal record, then a sync) and opens the
    /// next one in a free slot or a new slot file.
    fn rotate(&mut self, inner: &Inner<S>) -> Result<(), Error> {
        let seal = Lsn(self.next_lsn);
        self.write_frame(inner, 0, &[], FLAG_SEAL, seal)?;
        self.next_lsn += 1;
        inner.written.store(seal.0, Ordering::Release);
        let (slot, file) = {
            let active = self.active()?;
            let (slot, file) = active
                .place
                .slot()
                .ok_or(Error::Config("the active segment is not in a slot"))?;
            (slot, Arc::clone(file))
        };
        file.sync_data().map_err(|e| {
            inner.poison(format!(
                "fdatasync of {}: {e}",
                inner.dir.join(slot_name(slot)).display()
            ))
        })?;
        inner.durable.fetch_max(seal.0, Ordering::AcqRel);
        // Everything appended so far (we hold the append lock) was in the
        // segment just synced.
        inner.durable_bytes.fetch_max(
            inner.written_bytes.load(Ordering::Acquire),
            Ordering::AcqRel,
        );
        // The active segment is sealed now: failing to open the next one
        // leaves nowhere to append, so the handle is done (reopening
        // recovers and opens a fresh segment).
        let segment = self
            .start_segment(&inner.storage, &inner.dir, inner.config.segment_size)
            .map_err(|e| inner.poison(format!("opening the next segment failed: {e}")))?;
        self.segments.push_back(segment);
        if inner.config.compression != Compression::None {
            inner.request_archive();
        }
        Ok(())
    }

    /// A fresh segment: a recycled slot no reader holds, else a new slot
    /// file; its header written and synced before any record goes in.
    fn start_segment(
        &mut self,
        storage: &S,
        dir: &Path,
        segment_size: u64,
    ) -> Result<Segment<S>, Error> {
        let reusable = self
            .free
            .iter()
            .position(|(_, f)| Arc::strong_count(f) == 1);
        let (slot, file) = match reusable.map(|i| self.free.swap_remove(i)) {
            Some((slot, file)) if file.len() == segment_size => (slot, file),
            // A reclaimed short file (an interrupted creation), or a new
            // slot: a file of the segment size, its entry made durable.
            reclaimed => {
                let slot = reclaimed.map_or(self.slots, |(slot, _)| slot);
                let path = dir.join(slot_name(slot));
                let file = storage
                    .create(&path, segment_size)
                    .map_err(|e| Error::io("create segment", &path, e))?;
                storage
                    .sync_dir(dir)
                    .map_err(|e| Error::io("sync directory", dir, e))?;
                self.slots = self.slots.max(slot + 1);
                (slot, Arc::new(file))
            }
        };
        let header = SegmentHeader {
            seq: self.next_seq,
            first_lsn: Lsn(self.next_lsn),
            segment_size,
            created_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            slot,
            flags: 0,
        };
        let path = dir.join(slot_name(slot));
        file.write_at(0, &header.encode())
            .map_err(|e| Error::io("write segment header", &path, e))?;
        file.sync_data()
            .map_err(|e| Error::io("sync segment", &path, e))?;
        let segment = Segment {
            seq: self.next_seq,
            first_lsn: Lsn(self.next_lsn),
            place: Place::Slot { slot, file },
            end: HEADER_BLOCK,
            last_lsn: Lsn(self.next_lsn - 1),
            marks: Marks::default(),
        };
        self.next_seq += 1;
        Ok(segment)
    }
}

/// One slot found on disk while recovering.
struct Found<S: Storage> {
    slot: u32,
    header: SegmentHeader,
    file: S::File,
    /// Whether any of the file was in memory before recovery read it
    /// (`None`: not known).
    cached: Option<bool>,
}

/// A segment found on disk: in a slot, in an archive, or both (an archived
/// segment whose slot has not been reused yet; the archive is its home).
struct Candidate<S: Storage> {
    seq: u64,
    slot: Option<Found<S>>,
    archived: bool,
}

/// Reads the directory and rebuilds the writer: see `docs/wal-format.md`,
/// "Recovery".
fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &WalConfig,
    read_only: bool,
) -> Result<(Writer<S>, RecoveryReport), Error> {
    let mut report = RecoveryReport::default();
    let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut found: Vec<Found<S>> = Vec::new();
    // Slots with our magic but a header failing its checksum.
    let mut damaged: Vec<(u32, S::File)> = Vec::new();
    let mut free = Vec::new();
    let mut slots = 0;
    let mut archives = Vec::new();
    for name in &names {
        match archive::parse_archive(name) {
            Some(ArchiveEntry::Final(seq)) => archives.push(seq),
            // An archive a crash interrupted: its segment is still in its
            // slot, which was never freed.
            Some(ArchiveEntry::Temp) if !read_only => {
                let path = dir.join(name);
                storage
                    .remove(&path)
                    .map_err(|e| Error::io("remove an unfinished archive", &path, e))?;
            }
            Some(ArchiveEntry::Temp) | None => {}
        }
        let Some(slot) = parse_slot(name) else {
            continue;
        };
        slots = slots.max(slot + 1);
        let path = dir.join(name);
        let file = storage
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        // Before the header read below pulls pages in (and reads ahead).
        // Not knowing only costs a re-sync of the unvouched tail.
        let cached = if read_only {
            None
        } else {
            file.in_page_cache().unwrap_or(None)
        };
        let mut head = [0u8; HEADER_LEN];
        let n = usize::try_from(file.len())
            .unwrap_or(usize::MAX)
            .min(HEADER_LEN);
        if let Some(buf) = head.get_mut(..n) {
            file.read_at(0, buf)
                .map_err(|e| Error::io("read segment header", &path, e))?;
        }
        match SegmentHeader::decode(&head) {
            Ok(header) if header.segment_size == file.len() => found.push(Found {
                slot,
                header,
                file,
                cached,
            }),
            Ok(header) => {
                return Err(Error::Corrupt {
                    file: path,
                    offset: 0,
                    last_good: Lsn(header.first_lsn.0 - 1),
                    reason: "a segment file is not the length its header gives",
                });
            }
            Err(HeaderError::Version(found)) => {
                return Err(Error::UnsupportedVersion {
                    path,
                    found,
                    supported: format::FORMAT_VERSION,
                });
            }
            Err(HeaderError::Corrupt) => damaged.push((slot, file)),
            Err(HeaderError::Foreign | HeaderError::Short | HeaderError::Codec(_))
                if head.iter().all(|&b| b == 0) =>
            {
                // Empty or zero-filled: a slot file created by a rotation
                // that crashed before its header was written.
                report.reclaimed_slots.push(slot);
                free.push((slot, Arc::new(file)));
            }
            Err(HeaderError::Foreign | HeaderError::Short | HeaderError::Codec(_)) => {
                return Err(Error::Foreign { path });
            }
        }
    }
    if !read_only && !archives.is_empty() {
        // An archive's name may not be durable yet (the process that wrote
        // it died before syncing the directory): make it so before its slot
        // is reused.
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    found.sort_by_key(|f| f.header.seq);
    for pair in found.windows(2) {
        if let [a, b] = pair {
            if a.header.seq == b.header.seq {
                return Err(Error::Corrupt {
                    file: dir.join(slot_name(b.slot)),
                    offset: 0,
                    last_good: Lsn(b.header.first_lsn.0.saturating_sub(1)),
                    reason: "two slots hold the same segment (a copied or misplaced slot file)",
                });
            }
        }
    }
    let checkpoint = storage
        .read_all(&dir.join(CHECKPOINT_NAME))
        .ok()
        .and_then(|b| CheckpointFile::decode(&b));
    let mut candidates = candidates(
        found,
        archives,
        checkpoint.as_ref(),
        storage,
        dir,
        read_only,
    )?;
    // Live segments: the newest run of consecutive sequence numbers, from
    // the checkpoint's oldest needed segment on. Older slots are free.
    let mut live_from = candidates.len();
    while live_from > 0 {
        let prev = candidates.get(live_from - 1).map(|c| c.seq);
        let here = candidates.get(live_from).map(|c| c.seq);
        match (prev, here) {
            (Some(p), Some(h)) if p + 1 != h => break,
            _ => live_from -= 1,
        }
        if let (Some(ckpt), Some(c)) = (&checkpoint, candidates.get(live_from)) {
            if c.seq <= ckpt.segment_seq {
                break;
            }
        }
    }
    let live: Vec<Candidate<S>> = candidates.split_off(live_from);
    for old in candidates {
        if let Some(f) = old.slot {
            free.push((f.slot, Arc::new(f.file)));
        }
        if old.archived {
            tracing::warn!(
                path = %dir.join(archive::archive_name(old.seq)).display(),
                "an archive older than a gap in the log is not read"
            );
        }
    }
    if let (Some(ckpt), Some(first)) = (&checkpoint, live.first()) {
        if first.seq > ckpt.segment_seq {
            // The segments the checkpoint needs are gone.
            return Err(Error::Corrupt {
                file: candidate_path(dir, first),
                offset: 0,
                last_good: ckpt.lsn,
                reason: "the segments after the newest checkpoint are missing",
            });
        }
    }
    let mut segments = VecDeque::new();
    let mut expected: Option<Lsn> = None;
    let count = live.len();
    let mut sealed = false;
    // Where the last segment's unvouched records start, and which of its
    // pages were in memory before recovery.
    let mut unvouched = None;
    let after = checkpoint.as_ref().map_or(Lsn(0), |c| c.lsn);
    for (i, c) in live.into_iter().enumerate() {
        let last_good = expected.map_or(Lsn(0), |e| Lsn(e.0 - 1));
        let (segment, scanned, freed) = match (c.archived, c.slot) {
            (true, slot) => {
                let (archived, raw) = archive::load(storage, dir, c.seq, last_good)?;
                let target = ScanTarget::<S> {
                    bytes: &raw,
                    path: dir.join(archived.name()),
                    seq: c.seq,
                    first_lsn: archived.first_lsn,
                    tail: None,
                };
                let mut scanned =
                    scan_checked(&target, expected, config, after, read_only, &mut report)?;
                let whole =
                    scanned.end == archived.raw_len && scanned.last_lsn == archived.last_lsn;
                if !scanned.sealed || !whole {
                    return Err(Error::Corrupt {
                        file: target.path,
                        offset: scanned.end,
                        last_good: scanned.last_lsn,
                        reason: "an archive does not end with its segment's seal",
                    });
                }
                let segment = Segment {
                    seq: c.seq,
                    first_lsn: archived.first_lsn,
                    place: Place::Archive(Arc::new(archived)),
                    end: scanned.end,
                    last_lsn: scanned.last_lsn,
                    marks: std::mem::take(&mut scanned.marks),
                };
                // The archive is the segment's home: its slot is free.
                (segment, scanned, slot.map(|f| (f.slot, Arc::new(f.file))))
            }
            (false, Some(f)) => {
                let path = dir.join(slot_name(f.slot));
                let view = f
                    .file
                    .view()
                    .map_err(|e| Error::io("map segment", &path, e))?;
                let target = ScanTarget::<S> {
                    bytes: (*view).as_ref(),
                    path,
                    seq: c.seq,
                    first_lsn: f.header.first_lsn,
                    tail: (i + 1 == count).then_some((f.slot, &f.file)),
                };
                let mut scanned =
                    scan_checked(&target, expected, config, after, read_only, &mut report)?;
                drop(view);
                unvouched = scanned.unvouched.map(|from| (from, f.cached));
                let segment = Segment {
                    seq: c.seq,
                    first_lsn: f.header.first_lsn,
                    place: Place::Slot {
                        slot: f.slot,
                        file: Arc::new(f.file),
                    },
                    end: scanned.end,
                    last_lsn: scanned.last_lsn,
                    marks: std::mem::take(&mut scanned.marks),
                };
                (segment, scanned, None)
            }
            (false, None) => continue,
        };
        report.segments_scanned += 1;
        report.tail_bytes += scanned.tail_bytes;
        sealed = scanned.sealed;
        expected = Some(Lsn(segment.last_lsn.0 + 1));
        free.extend(freed);
        segments.push_back(segment);
    }
    let expected = expected.unwrap_or(Lsn(1));
    // A slot whose header fails its checksum is a rotation torn while
    // writing the header, unless records follow the header: then the
    // header of a live segment was damaged.
    for (slot, file) in damaged {
        let mut frame = vec![0u8; 4096];
        let holds_records = file.len() >= HEADER_BLOCK + frame.len() as u64
            && file.read_at(HEADER_BLOCK, &mut frame).is_ok()
            && matches!(format::decode_frame(&frame), Frame::Valid { header, .. } if header.lsn >= expected);
        if holds_records {
            return Err(Error::Corrupt {
                file: dir.join(slot_name(slot)),
                offset: 0,
                last_good: Lsn(expected.0 - 1),
                reason: "the header of a segment holding records is damaged",
            });
        }
        report.reclaimed_slots.push(slot);
        free.push((slot, Arc::new(file)));
    }
    let next_seq = segments.back().map_or(0, |s| s.seq + 1);
    let next_lsn = expected.0;
    if let (false, Some(last), Some((from, cached))) = (read_only, segments.back(), unvouched) {
        resync_unsynced_tail(last, from, cached)?;
    }
    report.first_lsn = segments.front().map_or(Lsn(1), |s| s.first_lsn);
    report.last_lsn = Lsn(next_lsn - 1);
    // Without a readable CHECKPOINT file, the newest checkpoint record in
    // the scanned segments stands in for it.
    let checkpoint = match checkpoint {
        Some(c) => Some(c),
        None => {
            let found = report.newest_checkpoint_record.take();
            report.checkpoint_from_log = found.is_some();
            found.map(|mut c| {
                // Retention must keep what recovery scanned this time.
                c.segment_seq = segments.front().map_or(c.segment_seq, |s| s.seq);
                c
            })
        }
    };
    report.newest_checkpoint_record = None;
    report.checkpoint = checkpoint.as_ref().map(|c| Checkpoint {
        lsn: c.lsn,
        snapshot_ref: c.snapshot_ref.clone(),
    });
    report.tail_over_cap = report.tail_bytes > config.max_tail_bytes;
    let mut writer = Writer {
        segments,
        free,
        doomed: Vec::new(),
        slots,
        next_lsn,
        next_seq,
        checkpoint: checkpoint.map(|c| {
            let seq = c.segment_seq;
            (
                Checkpoint {
                    lsn: c.lsn,
                    snapshot_ref: c.snapshot_ref,
                },
                seq,
            )
        }),
        buf: Vec::new(),
    };
    if !read_only && (writer.segments.is_empty() || sealed) {
        // A new log, or a crash between sealing a segment and opening the
        // next: records go to a fresh segment.
        let segment = writer.start_segment(storage, dir, config.segment_size)?;
        writer.segments.push_back(segment);
    }
    Ok((writer, report))
}

/// The segments found on disk, by sequence number, slots and archives
/// together. Archives wholly before the checkpoint are removed (retention
/// removes them without syncing, so a crash can bring them back).
fn candidates<S: Storage>(
    found: Vec<Found<S>>,
    archives: Vec<u64>,
    checkpoint: Option<&CheckpointFile>,
    storage: &S,
    dir: &Path,
    read_only: bool,
) -> Result<Vec<Candidate<S>>, Error> {
    let mut by_seq: std::collections::BTreeMap<u64, Candidate<S>> = found
        .into_iter()
        .map(|f| {
            let seq = f.header.seq;
            let candidate = Candidate {
                seq,
                slot: Some(f),
                archived: false,
            };
            (seq, candidate)
        })
        .collect();
    for seq in archives {
        if checkpoint.is_some_and(|c| seq < c.segment_seq) {
            if !read_only {
                let path = dir.join(archive::archive_name(seq));
                storage
                    .remove(&path)
                    .map_err(|e| Error::io("remove an archive before the checkpoint", &path, e))?;
            }
            continue;
        }
        by_seq
            .entry(seq)
            .or_insert(Candidate {
                seq,
                slot: None,
                archived: false,
            })
            .archived = true;
    }
    Ok(by_seq.into_values().collect())
}

/// The file holding a candidate, for errors: its archive, else its slot.
fn candidate_path<S: Storage>(dir: &Path, c: &Candidate<S>) -> PathBuf {
    match &c.slot {
        Some(f) if !c.archived => dir.join(slot_name(f.slot)),
        _ => dir.join(archive::archive_name(c.seq)),
    }
}

/// Makes the records of the last segment that no frame vouches for as
/// synced (from offset `from` on) durable before recovery declares them
/// so: they may be page-cache data of the previous process, or pages a
/// failed `fdatasync` marked clean without writing them. They are written
/// again (re-dirtying their pages) and synced. When none of the slot file
/// was in memory before recovery read it (`cached` is `Some(false)`), what
/// recovery read came from the disk and is durable as it is (a cold boot).
fn resync_unsynced_tail<S: Storage>(
    segment: &Segment<S>,
    from: u64,
    cached: Option<bool>,
) -> Result<(), Error> {
    // The last segment is in an archive only when it is sealed: synced.
    let Some((slot, file)) = segment.place.slot() else {
        return Ok(());
    };
    if from >= segment.end || cached == Some(false) {
        return Ok(());
    }
    let path = slot_name(slot);
    let view = file
        .view()
        .map_err(|e| Error::io("map segment", &path, e))?;
    let range = usize::try_from(from).unwrap_or(usize::MAX)
        ..usize::try_from(segment.end).unwrap_or(usize::MAX);
    let tail = (*view).as_ref().get(range).unwrap_or_default().to_vec();
    drop(view);
    file.write_at(from, &tail)
        .map_err(|e| Error::io("rewrite unsynced records", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("sync segment", &path, e))
}

struct Scanned {
    end: u64,
    last_lsn: Lsn,
    /// For the last segment of the log: the offset of its first record
    /// that no record of it vouches for as synced (`None`: all are).
    unvouched: Option<u64>,
    /// Marks of its valid records.
    marks: Marks,
    /// Bytes of records with LSNs after the checkpoint.
    tail_bytes: u64,
    /// The segment ends with its seal.
    sealed: bool,
}

/// The bytes of one segment to scan, from its slot or its archive.
struct ScanTarget<'a, S: Storage> {
    bytes: &'a [u8],
    /// The file they came from, for errors.
    path: PathBuf,
    seq: u64,
    first_lsn: Lsn,
    /// For the last segment of the log: its slot and file, where a torn
    /// tail is cut. `None` for a sealed segment.
    tail: Option<(u32, &'a S::File)>,
}

/// Checks that a segment starts where the previous one (if any) ended,
/// then scans it.
fn scan_checked<S: Storage>(
    target: &ScanTarget<'_, S>,
    expected: Option<Lsn>,
    config: &WalConfig,
    after: Lsn,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<Scanned, Error> {
    if let Some(expected) = expected.filter(|&e| e != target.first_lsn) {
        return Err(Error::Corrupt {
            file: target.path.clone(),
            offset: 0,
            last_good: Lsn(expected.0 - 1),
            reason: "a segment does not start where the previous one ended",
        });
    }
    scan_segment(target, config.recovery, after, read_only, report)
}

/// Checks every frame of one segment. A sealed segment must end with its
/// seal; the last segment ends at its first invalid frame (a torn frame is
/// cut off and reported).
fn scan_segment<S: Storage>(
    target: &ScanTarget<'_, S>,
    mode: RecoveryMode,
    after: Lsn,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<Scanned, Error> {
    let bytes = target.bytes;
    let seq32 = target.seq as u32;
    let mut pos = HEADER_BLOCK as usize;
    let mut last_lsn = Lsn(target.first_lsn.0 - 1);
    let mut tail_bytes = 0;
    let mut unvouched = Unvouched::default();
    let mut marks = Marks::default();
    let corrupt = |pos: usize, last_good: Lsn, reason| Error::Corrupt {
        file: target.path.clone(),
        offset: pos as u64,
        last_good,
        reason,
    };
    let mut head = [0u8; FRAME_HEADER];
    let mut written_to = WrittenTo::default();
    loop {
        let mut rest = bytes.get(pos..).unwrap_or_default();
        let prefix = target
            .tail
            .and_then(|(_, file)| written_to.header_prefix(file, pos));
        if let Some(written) = prefix {
            // The header would run into a hole: decode the zeroes it would
            // read there without touching the hole's page.
            head.fill(0);
            for (to, from) in head.iter_mut().zip(rest.iter().take(written)) {
                *to = *from;
            }
            rest = &head;
        }
        let (header, size) = match format::decode_frame(rest) {
            Frame::Valid { header, size, .. }
                if header.seq32 == seq32 && header.lsn.0 == last_lsn.0 + 1 =>
            {
                (header, size)
            }
            Frame::Valid { header, .. } if header.seq32 == seq32 => {
                return Err(corrupt(pos, last_lsn, "records out of LSN order"));
            }
            frame => {
                // The end of this segment's records.
                let Some((slot, file)) = target.tail else {
                    return Err(corrupt(
                        pos,
                        last_lsn,
                        "a sealed segment ends before its seal",
                    ));
                };
                let ours = matches!(frame, Frame::Invalid) && looks_like_ours(rest, seq32);
                let later = later_records(bytes, pos, seq32, last_lsn, |at| {
                    file.next_data(at as u64)
                        .ok()
                        .map(|r| r.map(|(start, end)| (start as usize, end as usize)))
                        .unwrap_or(Some((at, bytes.len())))
                });
                // A later record that was written after the damaged one had
                // been synced proves the damage hit durable data; otherwise
                // the bytes past `pos` are a crash's torn, never-synced tail.
                let synced_damage = later.synced > last_lsn;
                if synced_damage {
                    if mode == RecoveryMode::AbsoluteConsistency {
                        return Err(corrupt(
                            pos,
                            last_lsn,
                            "a damaged record that had been synced",
                        ));
                    }
                    report.truncated_corruption = Some((
                        TornTail {
                            slot,
                            offset: pos as u64,
                        },
                        "a damaged record that had been synced, and everything after it",
                    ));
                }
                if ours || later.end > pos {
                    if !synced_damage {
                        report.torn_tail = Some(TornTail {
                            slot,
                            offset: pos as u64,
                        });
                    }
                    if !read_only {
                        // Erase up to the end of the last record of ours, so
                        // none of the cut records can come back.
                        erase_range(file, &target.path, pos, later.end.max(pos + FRAME_HEADER))?;
                    }
                }
                return Ok(Scanned {
                    end: pos as u64,
                    last_lsn,
                    unvouched: unvouched.offset(),
                    marks,
                    tail_bytes,
                    sealed: false,
                });
            }
        };
        if header.flags & FLAG_CHECKPOINT != 0 {
            if let Some(found) = decode_checkpoint_record(bytes, pos, header, target.seq) {
                report_checkpoint_record(report, found);
            }
        }
        if target.tail.is_some() {
            unvouched.track(bytes, pos, &header);
        }
        marks.note(header.lsn, pos as u64);
        last_lsn = header.lsn;
        pos += size;
        if header.lsn > after {
            tail_bytes += size as u64;
        }
        if header.flags & FLAG_SEAL != 0 {
            return Ok(Scanned {
                end: pos as u64,
                last_lsn,
                unvouched: unvouched.offset(),
                marks,
                tail_bytes,
                sealed: true,
            });
        }
    }
}

/// The oldest record of a segment that no later record vouches for as
/// synced, tracked while the segment is scanned. A frame's `synced` field
/// only rises, so each frame moves the mark past the records it vouches
/// for, reading only their length fields (their checksums were checked
/// when they were scanned): every frame is passed once.
#[derive(Default)]
struct Unvouched {
    /// Its offset and LSN; `None` when every record so far is vouched for.
    first: Option<(usize, Lsn)>,
}

impl Unvouched {
    /// Takes in the valid frame at `pos` of `bytes`, with `header`.
    fn track(&mut self, bytes: &[u8], pos: usize, header: &FrameHeader) {
        let (mut at, mut lsn) = self.first.unwrap_or((pos, header.lsn));
        while lsn <= header.synced && lsn <= header.lsn {
            let Some(size) = bytes.get(at..).and_then(format::frame_size_at) else {
                break;
            };
            at += size;
            lsn = Lsn(lsn.0 + 1);
        }
        self.first = (lsn <= header.lsn).then_some((at, lsn));
    }

    fn offset(&self) -> Option<u64> {
        self.first.map(|(at, _)| at as u64)
    }
}

/// The checkpoint a checkpoint record at `pos` holds.
fn decode_checkpoint_record(
    bytes: &[u8],
    pos: usize,
    header: FrameHeader,
    seq: u64,
) -> Option<CheckpointFile> {
    let payload = bytes.get(pos + FRAME_HEADER..pos + FRAME_HEADER + header.len as usize)?;
    let lsn = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some(CheckpointFile {
        lsn: Lsn(lsn),
        record_lsn: header.lsn,
        segment_seq: seq,
        snapshot_ref: payload.get(8..)?.to_vec(),
    })
}

/// Keeps the newest checkpoint record seen while scanning.
fn report_checkpoint_record(report: &mut RecoveryReport, found: CheckpointFile) {
    let newer = report
        .newest_checkpoint_record
        .as_ref()
        .is_none_or(|c| c.record_lsn < found.record_lsn);
    if newer {
        report.newest_checkpoint_record = Some(found);
    }
}

/// Whether the frame header at the start of `rest` claims our segment (so
/// invalid bytes there are a torn write, not stale data of an earlier pass
/// of the ring or never-written zeroes).
fn looks_like_ours(rest: &[u8], seq32: u32) -> bool {
    rest.get(24..28)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        == Some(seq32)
}

/// How far the scanned file is known to hold written bytes, so that the
/// scan never reads a frame header from a hole: through the mapping, the
/// first touch of a hole's page has the kernel read around it, zeroes up
/// to the device's readahead size (8 MiB here).
#[derive(Default)]
struct WrittenTo(usize);

impl WrittenTo {
    /// How many bytes of the frame header at `pos` precede a hole, when it
    /// reaches one (`Some(0)`: it starts in one); `None` when it lies in
    /// written bytes or the file system cannot tell. Asks the file system
    /// once per written range, not per frame.
    fn header_prefix<F: StorageFile>(&mut self, file: &F, pos: usize) -> Option<usize> {
        if pos + FRAME_HEADER <= self.0 {
            return None;
        }
        match file.next_data(pos as u64) {
            // Written to the end of the file: nothing left to ask.
            Ok(Some((start, end))) if start <= pos as u64 && end >= file.len() => {
                self.0 = usize::MAX;
                None
            }
            Ok(Some((start, end))) if start <= pos as u64 => {
                self.0 = usize::try_from(end).unwrap_or(usize::MAX);
                (pos + FRAME_HEADER > self.0).then(|| self.0.saturating_sub(pos))
            }
            Ok(_) => Some(0),
            Err(_) => {
                self.0 = usize::MAX;
                None
            }
        }
    }
}

/// Intact records of this segment newer than `last` found after `from`.
struct Later {
    /// End offset of the last such record (`from` when none).
    end: usize,
    /// The highest durable LSN they claim.
    synced: Lsn,
}

/// A block of zeroes to compare the unwritten rest of a slot against.
static ZERO_BLOCK: [u8; 4096] = [0; 4096];

/// Looks for intact records of this segment, newer than `last`, after the
/// damaged or torn frame at `from`.
/// `data_at(offset)` gives the next range at or after `offset` that may
/// hold written bytes (see [`StorageFile::next_data`]): never-written
/// ranges are skipped without being read.
fn later_records(
    bytes: &[u8],
    from: usize,
    seq32: u32,
    last: Lsn,
    mut data_at: impl FnMut(usize) -> Option<(usize, usize)>,
) -> Later {
    let mut later = Later {
        end: from,
        synced: Lsn(0),
    };
    let mut at = from + format::FRAME_ALIGN;
    let mut data_end = at;
    while at + FRAME_HEADER <= bytes.len() {
        if at + FRAME_HEADER > data_end {
            // Every byte of a record was written, so no record starts in a
            // hole or runs from written bytes into one: go to the next
            // written range. Nothing past `data_end` is read before then
            // (touching a hole's page through the mapping would have the
            // kernel read around it, megabytes of zeroes).
            let Some((start, end)) = data_at(at.max(data_end)) else {
                break;
            };
            at = at.max(start / format::FRAME_ALIGN * format::FRAME_ALIGN);
            data_end = end.max(at + format::FRAME_ALIGN);
            continue;
        }
        let Some(rest) = bytes.get(at..data_end) else {
            break;
        };
        // The rest of a slot is mostly zeroes, and no frame starts where
        // its whole header would be zero: skip zero blocks with a memcmp.
        let zeros = ZERO_BLOCK.len().min(rest.len());
        if rest.get(..zeros) == ZERO_BLOCK.get(..zeros) {
            at += ((zeros - FRAME_HEADER) / format::FRAME_ALIGN * format::FRAME_ALIGN)
                .max(format::FRAME_ALIGN);
            continue;
        }
        if looks_like_ours(rest, seq32) {
            if let Frame::Valid { header, size, .. } = format::decode_frame(rest) {
                if header.seq32 == seq32 && header.lsn > last {
                    later.end = at + size;
                    later.synced = later.synced.max(header.synced);
                    at += size;
                    continue;
                }
            }
        }
        at += format::FRAME_ALIGN;
    }
    later
}

/// Zeroes `from..to` and syncs, so the cut survives another crash during
/// recovery.
fn erase_range<F: StorageFile>(file: &F, path: &Path, from: usize, to: usize) -> Result<(), Error> {
    let zeros = vec![0u8; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len());
        file.write_at(at as u64, zeros.get(..n).unwrap_or_default())
            .map_err(|e| Error::io("truncate torn records", path, e))?;
        at += n;
    }
    file.sync_data()
        .map_err(|e| Error::io("sync segment", path, e))
}

/// Iterator over records; see [`Wal::replay`].
pub struct Replay<S: Storage> {
    /// For reading archives.
    storage: Arc<S>,
    dir: PathBuf,
    /// The segments still to read. Holding their slot files or archives
    /// keeps the log from recycling or removing them meanwhile.
    segments: VecDeque<Segment<S>>,
    current: Option<Current<S>>,
    from: Lsn,
    to: Lsn,
    stream: Option<u64>,
    done: bool,
}

struct Current<S: Storage> {
    path: PathBuf,
    seq32: u32,
    bytes: Bytes<<S::File as StorageFile>::View>,
    pos: usize,
    end: usize,
    _hold: Place<S>,
}

/// A segment's bytes: a slot's mapping, or an archive decompressed.
enum Bytes<V> {
    Mapped(Arc<V>),
    Owned(Arc<Vec<u8>>),
}

impl<V: AsRef<[u8]>> Bytes<V> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(view) => (**view).as_ref(),
            Bytes::Owned(raw) => raw,
        }
    }
}

impl<V> Clone for Bytes<V> {
    fn clone(&self) -> Bytes<V> {
        match self {
            Bytes::Mapped(view) => Bytes::Mapped(Arc::clone(view)),
            Bytes::Owned(raw) => Bytes::Owned(Arc::clone(raw)),
        }
    }
}

impl<S: Storage> Replay<S> {
    /// Only records of `stream`.
    pub fn stream(mut self, stream: u64) -> Replay<S> {
        self.stream = Some(stream);
        self
    }

    /// Opens the next segment: maps its slot, or reads and decompresses
    /// its archive.
    fn open(&self, segment: Segment<S>) -> Result<Current<S>, Error> {
        let path = segment.place.path(&self.dir);
        let bytes = match &segment.place {
            Place::Slot { file, .. } => Bytes::Mapped(
                file.view()
                    .map_err(|e| Error::io("map segment", &path, e))?,
            ),
            Place::Archive(archived) => {
                let last_good = Lsn(segment.first_lsn.0 - 1);
                let (_, raw) = archive::load(&*self.storage, &self.dir, archived.seq, last_good)?;
                Bytes::Owned(Arc::new(raw))
            }
        };
        let start = segment.marks.start_for(self.from).unwrap_or(HEADER_BLOCK);
        Ok(Current {
            path,
            seq32: segment.seq as u32,
            bytes,
            pos: usize::try_from(start).unwrap_or(usize::MAX),
            end: usize::try_from(segment.end).unwrap_or(usize::MAX),
            _hold: segment.place,
        })
    }
}

/// One record read back from the log. Holds its segment's bytes: the
/// payload is not copied (from a slot it is borrowed from the mapping;
/// from an archive, from the segment decompressed once for the replay).
pub struct Record<V> {
    bytes: Bytes<V>,
    payload_at: usize,
    len: usize,
    lsn: Lsn,
    stream: u64,
    flags: u16,
}

impl<V: AsRef<[u8]>> Record<V> {
    /// The record's LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The record's stream.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// The payload, borrowed from the segment's bytes.
    pub fn payload(&self) -> &[u8] {
        self.bytes
            .as_slice()
            .get(self.payload_at..self.payload_at + self.len)
            .unwrap_or_default()
    }

    /// Whether this is a checkpoint record (written by [`Wal::checkpoint`]).
    pub fn is_checkpoint(&self) -> bool {
        self.flags & FLAG_CHECKPOINT != 0
    }
}

impl<V> fmt::Debug for Record<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("lsn", &self.lsn)
            .field("stream", &self.stream)
            .field("len", &self.len)
            .finish()
    }
}

impl<S: Storage> Iterator for Replay<S> {
    type Item = Result<Record<<S::File as StorageFile>::View>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(current) = &mut self.current else {
                let segment = self.segments.pop_front()?;
                match self.open(segment) {
                    Ok(current) => self.current = Some(current),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            if current.pos >= current.end {
                self.current = None;
                continue;
            }
            let bytes = current.bytes.as_slice();
            let rest = bytes.get(current.pos..current.end).unwrap_or_default();
            let corrupt = |reason| Error::Corrupt {
                file: current.path.clone(),
                offset: current.pos as u64,
                last_good: Lsn(self.from.0.saturating_sub(1)),
                reason,
            };
            let Frame::Valid { header, size, .. } = format::decode_frame(rest) else {
                self.done = true;
                return Some(Err(corrupt("a record failed its checksum during replay")));
            };
            if header.seq32 != current.seq32 {
                self.done = true;
                return Some(Err(corrupt("a record of another segment inside this one")));
            }
            let payload_at = current.pos + FRAME_HEADER;
            current.pos += size;
            if header.lsn >= self.to {
                self.done = true;
                return None;
            }
            if header.lsn < self.from || header.flags & FLAG_SEAL != 0 {
                continue;
            }
            if self.stream.is_some_and(|s| s != header.stream) {
                continue;
            }
            return Some(Ok(Record {
                bytes: current.bytes.clone(),
                payload_at,
                len: header.len as usize,
                lsn: header.lsn,
                stream: header.stream,
                flags: header.flags,
            }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of LSNs 1..=5 whose `synced` fields are `synced`, back to
    /// back; their offsets.
    fn frames(synced: [u64; 5]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for (i, synced) in synced.into_iter().enumerate() {
            let payload = vec![7u8; 3 + i * 5];
            let header = FrameHeader {
                len: payload.len() as u32,
                lsn: Lsn(i as u64 + 1),
                stream: 1,
                seq32: 0,
                flags: 0,
                synced: Lsn(synced),
            };
            let at = bytes.len();
            bytes.resize(at + frame_size(payload.len()), 0);
            format::encode_frame(&mut bytes[at..], &header, &payload);
            offsets.push(at);
        }
        (bytes, offsets)
    }

    fn first_unvouched(synced: [u64; 5]) -> Option<u64> {
        let (bytes, offsets) = frames(synced);
        let mut unvouched = Unvouched::default();
        for at in offsets {
            let Frame::Valid { header, .. } = format::decode_frame(&bytes[at..]) else {
                panic!("frame at {at}");
            };
            unvouched.track(&bytes, at, &header);
        }
        unvouched.offset()
    }

    #[test]
    fn marks_are_sparse_and_name_the_last_frame_at_or_before() {
        let mut marks = Marks::default();
        for i in 0..1000u64 {
            marks.note(Lsn(i + 1), HEADER_BLOCK + i * 1000);
        }
        assert_eq!(marks.0.len(), 16, "one per 64 KiB of frames");
        assert_eq!(marks.start_for(Lsn(0)), None);
        assert_eq!(marks.start_for(Lsn(1)), Some(HEADER_BLOCK));
        let (lsn, at) = marks.0[3];
        assert_eq!(marks.start_for(lsn), Some(at));
        assert_eq!(marks.start_for(Lsn(lsn.0 + 1)), Some(at));
        assert_eq!(marks.start_for(Lsn(lsn.0 - 1)), Some(marks.0[2].1));
    }

    /// Replays from anywhere in segments with many marks, before and after
    /// a reopen (marks from appends, then from recovery's scan).
    #[test]
    fn replays_start_at_marks_and_return_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            segment_size: 1 << 20,
            ..WalConfig::default()
        };
        let wal = Wal::open(dir.path(), config.clone()).unwrap();
        let mut written = Vec::new();
        for i in 0..40_000u64 {
            let payload = i.to_le_bytes().repeat(1 + (i % 5) as usize);
            let lsn = wal.append(i % 3, &payload, SyncMode::Buffer).unwrap();
            written.push((lsn, payload));
        }
        assert!(wal.segments().unwrap().len() > 2);
        let check = |wal: &Wal| {
            let last = wal.last_lsn();
            for from in [1, 2, 1_637, 20_000, 31_999, last.0 - 1, last.0] {
                let got: Vec<(Lsn, Vec<u8>)> = wal
                    .replay(Lsn(from)..Lsn(from + 50))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .map(|r| (r.lsn(), r.payload().to_vec()))
                    .collect();
                let want: Vec<(Lsn, Vec<u8>)> = written
                    .iter()
                    .filter(|(l, _)| l.0 >= from && l.0 < from + 50)
                    .cloned()
                    .collect();
                assert_eq!(got, want, "from {from}");
            }
        };
        check(&wal);
        drop(wal);
        let wal = Wal::open(dir.path(), config).unwrap();
        check(&wal);
    }

    /// `later_records` looks only inside the written ranges it is given:
    /// a frame that starts in one and runs past its end is not ours (every
    /// byte of a record was written), and nothing past a range is read.
    #[test]
    fn later_records_reads_only_the_written_ranges() {
        let (frames, offsets) = frames([0; 5]);
        let at = 8192;
        let mut bytes = vec![0u8; 64 << 10];
        bytes[at..at + frames.len()].copy_from_slice(&frames);
        let later_within = |ranges: &[(usize, usize)]| {
            later_records(&bytes, 0, 0, Lsn(0), |o| {
                ranges
                    .iter()
                    .find(|&&(_, end)| end > o)
                    .map(|&(start, end)| (start.max(o), end))
            })
        };
        // Zeroes, a hole, then the five frames.
        let all = later_within(&[(0, 2048), (at, at + 4096)]);
        assert_eq!(all.end, at + frames.len());
        // The last frame's written bytes end inside it.
        let cut = later_within(&[(0, 2048), (at, at + offsets[4] + 20)]);
        assert_eq!(cut.end, at + offsets[4]);
        // A frame header crossing the range's end is not read as one.
        let short = later_within(&[(at, at + offsets[2] + FRAME_HEADER - 1)]);
        assert_eq!(short.end, at + offsets[2]);
        // Nothing written after the torn frame.
        assert_eq!(later_within(&[(0, 2048)]).end, 0);
    }

    /// The scan asks the file system where a frame header would run into
    /// a hole, once per written range.
    #[test]
    #[allow(clippy::disallowed_methods, reason = "a test, outside any task")]
    fn header_prefix_stops_at_holes() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        // Written: the first 8 KiB and 64 KiB..68 KiB; holes elsewhere (a
        // plain sparse file, as a copy of a log is).
        let plain = std::fs::File::create(&path).unwrap();
        plain.set_len(1 << 20).unwrap();
        plain.write_all_at(&[1u8; 8192], 0).unwrap();
        plain.write_all_at(&[1u8; 4096], 64 << 10).unwrap();
        plain.sync_all().unwrap();
        let file = FileStorage.open(&path).unwrap();
        assert_eq!(
            file.next_data(0).unwrap(),
            Some((0, 8192)),
            "the file system reports holes"
        );
        let mut written = WrittenTo::default();
        assert_eq!(written.header_prefix(&file, 100), None);
        assert_eq!(written.header_prefix(&file, 8192 - 16), Some(16));
        assert_eq!(written.header_prefix(&file, 8192), Some(0));
        assert_eq!(written.header_prefix(&file, 40 << 10), Some(0));
        assert_eq!(written.header_prefix(&file, 64 << 10), None);
        assert_eq!(written.header_prefix(&file, (68 << 10) - 8), Some(8));
    }

    #[test]
    fn unvouched_starts_after_the_last_frames_synced_lsn() {
        let (_, offsets) = frames([0; 5]);
        let at = |i: usize| Some(offsets[i] as u64);
        assert_eq!(first_unvouched([0, 0, 0, 0, 0]), at(0));
        assert_eq!(first_unvouched([0, 1, 1, 2, 3]), at(3));
        assert_eq!(first_unvouched([0, 0, 2, 2, 4]), at(4));
        assert_eq!(first_unvouched([0, 1, 2, 3, 5]), None, "all vouched for");
    }
}
