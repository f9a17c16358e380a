//! Peer: okaywal 0.3, a write-ahead log in Rust with its own group commit
//! (writers queue for one `fdatasync`).
//!
//! An append is one entry holding one chunk, the stream id (8 bytes,
//! little-endian) then the payload; `EntryWriter::commit` returns after
//! okaywal's `fdatasync` covering the entry. okaywal has no commit that
//! skips the sync, so it has no buffered counterpart.
//!
//! Invariants:
//! - the segment file is large enough for the whole run (okaywal
//!   preallocates it by writing zeros when it creates it) and the
//!   checkpoint threshold is that size, so no timed append rotates segments
//!   or checkpoints. okaywal's defaults (1 MiB files, checkpoint after
//!   768 KiB) would rotate about every 2,800 appends of this size; ours is
//!   measured inside its first 64 MiB segment alike;
//! - the log manager is `LogVoid`: a fresh directory has nothing to
//!   recover, and a checkpoint has nothing to hand over;
//! - every writer holds its own clone of the `WriteAheadLog` handle.

use std::path::Path;

use anyhow::{Context as _, Result};
use okaywal::{Configuration, LogVoid, WriteAheadLog};

use super::{AppendLog, Appender, OpenPlan};
use crate::measure::Named;

/// okaywal's bytes per entry around a one-chunk payload: entry marker and
/// id (9), chunk marker and length (5), chunk CRC (4), end marker (1),
/// rounded up.
const ENTRY_OVERHEAD: u64 = 32;
/// Bytes of the stream id in front of each payload.
const STREAM_BYTES: usize = 8;

/// okaywal, one entry per append.
#[derive(Debug)]
pub(crate) struct OkayWal;

impl Named for OkayWal {
    fn name(&self) -> &'static str {
        "okaywal"
    }
}

impl AppendLog for OkayWal {
    fn setup(&self) -> String {
        "okaywal 0.3: one entry of one chunk (stream id + payload) per append, commit() waits \
         for its fdatasync; segment preallocated for the whole run, no checkpoint while timed"
            .into()
    }

    fn open(&self, dir: &Path, plan: &OpenPlan) -> Result<Vec<Box<dyn Appender>>> {
        let entry = ENTRY_OVERHEAD + (STREAM_BYTES + plan.payload_len) as u64;
        let bytes = (plan.appends.max(1) * entry).div_ceil(1 << 20) * (1 << 20);
        let preallocate = u32::try_from(bytes).context("an okaywal segment is at most 4 GiB")?;
        let wal = Configuration::default_for(dir)
            .preallocate_bytes(preallocate)
            .checkpoint_after_bytes(u64::from(preallocate))
            .open(LogVoid)
            .with_context(|| format!("cannot open okaywal in {}", dir.display()))?;
        Ok((0..plan.writers)
            .map(|_| {
                Box::new(OkayAppender {
                    wal: wal.clone(),
                    chunk: Vec::with_capacity(STREAM_BYTES + plan.payload_len),
                }) as Box<dyn Appender>
            })
            .collect())
    }
}

struct OkayAppender {
    wal: WriteAheadLog,
    /// Reused buffer for the chunk.
    chunk: Vec<u8>,
}

impl Appender for OkayAppender {
    fn append(&mut self, stream: u64, payload: &[u8]) -> Result<()> {
        self.chunk.clear();
        self.chunk.extend_from_slice(&stream.to_le_bytes());
        self.chunk.extend_from_slice(payload);
        let mut entry = self.wal.begin_entry()?;
        entry.write_chunk(&self.chunk)?;
        entry.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn okaywal_appends_commit_from_every_writer() {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-okaywal-test").unwrap();
        let plan = OpenPlan {
            writers: 2,
            appends: 10,
            payload_len: 256,
        };
        let mut appenders = OkayWal.open(dir.path(), &plan).unwrap();
        assert_eq!(appenders.len(), 2);
        for (w, a) in appenders.iter_mut().enumerate() {
            for _ in 0..5 {
                a.append(w as u64, &[7; 256]).unwrap();
            }
        }
    }
}
