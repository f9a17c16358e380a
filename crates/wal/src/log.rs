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
//!   `segments` is the active one. Slots of segments wholly before the
//!   newest checkpoint are recycled, but only once no replay holds their
//!   file (`Arc` count), so a reader never sees a slot rewritten under it.
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

use crate::format::{
    self, CheckpointFile, FLAG_CHECKPOINT, FLAG_SEAL, FRAME_HEADER, Frame, FrameHeader,
    HEADER_BLOCK, HEADER_LEN, HeaderError, SegmentHeader, frame_size,
};
use crate::storage::{FileStorage, Storage, StorageFile};
use crate::{Error, Lsn, RecoveryMode, SyncMode, WalConfig};

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
    /// Slot file index.
    pub slot: u32,
    /// Segment sequence number.
    pub seq: u64,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// LSN of its last record (`first_lsn - 1` when empty).
    pub last_lsn: Lsn,
    /// Bytes used, header block included.
    pub used_bytes: u64,
    /// Size of the slot file.
    pub size: u64,
    /// Whether it is sealed (not the active segment).
    pub sealed: bool,
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
}

struct Inner<S: Storage> {
    storage: S,
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
}

#[derive(Default)]
struct SyncRound {
    running: bool,
    /// Blocking appenders waiting for a round to cover their LSN. Each
    /// sleeps until a round covers it or it is asked to lead the next one,
    /// so a round wakes only the threads it serves plus one leader.
    waiting: Vec<(u64, Thread)>,
}

/// Requests to the background syncer.
#[derive(Default)]
struct Background {
    requested: bool,
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
    slot: u32,
    seq: u64,
    first_lsn: Lsn,
    file: Arc<S::File>,
    /// Offset just past the last record.
    end: u64,
    /// LSN of the last record (first_lsn - 1 when empty).
    last_lsn: Lsn,
}

