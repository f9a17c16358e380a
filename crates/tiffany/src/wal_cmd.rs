//! `tiffany wal inspect|verify|dump`: look into a log directory without
//! changing it (the log is opened read-only, without its lock, so this
//! works beside a running node; records it appends meanwhile are not seen).

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use tiffany_wal::{Lsn, RecoveryReport, SegmentInfo, Wal, WalConfig};

/// The `wal` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
    /// Show the segments, their LSN ranges and sizes (compressed ones with
    /// their compression ratio), the newest checkpoint, and anything
    /// recovery would repair.
    Inspect {
        /// The log directory.
        dir: PathBuf,
    },
    /// Check every record's checksum and the LSN chain; exit status 1 and
    /// the place of the damage when anything is wrong.
    Verify {
        /// The log directory.
        dir: PathBuf,
    },
    /// Print records, one per line.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First LSN to print [default: the oldest the log holds]
        #[arg(long, value_name = "LSN")]
        from: Option<u64>,
        /// Stop before this LSN [default: after the last]
        #[arg(long, value_name = "LSN")]
        to: Option<u64>,
        /// Only records of this stream (agent)
        #[arg(long, value_name = "ID")]
        stream: Option<u64>,
        /// One JSON object per line: lsn, stream, checkpoint, len, and the
        /// payload as text when it is UTF-8, else as hex
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: WalCommand) -> Result<()> {
    match command {
        WalCommand::Inspect { dir } => inspect(&dir),
        WalCommand::Verify { dir } => verify(&dir),
        WalCommand::Dump {
            dir,
            from,
            to,
            stream,
            json,
        } => dump(&dir, from.map(Lsn), to.map(Lsn), stream, json),
    }
}

fn open(dir: &Path) -> Result<(Wal, RecoveryReport)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Wal::open_read_only(dir, WalConfig::default())
        .with_context(|| format!("cannot read the log in {}", dir.display()))
}

fn inspect(dir: &Path) -> Result<()> {
    let (wal, report) = open(dir)?;
    let segments = wal.segments()?;
    let mut out = io::stdout().lock();
    writeln!(out, "log {}", dir.display())?;
    let archived: Vec<&SegmentInfo> = segments.iter().filter(|s| s.archived).collect();
    writeln!(
        out,
        "records: LSN {}..={} ({} segments live, {} archived, {} slots free)",
        report.first_lsn,
        report.last_lsn,
        segments.len(),
        archived.len(),
        wal.free_slots()?
    )?;
    if !archived.is_empty() {
        let raw: u64 = archived.iter().map(|s| s.used_bytes).sum();
        let on_disk: u64 = archived.iter().map(|s| s.size).sum();
        writeln!(
            out,
            "archives: {} of segments compressed to {} ({})",
            human_bytes(raw),
            human_bytes(on_disk),
            ratio(raw as f64 / on_disk.max(1) as f64)
        )?;
    }
    match &report.checkpoint {
        Some(c) => writeln!(
            out,
            "checkpoint: LSN {} (snapshot {}), {} past it{}",
            c.lsn,
            render_payload(&c.snapshot_ref),
            human_bytes(report.tail_bytes),
            if report.tail_over_cap {
                " - over the cap: checkpoint soon"
            } else {
                ""
            }
        )?,
        None => writeln!(
            out,
            "checkpoint: none ({} of records)",
            human_bytes(report.tail_bytes)
        )?,
    }
    writeln!(
        out,
        "{:>5}  {:>6}  {:>21}  {:>11}  {:>9}  state",
        "slot", "seq", "LSNs", "used", "size"
    )?;
    for s in &segments {
        let lsns = if s.last_lsn < s.first_lsn {
            "(empty)".to_owned()
        } else {
            format!("{}..={}", s.first_lsn, s.last_lsn)
        };
        let state = match s.compression_ratio() {
            Some(r) => format!("archived, {}", ratio(r)),
            None if s.sealed => "sealed".to_owned(),
            None => "active".to_owned(),
        };
        writeln!(
            out,
            "{:>5}  {:>6}  {:>21}  {:>11}  {:>9}  {state}",
            s.slot
                .map_or_else(|| "-".to_owned(), |slot| slot.to_string()),
            s.seq,
            lsns,
            human_bytes(s.used_bytes),
            human_bytes(s.size),
        )?;
    }
    report_repairs(&mut out, &report)?;
    Ok(())
}

