//! The `wal` suite: `tiffany-wal` against raw `fdatasync` loops, okaywal and
//! SQLite, on the disk of the working directory, with 256-byte payloads.
//!
//! | metric | workload (quick size) | goal |
//! |---|---|---|
//! | `wal.fdatasync_raw_p50_us`, `_mean_us` | baseline: one writer, `pwrite` 256 B at increasing offsets of a preallocated, pre-written file + `fdatasync`; up to 20,000 appends or 5 s per sample (2,000 or 0.4 s) | - |
//! | `wal.append_durable_p50_us`, `_mean_us` | ours, one writer, `SyncMode::Data`; same budget | p50 <= 1.15x raw p50, mean <= 1.3x raw mean; spec 2 ms (mean) |
//! | `wal.append_buffered_p50_ns`, `_p99_ns` | ours, one writer, `SyncMode::Buffer`; up to 200,000 appends (20,000) | <= 2,000 ns, <= 20,000 ns |
//! | `wal.group_commit_32w_ops` | 32 threads appending durably; up to 1,000 appends each or 3 s (200 or 0.5 s) | >= 25,000/s, >= 2x okaywal |
//! | `wal.replay_warm_gbps` | CRC-checked replay of 1 GiB of payload (64 MiB), page cache warm, one core | >= 2 GB/s |
//! | `wal.compressed_replay_gbps` | the same of a compressed log of text payloads; ratio in params | - |
//! | `wal.recover_ms` | open-to-ready with 128 MiB of log past the last checkpoint (32 MiB), page cache dropped | <= 300 ms; spec 1 s |
//!
//! Contenders ([`Named`]): `tiffany` (ours, built with the `wal` feature,
//! [`ours`]); `fdatasync_raw`, `raw_group_commit`, `raw_read_crc` and
//! `raw_read_crc_cold` ([`raw`]), the baselines of what the disk and the CPU
//! allow with no log format at all; `okaywal` ([`okaywal_peer`]); `sqlite`
//! ([`sqlite_peer`]).
//!
//! Invariants:
//! - every log lives in a fresh directory under [`ScratchDir`] (by default
//!   `./target/bench-tmp`, the disk of the working directory, never a
//!   tmpfs), opened fresh for every append run and removed after it;
//! - a durable contender's `append` returns only once its record would
//!   survive a power loss (`fdatasync`, or SQLite's `fsync`);
//! - every metric of ours with peers is measured interleaved with them
//!   (ours first); a metric ours cannot produce yet (compressed replay) is
//!   [`Metric::pending`] and its peers run alone;
//! - payloads are seeded ([`SEED`]): random bytes, except the compressed
//!   replay's, which are text shaped like journal entries.

mod okaywal_peer;
pub(crate) mod ours;
mod raw;
pub(crate) mod sqlite_peer;
pub(crate) mod workload;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use crate::measure::{Bench, Measured, Named};
use crate::os::{filesystem, in_memory};
use crate::progress::Progress;
use crate::report::{Better, Metric};
use crate::sample::Plan;
use crate::scratch::ScratchDir;
use okaywal_peer::OkayWal;
use raw::{RawFdatasync, RawFile, RawGroupCommit};
use sqlite_peer::Sqlite;
use workload::{
    Budget, ColdSample, LatencySample, Payloads, ThroughputSample, append_latency,
    append_throughput, cold_start, replay_gbps,
};

/// Our contender's name.
pub(crate) const OURS: &str = "tiffany";
/// Every payload's length in bytes.
const PAYLOAD_LEN: usize = 256;
/// The seed of every payload set.
const SEED: u64 = 0x7466_7977_616c; // "tfywal"
/// How many distinct payloads a run cycles through.
const DISTINCT_PAYLOADS: usize = 4096;
/// Concurrent appenders in the group-commit workload.
const GROUP_WRITERS: usize = 32;

/// A log that appenders write to, opened fresh for every run.
pub(crate) trait AppendLog: Named + Sync {
    /// How this contender is set up and what an append promises, for the
    /// report's params.
    fn setup(&self) -> String;

