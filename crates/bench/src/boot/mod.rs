//! The `boot` suite: how long a node takes from the start of its process
//! until every unfinished task runs again, for a node of 10,000 agents and
//! for one agent alone.
//!
//! | metric | workload (quick size) | goal |
//! |---|---|---|
//! | `boot.node_ready_ms` | 10,000 agents (1,000), each with one unfinished task of 25 journaled cycles: about 1.03M journal records (103k), snapshots at the default cadence (100,000 records or 32 MiB); process exec to `Node::open` returned with every task resumed, journal page cache dropped | <= 300 ms; spec 1 s |
//! | `boot.agent_ready_ms` | one agent whose unfinished task has 300 journaled cycles (1,203 records); the same span | <= 5 ms |
//!
//! Contenders: `tiffany` (ours) and `process_exec_floor`, a child of the
//! same binary that reports as soon as it runs: the part of every figure
//! that is process creation, loading and argument parsing.
//!
//! Invariants:
//! - each data set is written once per suite run, untimed, by a node whose
//!   planner never answers after the last journaled cycle ([`Stalling`]),
//!   so every task is left waiting on the LLM; the node is then dropped
//!   without `shutdown` (no final snapshot, no clean-shutdown marker), as
//!   after a kill;
//! - every sample boots a fresh copy of the journal (a boot appends to it)
//!   whose page cache was dropped, in a fresh child process; the child
//!   stamps its readiness on the clock the parent stamped its spawn with
//!   ([`monotonic_ns`]) and checks that it resumed every task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use tiffany_agent::{Node, NodeConfig};
use tiffany_wal::{SyncMode, Wal, WalConfig};

use crate::agent::setup::{INSTRUCTION, Stalling, create_agents, node_config, skills};
use crate::child::measure_in_child;
use crate::measure::{Bench, Measured, Named};
use crate::os::{CacheDrop, drop_page_cache, monotonic_ns, peak_rss_bytes};
use crate::progress::Progress;
use crate::report::{Better, Metric};
use crate::sample::{Plan, pick};
use crate::scratch::ScratchDir;

/// Our contender's name.
const OURS: &str = "tiffany";
/// The baseline's name.
const FLOOR: &str = "process_exec_floor";
/// How long building a data set may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// A journal to boot: a data directory left by a killed node.
struct DataSet {
    dir: PathBuf,
    agents: usize,
    tool_steps: usize,
    /// Records in its journal (its last LSN).
    records: u64,
    /// Bytes of its journal's files.
    bytes: u64,
}

