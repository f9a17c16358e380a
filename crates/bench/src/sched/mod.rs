//! The `sched` suite: `tiffany-sched` on one worker against single-threaded
//! peers, each measured in the same run, interleaved sample by sample.
//!
//! | metric | workload (quick size) | goal |
//! |---|---|---|
//! | `sched.yield_1task_ns` | one task, 10M yields (1M), I/O on | <= 40 ns |
//! | `sched.yield_1000tasks_ns` | 1,000 tasks x 10,000 yields (1,000 x 1,000) over 100 agents | <= 40 ns, >= 2x faster than tokio |
//! | `sched.reschedules_per_sec` | 1e9 / `yield_1000tasks_ns`, same run | >= 25M/s per worker; spec 10,000 |
//! | `sched.spawn_run_ns` | spawn + run + free, batches of 1,000 from a task, 1M tasks (100k) | <= 100 ns |
//! | `sched.channel_oneway_ns` | ping-pong of a `u64` over two bounded channels, 1M round trips (100k) | <= 60 ns |
//! | `sched.idle_task_bytes` | RSS growth per task parked on a oneshot, 1M tasks (100k), fresh process per sample | <= 192 B |
//! | `sched.priority_latency_us` | p99 wake latency of a `Critical` task woken from another thread while 8 `Background` tasks spin 5 us per poll; 2,000 wakes (300) | <= 50 us |
//! | `sched.priority_latency_p50_us` | p50 of the same run | - |
//!
//! The contenders are `tiffany` ([`ours`]), `tokio_current_thread` and, for
//! `yield_1task` only, `tokio_current_thread_noio` ([`tokio_peer`]), and
//! `async_executor_local` ([`async_executor_peer`]).
//!
//! Invariants:
//! - every contender runs the same workload at the same size, and
//!   `tiffany` is always the first contender, so it is "ours" in the
//!   [`crate::measure::Measured`] results;
//! - `tiffany` and `tokio_current_thread` both run with their I/O driver on
//!   (the production configuration); the `_noio` peer shows what that costs
//!   tokio;
//! - the resident-memory figure is measured in a child process per sample
//!   (see [`crate::child`]); everything else runs in this process.

mod async_executor_peer;
mod ours;
mod tokio_peer;
mod workload;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::child::measure_in_child;
use crate::measure::Bench;
use crate::progress::Progress;
use crate::report::{Better, Metric};
use crate::sample::{Plan, pick};
use async_executor_peer::AsyncExecutorLocal;
use ours::Tiffany;
use tokio_peer::TokioCurrentThread;
use workload::{LatencyStats, PriorityPlan, SpawnRun, YieldMany};

/// Capacity of every bounded channel in the ping-pong workload.
pub(crate) const CHANNEL_CAPACITY: usize = 64;

/// A runtime that can run the `sched` workloads. Each method builds a fresh
/// runtime, runs one workload to completion and returns what it measured.
pub(crate) trait Contender: Sync {
    /// The name in reports: `tiffany` or the peer's key in `peers`.
    fn name(&self) -> &'static str;
    /// Wall time of one task yielding `yields` times.
    fn yield_one(&self, yields: u64) -> Result<Duration>;
    /// Wall time of `plan.tasks` tasks each yielding `plan.yields_per_task` times.
    fn yield_many(&self, plan: &YieldMany) -> Result<Duration>;
    /// Wall time of spawning, running and freeing `plan.total` empty tasks.
    fn spawn_run(&self, plan: &SpawnRun) -> Result<Duration>;
    /// Wall time of `round_trips` ping-pongs between two tasks.
    fn ping_pong(&self, round_trips: u64) -> Result<Duration>;
    /// Resident bytes per idle task parked on a oneshot; run in a fresh child.
    fn idle_tasks(&self, tasks: usize) -> Result<f64>;
    /// Wake latency of a critical task, one entry per wake.
    fn priority_latency(&self, plan: &PriorityPlan) -> Result<Vec<Duration>>;
}

impl crate::measure::Named for dyn Contender {
    fn name(&self) -> &'static str {
        Contender::name(self)
    }
}

