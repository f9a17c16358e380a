//! The log's error type.

use std::io;
use std::path::PathBuf;

use crate::Lsn;

/// Everything that can go wrong with a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An earlier `fsync` failed: the log refuses all writes until it is
    /// reopened, because the kernel may have dropped the unsynced pages
    /// (the "fsyncgate" lesson: never retry a failed fsync).
    #[error("the log is poisoned by an earlier failed sync ({cause}); reopen it to recover")]
    Poisoned {
        /// What the failed sync reported.
        cause: String,
    },
    /// Another process (or another open handle) holds the directory.
    #[error("the log directory {dir} is locked by another process")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file in the directory is not a segment of ours.
    #[error("{path} is not a Tiffany log segment (bad magic number)")]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// A segment was written by a newer format version.
    #[error("{path} has format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// Damaged data before the end of the log.
    #[error("corrupt log in {} at offset {offset} (after LSN {last_good}): {reason}", file.display())]
    Corrupt {
        /// The damaged file: a slot file (`slot-NNNN.seg`) or an archive
        /// (`sealed-<seq>.lz4`).
        file: PathBuf,
        /// Byte offset in the segment: in the slot file, or in the
        /// decompressed segment of an archive (the same offsets as in the
        /// slot it was sealed in).
        offset: u64,
        /// The last LSN read intact before the damage.
        last_good: Lsn,
        /// What was wrong.
        reason: &'static str,
    },
    /// An archive was compressed with a codec this build does not know.
    #[error("{path} is compressed with codec {codec}, unknown to this build")]
    UnsupportedCodec {
        /// The archive.
        path: PathBuf,
        /// Its codec id.
        codec: u16,
    },
    /// A record does not fit in a segment.
    #[error("a {len}-byte record does not fit in a {segment_size}-byte segment")]
    TooLarge {
        /// The payload length.
        len: usize,
        /// The configured segment size.
        segment_size: u64,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// [`Wal::try_append`](crate::Wal::try_append) above the hard watermark.
    #[error(
        "the log's unsynced queue is over its hard watermark ({unsynced_bytes} bytes); retry after a sync"
    )]
    WouldBlock {
        /// Unsynced bytes at the time.
        unsynced_bytes: u64,
    },
    /// A write to a log opened read-only.
    #[error("the log was opened read-only")]
    ReadOnly,
    /// A replay asked for records the log no longer (or not yet) holds.
    #[error("LSN {requested} is not in the log (it holds {first}..={last})")]
    OutOfRange {
        /// The LSN asked for.
        requested: Lsn,
        /// The oldest LSN still held.
        first: Lsn,
        /// The newest LSN.
        last: Lsn,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