impl DataSet {
    /// Runs `agents` tasks of `tool_steps` cycles each into the node at
    /// `dir`, leaves them unfinished and drops the node.
    // Blocking on purpose: the harness polls its node from its own thread.
    #[allow(clippy::disallowed_methods)]
    fn build(dir: PathBuf, agents: usize, tool_steps: usize) -> Result<Self> {
        let llm = Arc::new(Stalling::new(tool_steps));
        let config = node_config(&dir, SyncMode::Buffer, tool_steps);
        let (node, _) = Node::open(config, Arc::clone(&llm) as _, skills())?;
        for agent in create_agents(&node, agents)? {
            node.submit(agent, INSTRUCTION)?;
        }
        let start = Instant::now();
        while llm.stalled() < agents {
            ensure!(
                start.elapsed() < BUILD_TIMEOUT,
                "only {} of {agents} tasks reached their last step in {BUILD_TIMEOUT:?}",
                llm.stalled()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        node.flush()?;
        drop(node);
        let wal_dir = dir.join("wal");
        let (wal, _) = Wal::open_read_only(&wal_dir, WalConfig::default())?;
        let records = wal.last_lsn().0;
        drop(wal);
        let bytes = files_under(&wal_dir)?
            .iter()
            .map(|f| f.metadata().map(|m| m.len()))
            .sum::<std::io::Result<u64>>()?;
        Ok(DataSet {
            dir,
            agents,
            tool_steps,
            records,
            bytes,
        })
    }

    fn params(&self) -> [(&'static str, Value); 6] {
        let defaults = NodeConfig::new("");
        [
            ("agents", json!(self.agents)),
            ("journaled_cycles_per_task", json!(self.tool_steps)),
            ("journal_records", json!(self.records)),
            ("journal_bytes", json!(self.bytes)),
            ("snapshot_every_bytes", json!(defaults.snapshot_every_bytes)),
            (
                "snapshot_every_records",
                json!(defaults.snapshot_every_records),
            ),
        ]
    }
}

/// Who boots.
enum Boot<'a> {
    /// Ours: a node over a copy of this data set.
    Node(&'a DataSet),
    /// The same binary, reporting at once.
    Floor,
}

impl Named for Boot<'_> {
    fn name(&self) -> &'static str {
        match self {
            Boot::Node(_) => OURS,
            Boot::Floor => FLOOR,
        }
    }
}

/// One boot.
#[derive(Debug, Clone, Copy)]
struct BootSample {
    /// Spawn to ready, as the child saw it.
    ready_ms: f64,
    /// `Node::open` (and the planner and skills set-up before it) alone.
    open_ms: f64,
    /// Journal records replayed (after the snapshot).
    replayed: f64,
    rss_mib: f64,
    cache: Option<CacheDrop>,
}

impl Boot<'_> {
    fn run(&self, root: &Path) -> Result<BootSample> {
        let Boot::Node(data) = self else {
            let out = measure_in_child("boot.exec_floor", &[monotonic_ns().to_string()])?;
            return Ok(BootSample {
                ready_ms: field(&out, "ready_ms")?,
                open_ms: 0.0,
                replayed: 0.0,
                rss_mib: 0.0,
                cache: None,
            });
        };
        let copy = ScratchDir::new_in(root, "boot-copy")?;
        let files = copy_dir(&data.dir.join("wal"), &copy.path().join("wal"))?;
        let cache = drop_page_cache(&files, true)?;
        let args = [
            copy.path().display().to_string(),
            data.tool_steps.to_string(),
            data.agents.to_string(),
            monotonic_ns().to_string(),
        ];
        let out = measure_in_child("boot.open", &args)?;
        Ok(BootSample {
            ready_ms: field(&out, "ready_ms")?,
            open_ms: field(&out, "open_ms")?,
            replayed: field(&out, "replayed")?,
            rss_mib: field(&out, "rss_hwm_bytes")? / f64::from(1 << 20),
            cache: Some(cache),
        })
    }
}

fn field(v: &Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("no {key} in {v}"))
}

/// Workload sizes: full, or quick for CI smoke runs.
struct Sizes {
    node_agents: usize,
    node_tool_steps: usize,
    agent_tool_steps: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        Sizes {
            node_agents: pick(quick, 10_000, 1_000),
            node_tool_steps: 25,
            agent_tool_steps: 300,
        }
    }
}

/// Runs the whole suite and returns its metrics in table order.
pub(crate) fn run(quick: bool, progress: &mut Progress) -> Result<Vec<Metric>> {
    let sizes = Sizes::new(quick);
    let root = ScratchDir::new("boot")?;
    let mut bench = Bench::new(Plan::for_mode(quick), progress);
    bench.note("boot: writing the journals");
    let node = DataSet::build(
        root.path().join("node"),
        sizes.node_agents,
        sizes.node_tool_steps,
    )?;
    let agent = DataSet::build(root.path().join("agent"), 1, sizes.agent_tool_steps)?;
    let mut metrics = Vec::new();
    for (name, data, goal) in [
        ("boot.node_ready_ms", &node, 300.0),
        ("boot.agent_ready_ms", &agent, 5.0),
    ] {
        let m = bench.measure(name, &[&Boot::Node(data), &Boot::Floor], |b| {
            b.run(root.path())
        })?;
        let mut metric = m
            .metric(name, "ms", Better::Lower, |s| s.ready_ms)?
            .goal(goal)
            .params(&data.params())
            .params(&sample_params(&m)?);
        if data.agents > 1 {
            metric = metric.spec_target(1_000.0);
        }
        metrics.push(metric);
    }
    Ok(metrics)
}