fn report_repairs(out: &mut impl Write, report: &RecoveryReport) -> io::Result<()> {
    if let Some(t) = report.torn_tail {
        writeln!(
            out,
            "torn tail: slot {} offset {} (cut on the next open)",
            t.slot, t.offset
        )?;
    }
    if let Some((t, why)) = &report.truncated_corruption {
        writeln!(out, "damage: slot {} offset {}: {why}", t.slot, t.offset)?;
    }
    if !report.reclaimed_slots.is_empty() {
        writeln!(
            out,
            "slots with unreadable headers (interrupted rotations): {:?}",
            report.reclaimed_slots
        )?;
    }
    Ok(())
}

fn verify(dir: &Path) -> Result<()> {
    let started = Instant::now();
    let (wal, report) = open(dir)?;
    let total: u64 = wal.segments()?.iter().map(|s| s.used_bytes).sum();
    let progress = progress_bar(total);
    let mut records = 0u64;
    let mut bytes = 0u64;
    for record in wal.replay(..)? {
        let record = record.with_context(|| format!("verifying {}", dir.display()))?;
        records += 1;
        bytes += record.payload().len() as u64;
        if records % 4096 == 0 {
            progress.set_position(bytes);
        }
    }
    progress.finish_and_clear();
    let mut out = io::stdout().lock();
    report_repairs(&mut out, &report)?;
    writeln!(
        out,
        "ok: {records} records (LSN {}..={}), {} of payload checked in {}",
        report.first_lsn,
        report.last_lsn,
        human_bytes(bytes),
        human_duration(started.elapsed())
    )?;
    Ok(())
}

fn dump(
    dir: &Path,
    from: Option<Lsn>,
    to: Option<Lsn>,
    stream: Option<u64>,
    json: bool,
) -> Result<()> {
    let (wal, _) = open(dir)?;
    let first = wal.first_lsn()?;
    let from = from.unwrap_or(first);
    let to = to.unwrap_or(Lsn(wal.last_lsn().0 + 1));
    let mut replay = wal.replay(from..to)?;
    if let Some(stream) = stream {
        replay = replay.stream(stream);
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    for record in replay {
        let record = record.with_context(|| format!("reading {}", dir.display()))?;
        let payload = record.payload();
        if json {
            let line = serde_json::json!({
                "lsn": record.lsn().0,
                "stream": record.stream(),
                "checkpoint": record.is_checkpoint(),
                "len": payload.len(),
                "payload": render_payload(payload),
            });
            // A node's journal event replaces the raw bytes.
            let mut line = line;
            if let Some(event) = journal_event(&record) {
                line["journal"] = event.to_json();
                line.as_object_mut().map(|o| o.remove("payload"));
            }
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{:>10}  stream {:<6} {:>7} B{}  {}",
                record.lsn(),
                record.stream(),
                payload.len(),
                if record.is_checkpoint() {
                    "  checkpoint"
                } else {
                    ""
                },
                journal_event(&record).map_or_else(|| render_payload(payload), |e| e.to_string())
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The agent journal event a record holds, if it is one (a node's WAL);
/// other logs' records are shown as raw payloads.
fn journal_event<V: AsRef<[u8]>>(record: &tiffany_wal::Record<V>) -> Option<tiffany_agent::Event> {
    if record.is_checkpoint() {
        return None;
    }
    tiffany_agent::Event::decode(record.payload()).ok()
}

/// Text when the bytes are UTF-8 (control characters escaped), else hex.
fn render_payload(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.escape_debug().to_string(),
        Err(_) => {
            let mut hex = String::with_capacity(bytes.len() * 2 + 4);
            hex.push_str("hex:");
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            hex
        }
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} verifying {bytes}/{total_bytes} {wide_bar} {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("B"))
    }
}

/// A compression ratio: `3.2x smaller`.
fn ratio(r: f64) -> String {
    format!("{r:.1}x smaller")
}

fn human_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} us", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_cmd_renders_payloads_and_sizes() {
        assert_eq!(render_payload(b"plan\nstep"), "plan\\nstep");
        assert_eq!(render_payload(&[0xff, 0x00]), "hex:ff00");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(ratio(3.04), "3.0x smaller");
    }
}