    /// Opens a new log in the empty directory `dir` with room for
    /// `plan.appends` appends, and returns `plan.writers` appenders to it.
    fn open(&self, dir: &Path, plan: &OpenPlan) -> Result<Vec<Box<dyn Appender>>>;
}

/// What [`AppendLog::open`] must provide for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenPlan {
    /// How many appenders (one per thread).
    pub(crate) writers: usize,
    /// The most appends all of them together will make.
    pub(crate) appends: u64,
    /// Every payload's length.
    pub(crate) payload_len: usize,
}

impl OpenPlan {
    /// Payload bytes the log must hold.
    pub(crate) fn payload_bytes(&self) -> u64 {
        self.appends * self.payload_len as u64
    }
}

/// One writer's handle to an open log; owned by one thread.
pub(crate) trait Appender: Send {
    /// Appends `payload` to `stream` and returns once it is as durable as
    /// the contender promises ([`AppendLog::setup`]).
    fn append(&mut self, stream: u64, payload: &[u8]) -> Result<()>;
}

/// A log prepared once per workload, read back whole on every run.
pub(crate) trait ReplaySource: Named {
    /// Reads every record once, checking every checksum, and returns the
    /// payload bytes read.
    fn replay(&self) -> Result<u64>;
}

/// A log prepared once per workload and started from disk on every run.
pub(crate) trait ColdStart: Named {
    /// The files whose page cache is dropped before each start.
    fn files(&self) -> Result<Vec<PathBuf>>;

    /// Starts: recovers (ours) or reads (a baseline) until ready. The value
    /// returned is dropped after the clock stops.
    fn start(&self) -> Result<Box<dyn Any>>;
}

/// Our side of a workload: built, or pending for a reason.
pub(crate) enum Ours<T> {
    /// Our contender, ready to measure.
    // Only `ours.rs` (the `wal` feature) builds one.
    Built(T),
    /// Not measurable in this build, and why.
    Pending(&'static str),
}

impl<T> Ours<T> {
    /// Our contender, when built.
    fn built(&self) -> Option<&T> {
        match self {
            Ours::Built(ours) => Some(ours),
            Ours::Pending(_) => None,
        }
    }

    /// Why ours is pending (empty when built).
    fn reason(&self) -> &'static str {
        match self {
            Ours::Built(_) => "",
            Ours::Pending(reason) => reason,
        }
    }
}

/// The contenders of a workload: ours first, when built, then the peers.
fn contenders<'a, C: ?Sized>(ours: Option<&'a C>, peers: &[&'a C]) -> Vec<&'a C> {
    ours.into_iter().chain(peers.iter().copied()).collect()
}

/// How durable our appends are, in the bench's own terms (the `SyncMode`
/// of `tiffany-wal` exists only with the `wal` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `SyncMode::Buffer`: in the page cache, no system call per append.
    Buffer,
    /// `SyncMode::Data`: after an `fdatasync` covering the record.
    Data,
}

/// Workload sizes: full, or quick for CI smoke runs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    durable: Budget,
    buffered: Budget,
    /// Per writer.
    group: Budget,
    replay_bytes: u64,
    recovery_bytes: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let pick = |full, quick_size| if quick { quick_size } else { full };
        Sizes {
            durable: Budget {
                appends: pick(20_000, 2_000),
                min_appends: 100,
                time: Duration::from_millis(pick(5_000, 400)),
            },
            buffered: Budget {
                appends: pick(200_000, 20_000),
                min_appends: 1_000,
                time: Duration::from_secs(pick(10, 2)),
            },
            group: Budget {
                appends: pick(1_000, 200),
                min_appends: 1,
                time: Duration::from_millis(pick(3_000, 500)),
            },
            replay_bytes: pick(1 << 30, 64 << 20),
            recovery_bytes: pick(128 << 20, 32 << 20),
        }
    }
}

