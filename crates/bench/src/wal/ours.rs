//! Ours: `tiffany-wal`.
//!
//! - appends: one [`Wal`] per run, shared by every writer through an
//!   [`Arc`], `WalConfig::default()` (64 MiB segments), with the
//!   [`SyncMode`] of the workload;
//! - replay: a log filled once with `SyncMode::None` and flushed, then read
//!   whole through the CRC-checking [`Wal::replay`] iterator on every run;
//!   the compressed one ([`compressed_config`]) has every sealed segment
//!   archived ([`Wal::archive`]) before the first run, so replay
//!   decompresses all but the active segment;
//! - recovery: a log with one checkpoint near its start and the tail past
//!   it, closed; every run times [`Wal::open_with_report`] alone.
//!
//! Invariants:
//! - every workload runs the public API only, as an application would;
//! - a replay counts every payload byte and fails unless it saw all of
//!   them, so a short or skipping iterator cannot look fast.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use tiffany_wal::format::{FRAME_ALIGN, FRAME_HEADER};
use tiffany_wal::{Compression, Lsn, SegmentInfo, SyncMode, Wal, WalConfig};

use super::workload::{Payloads, STREAMS};
use super::{AppendLog, Appender, ColdStart, Durability, OURS, OpenPlan, Ours, ReplaySource};
use crate::measure::Named;

/// Why the compressed replay is still pending with the feature on.
const NO_COMPRESSION: &str = "tiffany-wal has no setting for compressed segments yet; \
     return one from compressed_config() in crates/bench/src/wal/ours.rs";

static DATA: TiffanyLog = TiffanyLog {
    mode: SyncMode::Data,
};
static BUFFER: TiffanyLog = TiffanyLog {
    mode: SyncMode::Buffer,
};

/// Our log appending with `durability`.
pub(crate) fn append_log(durability: Durability) -> Ours<&'static dyn AppendLog> {
    Ours::Built(match durability {
        Durability::Data => &DATA,
        Durability::Buffer => &BUFFER,
    })
}

/// Our log in `dir`, holding `bytes` of `payloads`, to replay.
pub(super) fn replay_source(
    dir: &Path,
    bytes: u64,
    payloads: &Payloads,
) -> Result<Ours<Box<dyn ReplaySource>>> {
    let source = TiffanyReplay::fill(dir, WalConfig::default(), bytes, payloads)?;
    Ok(Ours::Built(Box::new(source)))
}

/// The configuration of a log whose sealed segments are compressed; `None`
/// when `tiffany-wal` has no such setting. 8 MiB segments: the quick run's
/// 64 MiB of payload then fills nine archives and a small active segment,
/// so the replay measures archives, not the one uncompressed slot.
fn compressed_config() -> Option<WalConfig> {
    Some(WalConfig {
        segment_size: 8 << 20,
        compression: Compression::Lz4,
        ..WalConfig::default()
    })
}

/// Our compressed log in `dir`, holding `bytes` of `payloads`, to replay,
/// and its compression ratio.
pub(super) fn compressed_replay_source(
    dir: &Path,
    bytes: u64,
    payloads: &Payloads,
) -> Result<Ours<(Box<dyn ReplaySource>, f64)>> {
    let Some(config) = compressed_config() else {
        return Ok(Ours::Pending(NO_COMPRESSION));
    };
    let source = TiffanyReplay::fill(dir, config, bytes, payloads)?;
    source.wal.archive()?;
    let ratio = compression_ratio(&source.wal.segments()?)?;
    Ok(Ours::Built((Box::new(source), ratio)))
}

/// Our log in `dir` with `tail_bytes` of records past its last checkpoint,
/// to recover. Checks once, untimed, that recovery sees that tail.
pub(super) fn recovery_source(
    dir: &Path,
    tail_bytes: u64,
    payloads: &Payloads,
) -> Result<Ours<Box<dyn ColdStart>>> {
    let wal = Wal::open(dir, WalConfig::default())?;
    let lsn = wal.append(0, payloads.get(0), SyncMode::Data)?;
    wal.checkpoint(lsn, b"snapshot-ref")?;
    let frame = (FRAME_HEADER + payloads.len().next_multiple_of(FRAME_ALIGN)) as u64;
    for i in 0..tail_bytes.div_ceil(frame) {
        wal.append(i % STREAMS, payloads.get(i), SyncMode::None)?;
    }
    wal.flush()?;
    drop(wal);
    let (_wal, report) = Wal::open_with_report(dir, WalConfig::default())?;
    ensure!(
        report.tail_bytes >= tail_bytes,
        "recovery saw a tail of {} bytes, wrote {tail_bytes}",
        report.tail_bytes
    );
    Ok(Ours::Built(Box::new(TiffanyRecovery {
        dir: dir.to_owned(),
    })))
}

/// `tiffany-wal` appending with one [`SyncMode`].
struct TiffanyLog {
    mode: SyncMode,
}

impl Named for TiffanyLog {
    fn name(&self) -> &'static str {
        OURS
    }
}