fn sample_params(m: &Measured<BootSample>) -> Result<[(&'static str, Value); 7]> {
    let ours = m.outputs_of(OURS)?;
    let cache: Vec<&CacheDrop> = ours.iter().filter_map(|s| s.cache.as_ref()).collect();
    let resident = cache.iter().map(|c| c.resident).fold(0.0, f64::max);
    let method = cache.first().map(|c| c.method.as_str());
    Ok([
        ("open_ms", json!(m.median_of(OURS, |s| s.open_ms)?)),
        (
            "records_replayed",
            json!(m.median_of(OURS, |s| s.replayed)?),
        ),
        ("rss_hwm_mib", json!(m.median_of(OURS, |s| s.rss_mib)?)),
        ("page_cache", json!(method)),
        ("resident_after_drop_max", json!(resident)),
        (
            "shutdown",
            json!(
                "none: the node was dropped as after a kill; recovery reads the last periodic snapshot and the journal after it"
            ),
        ),
        (
            "span",
            json!(
                "parent's clock before spawn to the child's clock after Node::open returned with every unfinished task started"
            ),
        ),
    ])
}

/// Copies every file under `from` to the same place under `to`; returns
/// the copies.
// Blocking on purpose: set-up between samples, not a task.
#[allow(clippy::disallowed_methods)]
fn copy_dir(from: &Path, to: &Path) -> Result<Vec<PathBuf>> {
    let mut copies = Vec::new();
    for file in files_under(from)? {
        let target = to.join(file.strip_prefix(from)?);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        copy_sparse(&file, &target)
            .with_context(|| format!("cannot copy {} to {}", file.display(), target.display()))?;
        copies.push(target);
    }
    Ok(copies)
}

/// Copies `from` to `to` leaving its all-zero blocks as holes, as the
/// log's never-written preallocated ranges are in the original (a plain
/// copy would turn them into data that recovery has to read).
#[allow(clippy::disallowed_methods)]
fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 64 << 10;
    let mut source = std::fs::File::open(from)?;
    let target = std::fs::File::create(to)?;
    let mut buf = vec![0u8; BLOCK];
    let mut at = 0u64;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match source.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().any(|&b| b != 0) {
            target.write_all_at(&buf[..filled], at)?;
        }
        at += filled as u64;
    }
    target.set_len(at)?;
    target.sync_all()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// Runs a child measurement of this suite (see [`crate::child`]).
pub(crate) fn run_child(entry: &str, args: &[String]) -> Result<Value> {
    match (entry, args) {
        ("exec_floor", [spawned]) => {
            let ready = monotonic_ns();
            Ok(json!({ "ready_ms": since_ms(spawned, ready)? }))
        }
        ("open", [dir, tool_steps, expected, spawned]) => {
            let main = monotonic_ns();
            let tool_steps: usize = tool_steps.parse().context("tool_steps")?;
            let config = node_config(Path::new(dir), SyncMode::Data, tool_steps);
            let (node, recovery) = Node::open(config, Arc::new(Stalling::new(0)), skills())?;
            let ready = monotonic_ns();
            let expected: usize = expected.parse().context("expected")?;
            ensure!(
                recovery.resumed == expected,
                "resumed {} tasks, expected {expected}",
                recovery.resumed
            );
            let out = json!({
                "ready_ms": since_ms(spawned, ready)?,
                "open_ms": (ready - main) as f64 / 1e6,
                "replayed": recovery.records,
                "rss_hwm_bytes": peak_rss_bytes()?,
            });
            drop(node);
            Ok(out)
        }
        _ => bail!("unknown child measurement `boot.{entry}` {args:?}"),
    }
}

/// Milliseconds from the parent's stamp `spawned` to `now`.
fn since_ms(spawned: &str, now: u64) -> Result<f64> {
    let spawned: u64 = spawned.parse().context("spawn time")?;
    Ok(now.saturating_sub(spawned) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_a_small_node_resumes_every_task_in_a_copy() {
        let root = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-boot-test").unwrap();
        let data = DataSet::build(root.path().join("n"), 3, 2).unwrap();
        assert_eq!(data.records, 3 * (2 + 4 * 2 + 1));
        assert!(data.bytes > 0);
        let copy = root.path().join("copy");
        let files = copy_dir(&data.dir.join("wal"), &copy.join("wal")).unwrap();
        assert!(!files.is_empty());
        let args = [
            copy.display().to_string(),
            "2".into(),
            "3".into(),
            monotonic_ns().to_string(),
        ];
        let out = run_child("open", &args).unwrap();
        assert!(field(&out, "ready_ms").unwrap() > 0.0, "{out}");
        assert!(run_child("open", &args[..2]).is_err());
    }
}