/// Runs the whole suite and returns its metrics in table order.
pub(crate) fn run(quick: bool, progress: &mut Progress) -> Result<Vec<Metric>> {
    let sizes = Sizes::new(quick);
    let root = ScratchDir::new("wal")?;
    let fs = filesystem(root.path())?;
    ensure!(
        !in_memory(&fs),
        "{} is on a {fs}: the wal suite measures a disk; point {} at a directory on one",
        root.path().display(),
        crate::scratch::BENCH_DIR_ENV
    );
    let random = Payloads::random(SEED, DISTINCT_PAYLOADS, PAYLOAD_LEN);
    let text = Payloads::text(SEED, DISTINCT_PAYLOADS, PAYLOAD_LEN);
    let mut suite = Suite {
        bench: Bench::new(Plan::for_mode(quick), progress),
        root: root.path(),
        sizes,
        random: &random,
        text: &text,
    };
    let mut metrics = Vec::new();
    metrics.extend(suite.append_durable()?);
    metrics.extend(suite.append_buffered()?);
    metrics.extend(suite.group_commit()?);
    metrics.extend(suite.replay_warm()?);
    metrics.extend(suite.compressed_replay()?);
    metrics.extend(suite.recover()?);
    let root_dir = root.path().display().to_string();
    Ok(metrics
        .into_iter()
        .map(|m| {
            m.param("payload_bytes", PAYLOAD_LEN)
                .param("seed", SEED)
                .param("dir", root_dir.as_str())
                .param("filesystem", fs.as_str())
        })
        .collect())
}

/// What every workload of one run shares.
struct Suite<'a, 'p> {
    bench: Bench<'p>,
    root: &'a Path,
    sizes: Sizes,
    random: &'a Payloads,
    text: &'a Payloads,
}

impl Suite<'_, '_> {
    fn append_durable(&mut self) -> Result<Vec<Metric>> {
        let ours = ours::append_log(Durability::Data);
        let logs = contenders(ours.built().copied(), &[&RawFdatasync, &OkayWal, &Sqlite]);
        let (budget, root, payloads) = (self.sizes.durable, self.root, self.random);
        let m = self.bench.measure("wal.append_durable", &logs, |log| {
            let dir = ScratchDir::new_in(root, log.name())?;
            append_latency(log, dir.path(), budget, payloads)
        })?;
        let params = [
            budget_params(&budget),
            ("setups", setups(&logs)),
            (
                "appends_per_sample_min",
                min_appends(&m, &logs, |s| s.appends)?,
            ),
            ("writers", json!(1)),
            ("data", json!("random bytes")),
        ];
        let raw = RawFdatasync.name();
        let us = |f: fn(&LatencySample) -> f64| move |s: &LatencySample| f(s) * 1e6;
        let reason = ours.reason();
        Ok(vec![
            m.metric_alone(
                raw,
                "wal.fdatasync_raw_p50_us",
                "us",
                Better::Lower,
                us(|s| s.p50),
            )?
            .params(&params),
            m.metric_alone(
                raw,
                "wal.fdatasync_raw_mean_us",
                "us",
                Better::Lower,
                us(|s| s.mean),
            )?
            .params(&params),
            m.metric_or_pending(
                OURS,
                reason,
                "wal.append_durable_p50_us",
                "us",
                Better::Lower,
                us(|s| s.p50),
            )?
            .ratio_bound(raw, 1.15)
            .params(&params),
            m.metric_or_pending(
                OURS,
                reason,
                "wal.append_durable_mean_us",
                "us",
                Better::Lower,
                us(|s| s.mean),
            )?
            .ratio_bound(raw, 1.3)
            .spec_target(2_000.0)
            .params(&params)
            .param("spec_target_statistic", "mean"),
        ])
    }