const TIFFANY: &dyn Contender = &Tiffany;
const TOKIO: &dyn Contender = &TokioCurrentThread { io: true };
const TOKIO_NOIO: &dyn Contender = &TokioCurrentThread { io: false };
const ASYNC_EXECUTOR: &dyn Contender = &AsyncExecutorLocal;

/// Ours and the peers measured for every metric.
const CONTENDERS: [&dyn Contender; 3] = [TIFFANY, TOKIO, ASYNC_EXECUTOR];

fn contender(name: &str) -> Result<&'static dyn Contender> {
    [TIFFANY, TOKIO, TOKIO_NOIO, ASYNC_EXECUTOR]
        .into_iter()
        .find(|c| c.name() == name)
        .with_context(|| format!("unknown sched contender `{name}`"))
}

/// Workload sizes: full, or quick for CI smoke runs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    yields_1task: u64,
    many: YieldMany,
    spawn: SpawnRun,
    round_trips: u64,
    idle_tasks: usize,
    priority: PriorityPlan,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        Sizes {
            yields_1task: pick(quick, 10_000_000, 1_000_000),
            many: YieldMany {
                tasks: 1_000,
                yields_per_task: pick(quick, 10_000, 1_000),
                groups: 100,
            },
            spawn: SpawnRun {
                batch: 1_000,
                total: pick(quick, 1_000_000, 100_000),
            },
            round_trips: pick(quick, 1_000_000, 100_000),
            idle_tasks: pick(quick, 1_000_000, 100_000),
            priority: PriorityPlan {
                wakes: pick(quick, 2_000, 300),
                background_tasks: 8,
                spin: Duration::from_micros(5),
                min_gap_us: 200,
                max_gap_us: 1_000,
                seed: 0x7466_6679,
            },
        }
    }
}

