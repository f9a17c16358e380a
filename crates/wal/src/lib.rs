//! Tiffany's write-ahead log: every agent step is appended here before it
//! takes effect.
//!
//! # Overview
//! - [`Wal`] is an open log in a directory. [`Wal::open`] recovers it (or
//!   creates it) and returns it ready to append. [`Wal::append`] writes a
//!   record for a stream (an agent) and returns its [`Lsn`] once the record
//!   is as durable as its [`SyncMode`] asks; concurrent appenders share one
//!   `fdatasync` (group commit).
//! - Records live in fixed-size, preallocated *segments* held in *slot*
//!   files reused as a ring; each record is framed with its length, a
//!   CRC32C, its LSN, its stream and its segment's sequence number, so a
//!   stale record from an earlier pass of the ring is never read as valid
//!   (`docs/wal-format.md`).
//! - [`Wal::checkpoint`] records that the caller's state up to an LSN is
//!   saved elsewhere; recovery starts from the newest checkpoint and
//!   segments wholly before it are recycled.
//! - [`Wal::replay`] iterates the records of an LSN range, optionally of one
//!   stream, checking every checksum.
//! - With [`WalConfig::compression`] on, each sealed segment is compressed
//!   into an *archive* file off the append path (by the log's archiver
//!   thread, or by [`Wal::archive`]) and its slot is freed for reuse once
//!   the archive is durable; replay and recovery read archives
//!   transparently.
//! - All file I/O goes through a [`Storage`]: [`FileStorage`] for real
//!   disks; tests use a fault-injecting one.
//!
//! # Durability
//! | mode | acknowledged when | survives |
//! |---|---|---|
//! | [`SyncMode::None`] | copied into the log's memory map | a crash of the process, usually (no promise) |
//! | [`SyncMode::Buffer`] | copied into the memory map (the OS page cache) | a crash of the process |
//! | [`SyncMode::Data`] | after an `fdatasync` covering it | a crash of the machine, a power loss |
//!
//! Archiving never weakens this: a slot is reused only after its archive
//! has been written, synced and renamed into place and the directory
//! synced.
//!
//! A failed `fdatasync` poisons the log: every later call fails with
//! [`Error::Poisoned`] until the log is reopened (and recovered), because
//! after a failed sync the kernel may have dropped the dirty pages.
//!
//! # Example
//! ```
//! use tiffany_wal::{Lsn, SyncMode, Wal, WalConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = WalConfig { segment_size: 1 << 20, ..WalConfig::default() };
//! let wal = Wal::open(dir.path(), config.clone()).unwrap();
//! let first = wal.append(7, b"plan: list files", SyncMode::Data).unwrap();
//! wal.append(7, b"observe: 3 files", SyncMode::Data).unwrap();
//! drop(wal);
//!
//! let wal = Wal::open(dir.path(), config).unwrap();
//! let payloads: Vec<Vec<u8>> = wal
//!     .replay(first..)
//!     .unwrap()
//!     .map(|r| r.unwrap().payload().to_vec())
//!     .collect();
//! assert_eq!(payloads, [b"plan: list files".to_vec(), b"observe: 3 files".to_vec()]);
//! ```

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing))]

mod archive;
mod crc;
mod error;
pub mod format;
mod log;
mod storage;

use std::fmt;

pub use error::Error;
pub use log::{
    Checkpoint, Durable, Pressure, PressureEvent, Record, RecoveryReport, Replay, SegmentInfo,
    TornTail, Wal,
};
pub use storage::{DirLock, FileStorage, RealFile, Storage, StorageFile};

/// A log sequence number: the position of a record in the log, from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// How durable a record must be before [`Wal::append`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// No promise: return as soon as the record is in the log's memory.
    None,
    /// In the operating system's page cache: survives a crash of the
    /// process, not of the machine.
    Buffer,
    /// On stable storage (`fdatasync`): survives a power loss.
    #[default]
    Data,
}

/// What to do with damage found while recovering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Fail on any damage other than a torn last record, which a crash in
    /// the middle of a write leaves behind and is truncated (and reported).
    #[default]
    AbsoluteConsistency,
    /// Truncate the last segment at the first damaged record and report
    /// what was cut, even when intact records follow it. Damage before the
    /// last segment is still an error.
    TolerateCorruptTail,
}

/// Whether sealed segments are compressed into archives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Sealed segments stay in their slots until a checkpoint frees them.
    #[default]
    None,
    /// Each sealed segment is compressed with LZ4 into
    /// `sealed-<seq>.lz4` and its slot freed (`docs/wal-format.md`).
    /// Archives are read back whatever this setting says: it only decides
    /// whether new ones are written.
    Lz4,
}

/// Who archives sealed segments when [`WalConfig::compression`] is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Archiver {
    /// A thread of the log (`tiffany-wal-archive`) archives each segment as
    /// soon as a rotation seals it.
    #[default]
    Thread,
    /// Only calls to [`Wal::archive`] do: for callers that schedule
    /// maintenance themselves (a background task, an idle hook), and for
    /// tests that need the same sequence of I/O operations on every run.
    Manual,
}

/// How a log is laid out and recovered. Field docs give defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Size of each segment slot file in bytes (default 64 MiB; at least
    /// 64 KiB).
    pub segment_size: u64,
    /// What recovery does with damage (default
    /// [`RecoveryMode::AbsoluteConsistency`]).
    pub recovery: RecoveryMode,
    /// Bytes past the newest checkpoint beyond which
    /// [`RecoveryReport::tail_over_cap`] is raised (default 128 MiB): the
    /// caller should checkpoint to keep boot time bounded.
    pub max_tail_bytes: u64,
    /// Unsynced bytes above which a background sync starts and the level
    /// becomes [`Pressure::Soft`] (default 8 MiB).
    pub soft_watermark: u64,
    /// Unsynced bytes above which blocking appenders wait for a sync and
    /// [`Wal::try_append`] fails (default 64 MiB).
    pub hard_watermark: u64,
    /// Whether sealed segments are compressed into archives (default
    /// [`Compression::None`]).
    pub compression: Compression,
    /// Who compresses them (default [`Archiver::Thread`]).
    pub archiver: Archiver,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig {
            segment_size: 64 << 20,
            recovery: RecoveryMode::default(),
            max_tail_bytes: 128 << 20,
            soft_watermark: 8 << 20,
            hard_watermark: 64 << 20,
            compression: Compression::None,
            archiver: Archiver::Thread,
        }
    }
}