    fn append_buffered(&mut self) -> Result<Vec<Metric>> {
        // okaywal always waits for its fdatasync before a commit returns, and
        // SQLite has no append without a transaction: no peer.
        let ours = ours::append_log(Durability::Buffer);
        let logs = contenders(ours.built().copied(), &[]);
        let (budget, root, payloads) = (self.sizes.buffered, self.root, self.random);
        let m = self.measure_if_any("wal.append_buffered", &logs, |log| {
            let dir = ScratchDir::new_in(root, log.name())?;
            append_latency(log, dir.path(), budget, payloads)
        })?;
        let params = [
            budget_params(&budget),
            ("writers", json!(1)),
            (
                "peers",
                json!("none: okaywal commits always wait for fdatasync"),
            ),
        ];
        let ns = |f: fn(&LatencySample) -> f64| move |s: &LatencySample| f(s) * 1e9;
        let reason = ours.reason();
        Ok(vec![
            m.metric_or_pending(
                OURS,
                reason,
                "wal.append_buffered_p50_ns",
                "ns",
                Better::Lower,
                ns(|s| s.p50),
            )?
            .goal(2_000.0)
            .params(&params),
            m.metric_or_pending(
                OURS,
                reason,
                "wal.append_buffered_p99_ns",
                "ns",
                Better::Lower,
                ns(|s| s.p99),
            )?
            .goal(20_000.0)
            .params(&params),
        ])
    }

    fn group_commit(&mut self) -> Result<Vec<Metric>> {
        let ours = ours::append_log(Durability::Data);
        let logs = contenders(ours.built().copied(), &[&OkayWal, &Sqlite, &RawGroupCommit]);
        let (budget, root, payloads) = (self.sizes.group, self.root, self.random);
        let m = self.bench.measure("wal.group_commit_32w", &logs, |log| {
            let dir = ScratchDir::new_in(root, log.name())?;
            append_throughput(log, dir.path(), GROUP_WRITERS, budget, payloads)
        })?;
        let params = [
            budget_params(&budget),
            ("budget_per", json!("writer")),
            ("writers", json!(GROUP_WRITERS)),
            ("setups", setups(&logs)),
            (
                "appends_per_sample_min",
                min_appends(&m, &logs, |s: &ThroughputSample| s.appends)?,
            ),
        ];
        Ok(vec![
            m.metric_or_pending(
                OURS,
                ours.reason(),
                "wal.group_commit_32w_ops",
                "ops/s",
                Better::Higher,
                |s| s.ops_per_sec,
            )?
            .goal(25_000.0)
            .ratio_goal(OkayWal.name(), 2.0)
            .params(&params),
        ])
    }

    fn replay_warm(&mut self) -> Result<Vec<Metric>> {
        let bytes = self.sizes.replay_bytes;
        let ours_dir = ScratchDir::new_in(self.root, "replay-ours")?;
        let raw_dir = ScratchDir::new_in(self.root, "replay-raw")?;
        self.bench.note("wal.replay_warm: writing the logs");
        let ours = ours::replay_source(ours_dir.path(), bytes, self.random)?;
        let raw = RawFile::create("raw_read_crc", raw_dir.path(), bytes, self.random)?;
        let sources: Vec<&dyn ReplaySource> = contenders(ours.built().map(|s| &**s), &[&raw]);
        let m = self
            .bench
            .measure("wal.replay_warm", &sources, replay_gbps)?;
        Ok(vec![
            m.metric_or_pending(
                OURS,
                ours.reason(),
                "wal.replay_warm_gbps",
                "GB/s",
                Better::Higher,
                |&g| g,
            )?
            .goal(2.0)
            .param("payload_bytes_replayed", bytes)
            .param("page_cache", "warm (the warm-up round reads everything)")
            .param("threads", 1)
            .param("gb", "1e9 bytes of payload")
            .param(
                "raw_read_crc",
                "read(2) in 1 MiB chunks + crc32c crate over a file of the payloads alone",
            ),
        ])
    }

    fn compressed_replay(&mut self) -> Result<Vec<Metric>> {
        let bytes = self.sizes.replay_bytes;
        let dir = ScratchDir::new_in(self.root, "replay-compressed")?;
        self.bench.note("wal.compressed_replay: writing the log");
        let ours = ours::compressed_replay_source(dir.path(), bytes, self.text)?;
        let sources: Vec<&dyn ReplaySource> = contenders(ours.built().map(|(s, _)| &**s), &[]);
        let ratio = ours.built().map(|&(_, ratio)| ratio);
        let m = self.measure_if_any("wal.compressed_replay", &sources, replay_gbps)?;
        let mut metric = m
            .metric_or_pending(
                OURS,
                ours.reason(),
                "wal.compressed_replay_gbps",
                "GB/s",
                Better::Higher,
                |&g| g,
            )?
            .param("payload_bytes_replayed", bytes)
            .param(
                "data",
                "text payloads shaped like journal entries (JSON of words)",
            )
            .param("gb", "1e9 bytes of uncompressed payload");
        if let Some(ratio) = ratio {
            metric = metric.param("compression_ratio", ratio);
        }
        Ok(vec![metric])
    }