/// Measures one workload on every contender and returns its metrics.
type Workload = fn(&mut Bench<'_>, &Sizes) -> Result<Vec<Metric>>;

/// Runs the whole suite and returns its metrics in table order.
pub(crate) fn run(quick: bool, progress: &mut Progress) -> Result<Vec<Metric>> {
    let sizes = Sizes::new(quick);
    let mut bench = Bench::new(Plan::for_mode(quick), progress);
    let workloads: [Workload; 6] = [
        yield_1task,
        yield_1000tasks,
        spawn_run,
        channel_oneway,
        idle_task_bytes,
        priority_latency,
    ];
    let mut metrics = Vec::new();
    for workload in workloads {
        metrics.extend(workload(&mut bench, &sizes)?);
    }
    // Every workload runs on one worker with I/O on (see the module docs).
    Ok(metrics
        .into_iter()
        .map(|m| m.param("workers", 1).param("io", true))
        .collect())
}

fn yield_1task(bench: &mut Bench<'_>, sizes: &Sizes) -> Result<Vec<Metric>> {
    let yields = sizes.yields_1task;
    let name = "sched.yield_1task_ns";
    let m = bench.measure(name, &[TIFFANY, TOKIO, TOKIO_NOIO, ASYNC_EXECUTOR], |c| {
        Ok(ns_per(c.yield_one(yields)?, yields))
    })?;
    Ok(vec![
        m.metric(name, "ns", Better::Lower, |&ns| ns)?
            .goal(40.0)
            .param("yields", yields),
    ])
}

fn yield_1000tasks(bench: &mut Bench<'_>, sizes: &Sizes) -> Result<Vec<Metric>> {
    let many = sizes.many;
    let name = "sched.yield_1000tasks_ns";
    let m = bench.measure(name, &CONTENDERS, |c| {
        Ok(ns_per(c.yield_many(&many)?, many.total_yields()))
    })?;
    let params = [
        ("tasks", json!(many.tasks)),
        ("yields_per_task", json!(many.yields_per_task)),
        ("agents", json!(many.groups)),
    ];
    Ok(vec![
        m.metric(name, "ns", Better::Lower, |&ns| ns)?
            .goal(40.0)
            .ratio_goal(TOKIO.name(), 2.0)
            .params(&params),
        m.metric("sched.reschedules_per_sec", "1/s", Better::Higher, |&ns| {
            1e9 / ns
        })?
        .goal(25e6)
        .spec_target(10_000.0)
        .params(&params)
        .param("derived_from", name)
        .param("spec_target_unit", "reschedules per second per agent"),
    ])
}

fn spawn_run(bench: &mut Bench<'_>, sizes: &Sizes) -> Result<Vec<Metric>> {
    let spawn = sizes.spawn;
    let name = "sched.spawn_run_ns";
    let m = bench.measure(name, &CONTENDERS, |c| {
        Ok(ns_per(c.spawn_run(&spawn)?, spawn.total as u64))
    })?;
    Ok(vec![
        m.metric(name, "ns", Better::Lower, |&ns| ns)?
            .goal(100.0)
            .param("tasks", spawn.total)
            .param("batch", spawn.batch)
            .param("join", "awaited"),
    ])
}

fn channel_oneway(bench: &mut Bench<'_>, sizes: &Sizes) -> Result<Vec<Metric>> {
    let round_trips = sizes.round_trips;
    let name = "sched.channel_oneway_ns";
    let m = bench.measure(name, &CONTENDERS, |c| {
        Ok(ns_per(c.ping_pong(round_trips)?, 2 * round_trips))
    })?;
    Ok(vec![
        m.metric(name, "ns", Better::Lower, |&ns| ns)?
            .goal(60.0)
            .param("round_trips", round_trips)
            .param("capacity", CHANNEL_CAPACITY),
    ])
}

fn idle_task_bytes(bench: &mut Bench<'_>, sizes: &Sizes) -> Result<Vec<Metric>> {
    let tasks = sizes.idle_tasks;
    let name = "sched.idle_task_bytes";
    let m = bench.measure(name, &CONTENDERS, |c| idle_tasks_in_child(c.name(), tasks))?;
    Ok(vec![
        m.metric(name, "B", Better::Lower, |&b| b)?
            .goal(192.0)
            .param("tasks", tasks)
            .param("process", "fresh child per sample"),
    ])
}

fn priority_latency(bench: &mut Bench<'_>, sizes: &Sizes) -> Result<Vec<Metric>> {
    let plan = sizes.priority;
    let name = "sched.priority_latency_us";
    let m = bench.measure(name, &CONTENDERS, |c| {
        LatencyStats::of(&c.priority_latency(&plan)?, plan.wakes)
    })?;
    let params = [
        ("wakes", json!(plan.wakes)),
        ("background_tasks", json!(plan.background_tasks)),
        ("spin_us_per_poll", json!(plan.spin.as_secs_f64() * 1e6)),
        ("wake_gap_us", json!([plan.min_gap_us, plan.max_gap_us])),
        ("seed", json!(plan.seed)),
        ("policy", json!("StrictPriority")),
        ("statistic", json!("median of per-sample percentiles")),
    ];
    Ok(vec![
        m.metric(name, "us", Better::Lower, |s| s.p99_us)?
            .goal(50.0)
            .params(&params)
            .param("percentile", 99),
        m.metric("sched.priority_latency_p50_us", "us", Better::Lower, |s| {
            s.p50_us
        })?
        .params(&params)
        .param("percentile", 50),
    ])
}

/// Runs a child measurement of this suite (see [`crate::child`]).
pub(crate) fn run_child(entry: &str, args: &[String]) -> Result<serde_json::Value> {
    match (entry, args) {
        ("idle_tasks", [name, tasks]) => {
            let tasks: usize = tasks
                .parse()
                .with_context(|| format!("bad task count `{tasks}`"))?;
            let bytes = contender(name)?.idle_tasks(tasks)?;
            Ok(json!({ "bytes_per_task": bytes }))
        }
        ("idle_tasks", _) => bail!("usage: sched.idle_tasks <contender> <tasks>"),
        _ => bail!("unknown child measurement `sched.{entry}`"),
    }
}

fn idle_tasks_in_child(contender: &str, tasks: usize) -> Result<f64> {
    let out = measure_in_child(
        "sched.idle_tasks",
        &[contender.to_owned(), tasks.to_string()],
    )?;
    out.get("bytes_per_task")
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("the idle-task child printed no bytes_per_task: {out}"))
}

fn ns_per(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops.max(1) as f64
}