impl AppendLog for TiffanyLog {
    fn setup(&self) -> String {
        format!(
            "tiffany-wal, WalConfig::default(), SyncMode::{:?}, one Wal shared by every writer",
            self.mode
        )
    }

    fn open(&self, dir: &Path, plan: &OpenPlan) -> Result<Vec<Box<dyn Appender>>> {
        let wal = Arc::new(
            Wal::open(dir, WalConfig::default())
                .with_context(|| format!("cannot open tiffany-wal in {}", dir.display()))?,
        );
        Ok((0..plan.writers)
            .map(|_| {
                Box::new(TiffanyAppender {
                    wal: Arc::clone(&wal),
                    mode: self.mode,
                }) as Box<dyn Appender>
            })
            .collect())
    }
}

struct TiffanyAppender {
    wal: Arc<Wal>,
    mode: SyncMode,
}

impl Appender for TiffanyAppender {
    fn append(&mut self, stream: u64, payload: &[u8]) -> Result<()> {
        self.wal.append(stream, payload, self.mode)?;
        Ok(())
    }
}

/// An open log filled once, replayed whole on every run.
struct TiffanyReplay {
    wal: Wal,
    payload_bytes: u64,
}

impl TiffanyReplay {
    fn fill(dir: &Path, config: WalConfig, bytes: u64, payloads: &Payloads) -> Result<Self> {
        let wal = Wal::open(dir, config)?;
        let records = bytes / payloads.len().max(1) as u64;
        for i in 0..records {
            wal.append(i % STREAMS, payloads.get(i), SyncMode::None)?;
        }
        wal.flush()?;
        Ok(TiffanyReplay {
            wal,
            payload_bytes: records * payloads.len() as u64,
        })
    }
}

impl Named for TiffanyReplay {
    fn name(&self) -> &'static str {
        OURS
    }
}

impl ReplaySource for TiffanyReplay {
    fn replay(&self) -> Result<u64> {
        let mut bytes = 0u64;
        for record in self.wal.replay(Lsn(1)..)? {
            bytes += record?.payload().len() as u64;
        }
        ensure!(
            bytes == self.payload_bytes,
            "replay saw {bytes} payload bytes of {}",
            self.payload_bytes
        );
        Ok(bytes)
    }
}

/// A closed log, recovered on every run.
struct TiffanyRecovery {
    dir: PathBuf,
}

impl Named for TiffanyRecovery {
    fn name(&self) -> &'static str {
        OURS
    }
}

impl ColdStart for TiffanyRecovery {
    fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(entry.path());
            }
        }
        Ok(files)
    }

    fn start(&self) -> Result<Box<dyn Any>> {
        let (wal, report) = Wal::open_with_report(&self.dir, WalConfig::default())?;
        Ok(Box::new((wal, report)))
    }
}

/// Bytes before compression over bytes on disk of the archived segments
/// (`sealed-<seq>.lz4`, `docs/wal-format.md`).
fn compression_ratio(segments: &[SegmentInfo]) -> Result<f64> {
    let (raw, on_disk) = segments
        .iter()
        .filter(|s| s.archived)
        .fold((0u64, 0u64), |(raw, disk), s| {
            (raw + s.used_bytes, disk + s.size)
        });
    ensure!(on_disk > 0, "no segment of the log is archived");
    Ok(raw as f64 / on_disk as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    fn scratch() -> ScratchDir {
        ScratchDir::new_in(&std::env::temp_dir(), "tiffany-ours-test").unwrap()
    }

    #[test]
    fn ours_compressed_source_replays_archives_and_reports_their_ratio() {
        let payloads = Payloads::text(1, 64, 256);
        let dir = scratch();
        let Ours::Built((replay, ratio)) =
            compressed_replay_source(dir.path(), 20 << 20, &payloads).unwrap()
        else {
            panic!("ours compresses");
        };
        assert_eq!(replay.replay().unwrap(), 20 << 20);
        assert!(ratio > 2.0, "text payloads compressed only {ratio:.2}x");
        assert!(compression_ratio(&[]).is_err());
    }

    #[test]
    fn ours_sources_replay_and_recover_what_they_wrote() {
        let payloads = Payloads::random(1, 16, 256);
        let dir = scratch();
        let Ours::Built(replay) = replay_source(dir.path(), 1 << 20, &payloads).unwrap() else {
            panic!("ours is built with the feature");
        };
        assert_eq!(replay.replay().unwrap(), 1 << 20);
        let dir = scratch();
        let Ours::Built(recovery) = recovery_source(dir.path(), 1 << 20, &payloads).unwrap() else {
            panic!("ours is built with the feature");
        };
        assert!(!recovery.files().unwrap().is_empty());
        drop(recovery.start().unwrap());
        let Ours::Built(log) = append_log(Durability::Data) else {
            panic!("ours is built with the feature");
        };
        let plan = OpenPlan {
            writers: 2,
            appends: 4,
            payload_len: 256,
        };
        for mut appender in log.open(scratch().path(), &plan).unwrap() {
            appender.append(3, payloads.get(0)).unwrap();
        }
    }
}