    fn recover(&mut self) -> Result<Vec<Metric>> {
        let bytes = self.sizes.recovery_bytes;
        let ours_dir = ScratchDir::new_in(self.root, "recover-ours")?;
        let raw_dir = ScratchDir::new_in(self.root, "recover-raw")?;
        self.bench.note("wal.recover: writing the logs");
        let ours = ours::recovery_source(ours_dir.path(), bytes, self.random)?;
        let raw = RawFile::create("raw_read_crc_cold", raw_dir.path(), bytes, self.random)?;
        let sources: Vec<&dyn ColdStart> = contenders(ours.built().map(|s| &**s), &[&raw]);
        let m = self.bench.measure("wal.recover", &sources, cold_start)?;
        Ok(vec![
            m.metric_or_pending(OURS, ours.reason(), "wal.recover_ms", "ms", Better::Lower, |s: &ColdSample| s.ms)?
                .goal(300.0)
                .spec_target(1_000.0)
                .param("tail_bytes_past_checkpoint", bytes)
                .param("page_cache", cache_methods(&m, &sources)?)
                .param("resident_after_drop_max", max_resident(&m, &sources)?)
                .param("raw_read_crc_cold", "read(2) + crc32c of a file as large as the tail, cold: the disk's floor for a recovery that reads its tail"),
        ])
    }

    /// [`Bench::measure`], or nothing measured when there is no contender.
    fn measure_if_any<C: Named + ?Sized, O>(
        &mut self,
        workload: &str,
        contenders: &[&C],
        run: impl FnMut(&C) -> Result<O>,
    ) -> Result<Measured<O>> {
        if contenders.is_empty() {
            Ok(Measured::empty())
        } else {
            self.bench.measure(workload, contenders, run)
        }
    }
}

fn budget_params(budget: &Budget) -> (&'static str, Value) {
    (
        "budget",
        json!({
            "max_appends": budget.appends,
            "min_appends": budget.min_appends,
            "time_cap_s": budget.time.as_secs_f64(),
        }),
    )
}

fn setups(logs: &[&dyn AppendLog]) -> Value {
    logs.iter()
        .map(|log| (log.name().to_owned(), Value::from(log.setup())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The fewest appends any sample of each contender made.
fn min_appends<O, C: Named + ?Sized>(
    m: &Measured<O>,
    contenders: &[&C],
    appends: impl Fn(&O) -> u64,
) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for c in contenders {
        let min = m.outputs_of(c.name())?.iter().map(&appends).min();
        out.insert(c.name().to_owned(), json!(min));
    }
    Ok(out.into())
}

/// The cache-drop methods used per contender (`a, b` when samples differed).
fn cache_methods(m: &Measured<ColdSample>, sources: &[&dyn ColdStart]) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for source in sources {
        let mut methods: Vec<&str> = m
            .outputs_of(source.name())?
            .iter()
            .map(|s| s.cache.method.as_str())
            .collect();
        methods.sort_unstable();
        methods.dedup();
        out.insert(source.name().to_owned(), json!(methods.join(", ")));
    }
    Ok(out.into())
}

/// The largest share of a contender's files left resident by a drop.
fn max_resident(m: &Measured<ColdSample>, sources: &[&dyn ColdStart]) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for source in sources {
        let max = m
            .outputs_of(source.name())?
            .iter()
            .map(|s| s.cache.resident)
            .fold(0.0, f64::max);
        out.insert(source.name().to_owned(), json!(max));
    }
    Ok(out.into())
}