struct Writer<S: Storage> {
    segments: VecDeque<Segment<S>>,
    free: Vec<(u32, Arc<S::File>)>,
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
        let inner = Arc::new(Inner {
            storage,
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
            background: Mutex::new(Background::default()),
            background_wake: Condvar::new(),
        });
        let syncer = if read_only {
            None
        } else {
            let worker = Arc::clone(&inner);
            let thread = std::thread::Builder::new()
                .name("tiffany-wal-sync".to_owned())
                .spawn(move || worker.background_syncer())
                .map_err(|e| Error::io("start the sync thread", &inner.dir, e))?;
            Some(thread)
        };
        Ok((Wal { inner, syncer }, report))
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
                writer.free.push((segment.slot, segment.file));
            }
        }
        Ok(record)
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
            .map(|(i, s)| SegmentInfo {
                slot: s.slot,
                seq: s.seq,
                first_lsn: s.first_lsn,
                last_lsn: s.last_lsn,
                used_bytes: s.end,
                size: s.file.len(),
                sealed: i + 1 < count,
            })
            .collect())
    }

    /// Number of slot files waiting to be reused.
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
            .map(|s| (s.slot, s.seq, Arc::clone(&s.file), s.end))
            .collect();
        Ok(Replay {
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
    #[allow(clippy::disallowed_methods)] // joining our own sync thread
    fn drop(&mut self) {
        if let Some(thread) = self.syncer.take() {
            if let Ok(mut bg) = self.inner.background.lock() {
                bg.stop = true;
                self.inner.background_wake.notify_one();
            }
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
            let Some(active) = writer.segments.back() else {
                return Ok(());
            };
            (
                inner.written.load(Ordering::Acquire),
                inner.written_bytes.load(Ordering::Acquire),
                Arc::clone(&active.file),
                active.slot,
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
    #[allow(clippy::disallowed_methods)] // its own thread; waiting is its job
    fn background_syncer(&self) {
        loop {
            {
                let Ok(mut bg) = self.background.lock() else {
                    return;
                };
                while !bg.requested && !bg.stop {
                    bg = match self.background_wake.wait(bg) {
                        Ok(bg) => bg,
                        Err(_) => return,
                    };
                }
                if bg.stop {
                    return;
                }
                bg.requested = false;
            }
            let target = Lsn(self.written.load(Ordering::Acquire));
            // Errors poison the log and wake every waiter; nothing to add.
            let _ = self.wait_durable(target);
            self.wake_waiters();
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
        let result = active.file.write_at(active.end, &buf);
        let slot = active.slot;
        if result.is_ok() {
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
        let (file, slot) = {
            let active = self.active()?;
            (Arc::clone(&active.file), active.slot)
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
            slot,
            seq: self.next_seq,
            first_lsn: Lsn(self.next_lsn),
            file,
            end: HEADER_BLOCK,
            last_lsn: Lsn(self.next_lsn - 1),
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
    for name in &names {
        let Some(slot) = parse_slot(name) else {
            continue;
        };
        slots = slots.max(slot + 1);
        let path = dir.join(name);
        let file = storage
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let mut head = [0u8; HEADER_LEN];
        let n = usize::try_from(file.len())
            .unwrap_or(usize::MAX)
            .min(HEADER_LEN);
        if let Some(buf) = head.get_mut(..n) {
            file.read_at(0, buf)
                .map_err(|e| Error::io("read segment header", &path, e))?;
        }
        match SegmentHeader::decode(&head) {
            Ok(header) if header.segment_size == file.len() => {
                found.push(Found { slot, header, file })
            }
            Ok(header) => {
                return Err(Error::Corrupt {
                    slot,
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
            Err(HeaderError::Foreign | HeaderError::Short) if head.iter().all(|&b| b == 0) => {
                // Empty or zero-filled: a slot file created by a rotation
                // that crashed before its header was written.
                report.reclaimed_slots.push(slot);
                free.push((slot, Arc::new(file)));
            }
            Err(HeaderError::Foreign | HeaderError::Short) => return Err(Error::Foreign { path }),
        }
    }
    found.sort_by_key(|f| f.header.seq);
    for pair in found.windows(2) {
        if let [a, b] = pair {
            if a.header.seq == b.header.seq {
                return Err(Error::Corrupt {
                    slot: b.slot,
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
    // Live segments: the newest run of consecutive sequence numbers, from
    // the checkpoint's oldest needed segment on. Older slots are free.
    let mut live_from = found.len();
    while live_from > 0 {
        let prev = found.get(live_from - 1).map(|f| f.header.seq);
        let here = found.get(live_from).map(|f| f.header.seq);
        match (prev, here) {
            (Some(p), Some(h)) if p + 1 != h => break,
            _ => live_from -= 1,
        }
        if let (Some(ckpt), Some(f)) = (&checkpoint, found.get(live_from)) {
            if f.header.seq <= ckpt.segment_seq {
                break;
            }
        }
    }
    let mut live: Vec<Found<S>> = found.split_off(live_from);
    for old in found {
        free.push((old.slot, Arc::new(old.file)));
    }
    if let (Some(ckpt), Some(first)) = (&checkpoint, live.first()) {
        if first.header.seq > ckpt.segment_seq {
            // The segments the checkpoint needs are gone.
            return Err(Error::Corrupt {
                slot: first.slot,
                offset: 0,
                last_good: ckpt.lsn,
                reason: "the segments after the newest checkpoint are missing",
            });
        }
    }
    let mut segments = VecDeque::new();
    let mut expected = live.first().map_or(Lsn(1), |f| f.header.first_lsn);
    let count = live.len();
    let mut sealed = false;
    for (i, f) in live.drain(..).enumerate() {
        let last = i + 1 == count;
        if f.header.first_lsn != expected {
            return Err(Error::Corrupt {
                slot: f.slot,
                offset: 0,
                last_good: Lsn(expected.0 - 1),
                reason: "a segment does not start where the previous one ended",
            });
        }
        let after = checkpoint.as_ref().map_or(Lsn(0), |c| c.lsn);
        let scanned = scan_segment(&f, last, config.recovery, after, read_only, &mut report)?;
        report.segments_scanned += 1;
        expected = Lsn(scanned.last_lsn.0 + 1);
        report.tail_bytes += scanned.tail_bytes;
        sealed = scanned.sealed;
        segments.push_back(Segment {
            slot: f.slot,
            seq: f.header.seq,
            first_lsn: f.header.first_lsn,
            file: Arc::new(f.file),
            end: scanned.end,
            last_lsn: scanned.last_lsn,
        });
    }
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
                slot,
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
    if !read_only {
        if let Some(last) = segments.back() {
            resync_unsynced_tail(last)?;
        }
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

/// Makes the records of the last segment that no frame vouches for as
/// synced durable before recovery declares them so: they may be page-cache
/// data of the previous process, or pages a failed `fdatasync` marked
/// clean without writing them. Each frame's `synced` field only rises, so
/// the last frame's is the segment's highest; the frames after it are
/// written again (re-dirtying their pages) and synced.
fn resync_unsynced_tail<S: Storage>(segment: &Segment<S>) -> Result<(), Error> {
    let path = slot_name(segment.slot);
    let view = segment
        .file
        .view()
        .map_err(|e| Error::io("map segment", &path, e))?;
    let bytes: &[u8] = (*view).as_ref();
    let end = usize::try_from(segment.end).unwrap_or(usize::MAX);
    let mut pos = HEADER_BLOCK as usize;
    let mut frames = Vec::new();
    let mut vouched = Lsn(0);
    while pos < end {
        let Frame::Valid { header, size, .. } =
            format::decode_frame(bytes.get(pos..end).unwrap_or_default())
        else {
            break;
        };
        frames.push((header.lsn, pos));
        vouched = header.synced;
        pos += size;
    }
    let Some(&(_, from)) = frames.iter().find(|(lsn, _)| *lsn > vouched) else {
        return Ok(());
    };
    let tail = bytes.get(from..end).unwrap_or_default().to_vec();
    drop(view);
    segment
        .file
        .write_at(from as u64, &tail)
        .map_err(|e| Error::io("rewrite unsynced records", &path, e))?;
    segment
        .file
        .sync_data()
        .map_err(|e| Error::io("sync segment", &path, e))
}

struct Scanned {
    end: u64,
    last_lsn: Lsn,
    /// Bytes of records with LSNs after the checkpoint.
    tail_bytes: u64,
    /// The segment ends with its seal.
    sealed: bool,
}

/// Checks every frame of one segment. A sealed segment must end with its
/// seal; the last segment ends at its first invalid frame (a torn frame is
/// cut off and reported).
fn scan_segment<S: Storage>(
    f: &Found<S>,
    last: bool,
    mode: RecoveryMode,
    after: Lsn,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<Scanned, Error> {
    let view = f
        .file
        .view()
        .map_err(|e| Error::io("map segment", slot_name(f.slot), e))?;
    let bytes: &[u8] = (*view).as_ref();
    let seq32 = f.header.seq as u32;
    let mut pos = HEADER_BLOCK as usize;
    let mut last_lsn = Lsn(f.header.first_lsn.0 - 1);
    let mut tail_bytes = 0;
    let corrupt = |pos: usize, last_good: Lsn, reason| Error::Corrupt {
        slot: f.slot,
        offset: pos as u64,
        last_good,
        reason,
    };
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
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
                if !last {
                    return Err(corrupt(
                        pos,
                        last_lsn,
                        "a sealed segment ends before its seal",
                    ));
                }
                let ours = matches!(frame, Frame::Invalid) && looks_like_ours(rest, seq32);
                let later = later_records(bytes, pos, seq32, last_lsn);
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
                            slot: f.slot,
                            offset: pos as u64,
                        },
                        "a damaged record that had been synced, and everything after it",
                    ));
                }
                if ours || later.end > pos {
                    if !synced_damage {
                        report.torn_tail = Some(TornTail {
                            slot: f.slot,
                            offset: pos as u64,
                        });
                    }
                    if !read_only {
                        // Erase up to the end of the last record of ours, so
                        // none of the cut records can come back.
                        erase_range(f, pos, later.end.max(pos + FRAME_HEADER))?;
                    }
                }
                return Ok(Scanned {
                    end: pos as u64,
                    last_lsn,
                    tail_bytes,
                    sealed: false,
                });
            }
        };
        if header.flags & FLAG_CHECKPOINT != 0 {
            if let Some(found) = decode_checkpoint_record(bytes, pos, header, f.header.seq) {
                report_checkpoint_record(report, found);
            }
        }
        last_lsn = header.lsn;
        pos += size;
        if header.lsn > after {
            tail_bytes += size as u64;
        }
        if header.flags & FLAG_SEAL != 0 {
            return Ok(Scanned {
                end: pos as u64,
                last_lsn,
                tail_bytes,
                sealed: true,
            });
        }
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

/// Intact records of this segment newer than `last` found after `from`.
struct Later {
    /// End offset of the last such record (`from` when none).
    end: usize,
    /// The highest durable LSN they claim.
    synced: Lsn,
}

/// Looks for intact records of this segment, newer than `last`, after the
/// damaged or torn frame at `from`.
fn later_records(bytes: &[u8], from: usize, seq32: u32, last: Lsn) -> Later {
    let mut later = Later {
        end: from,
        synced: Lsn(0),
    };
    let mut at = from + format::FRAME_ALIGN;
    while at + FRAME_HEADER <= bytes.len() {
        let Some(rest) = bytes.get(at..) else { break };
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
fn erase_range<S: Storage>(f: &Found<S>, from: usize, to: usize) -> Result<(), Error> {
    let path = slot_name(f.slot);
    let zeros = vec![0u8; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len());
        f.file
            .write_at(at as u64, zeros.get(..n).unwrap_or_default())
            .map_err(|e| Error::io("truncate torn records", &path, e))?;
        at += n;
    }
    f.file
        .sync_data()
        .map_err(|e| Error::io("sync segment", &path, e))
}

/// Iterator over records; see [`Wal::replay`].
pub struct Replay<S: Storage> {
    dir: PathBuf,
    /// (slot, seq, file, end) of the segments still to read.
    segments: VecDeque<(u32, u64, Arc<S::File>, u64)>,
    current: Option<Current<S>>,
    from: Lsn,
    to: Lsn,
    stream: Option<u64>,
    done: bool,
}

struct Current<S: Storage> {
    slot: u32,
    seq32: u32,
    view: Arc<<S::File as StorageFile>::View>,
    pos: usize,
    end: usize,
    _file: Arc<S::File>,
}

impl<S: Storage> Replay<S> {
    /// Only records of `stream`.
    pub fn stream(mut self, stream: u64) -> Replay<S> {
        self.stream = Some(stream);
        self
    }
}

/// One record read back from the log. Holds the segment's mapping: the
/// payload is not copied.
pub struct Record<V> {
    view: Arc<V>,
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

    /// The payload, borrowed from the segment's mapping.
    pub fn payload(&self) -> &[u8] {
        (*self.view)
            .as_ref()
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
                let (slot, seq, file, end) = self.segments.pop_front()?;
                let view = match file.view() {
                    Ok(view) => view,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(Error::io(
                            "map segment",
                            self.dir.join(slot_name(slot)),
                            e,
                        )));
                    }
                };
                self.current = Some(Current {
                    slot,
                    seq32: seq as u32,
                    view,
                    pos: HEADER_BLOCK as usize,
                    end: usize::try_from(end).unwrap_or(usize::MAX),
                    _file: file,
                });
                continue;
            };
            if current.pos >= current.end {
                self.current = None;
                continue;
            }
            let bytes: &[u8] = (*current.view).as_ref();
            let rest = bytes.get(current.pos..current.end).unwrap_or_default();
            let Frame::Valid { header, size, .. } = format::decode_frame(rest) else {
                self.done = true;
                return Some(Err(Error::Corrupt {
                    slot: current.slot,
                    offset: current.pos as u64,
                    last_good: Lsn(self.from.0.saturating_sub(1)),
                    reason: "a record failed its checksum during replay",
                }));
            };
            if header.seq32 != current.seq32 {
                self.done = true;
                return Some(Err(Error::Corrupt {
                    slot: current.slot,
                    offset: current.pos as u64,
                    last_good: Lsn(self.from.0.saturating_sub(1)),
                    reason: "a record of another segment inside this one",
                }));
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
                view: Arc::clone(&current.view),
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
