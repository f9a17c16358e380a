//! The `agent` suite: the ReAct loop of `tiffany-agent` (plan with the
//! planner, execute the skill, observe by journaling the result), measured
//! on one agent and on 10,000 at once.
//!
//! | metric | workload (quick size) | goal |
//! |---|---|---|
//! | `agent.cycle_overhead_us` | one agent, tasks of 31 `noop` cycles one after another, Scripted planner answering at once, journal `SyncMode::Buffer`; mean cycle; 640 tasks (64) | <= 20 us; spec 1.5 s |
//! | `agent.cycle_durable_p50_us` | the same with `SyncMode::Data`, p50 cycle; 64 tasks (10); peers: a durable WAL append and a SQLite INSERT transaction per step | <= 1.5x `wal_append_durable` |
//! | `agent.cycles_per_sec_10k` | 10,000 agents (1,000), one task of 7 `noop` cycles each (3), all at once, the mock LLM server over HTTP answering after 200 ms, `SyncMode::Data` | >= 10,000/s |
//! | `agent.rss_10k_mib` | peak RSS of that node process | <= 2,048 MiB |
//!
//! Contenders: `tiffany` (ours, [`cycle::Cycler::Node`]);
//! `wal_append_durable` (`tiffany-wal`, one `Wal::append(.., Data)` per
//! step) and `sqlite_step` (SQLite, one `INSERT` per step in its own
//! transaction, `synchronous=FULL`: how DBOS journals a step), both run
//! with the `wal` suite's append loop.
//!
//! Invariants:
//! - every node is fresh, in a fresh directory under [`ScratchDir`] (the
//!   disk of the working directory), and is opened, given its agents and
//!   closed outside the timed span;
//! - the durable cycle and its peers run interleaved, ours first;
//! - the 10,000-agent workload runs its node and its LLM server in two
//!   child processes of their own per sample ([`fleet`]).

mod cycle;
mod fleet;
pub(crate) mod setup;

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tiffany_wal::SyncMode;

use crate::measure::{Bench, Measured, Named};
use crate::progress::Progress;
use crate::report::{Better, Metric};
use crate::sample::{Plan, pick};
use crate::scratch::ScratchDir;
use crate::wal::sqlite_peer::Sqlite;
use crate::wal::workload::Payloads;
use crate::wal::{Durability, ours::append_log};
use cycle::{CyclePlan, CycleSample, Cycler};
use fleet::{FleetPlan, FleetSample};

/// Our contender's name.
pub(crate) const OURS: &str = "tiffany";
/// The durable-append reference.
const WAL_PEER: &str = "wal_append_durable";
/// The DBOS-style peer.
const SQLITE_PEER: &str = "sqlite_step";
/// The seed of the peers' payloads.
const SEED: u64 = 0x7466_7961_6774; // "tfyagt"
/// Tool cycles per task of the single-agent workloads.
const TOOL_STEPS: usize = 31;

/// Workload sizes: full, or quick for CI smoke runs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    overhead: CyclePlan,
    durable: CyclePlan,
    fleet: FleetPlan,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        Sizes {
            overhead: CyclePlan {
                tasks: pick(quick, 640, 64),
                tool_steps: TOOL_STEPS,
                peer_appends: 0,
            },
            durable: CyclePlan {
                tasks: pick(quick, 64, 10),
                tool_steps: TOOL_STEPS,
                peer_appends: pick(quick, 2_000, 300),
            },
            fleet: FleetPlan {
                agents: pick(quick, 10_000, 1_000),
                tool_steps: pick(quick, 7, 3),
                delay: Duration::from_millis(200),
            },
        }
    }
}

/// Runs the whole suite and returns its metrics in table order.
pub(crate) fn run(quick: bool, progress: &mut Progress) -> Result<Vec<Metric>> {
    let sizes = Sizes::new(quick);
    let root = ScratchDir::new("agent")?;
    let mut bench = Bench::new(Plan::for_mode(quick), progress);
    let payloads = Payloads::random(SEED, 64, 256);
    let mut metrics = vec![cycle_overhead(&mut bench, &sizes, &root, &payloads)?];
    metrics.extend(cycle_durable(&mut bench, &sizes, &root, &payloads)?);
    metrics.extend(fleet(&mut bench, &sizes, &root)?);
    Ok(metrics)
}

fn cycle_params(
    plan: &CyclePlan,
    cyclers: &[&Cycler],
    m: &Measured<CycleSample>,
) -> Result<Vec<(&'static str, Value)>> {
    let median = |f: fn(&CycleSample) -> f64| m.median_of(OURS, f);
    let setups: serde_json::Map<String, Value> = cyclers
        .iter()
        .map(|c| (c.name().to_owned(), Value::from(c.setup())))
        .collect();
    Ok(vec![
        ("agents", json!(1)),
        ("tasks", json!(plan.tasks)),
        ("tool_cycles_per_task", json!(plan.tool_steps)),
        (
            "cycles_timed_per_sample",
            json!(plan.tasks * plan.tool_steps),
        ),
        ("journal_events_per_cycle", json!(4)),
        ("p50_us", json!(median(|s| s.p50_us)?)),
        ("p99_us", json!(median(|s| s.p99_us)?)),
        ("mean_us", json!(median(|s| s.mean_us)?)),
        (
            "wall_per_planner_answer_us",
            json!(median(|s| s.wall_per_step_us)?),
        ),
        (
            "cycle",
            json!("planner call to the next planner call of the same task"),
        ),
        ("setups", setups.into()),
    ])
}

fn cycle_overhead(
    bench: &mut Bench<'_>,
    sizes: &Sizes,
    root: &ScratchDir,
    payloads: &Payloads,
) -> Result<Metric> {
    let plan = sizes.overhead;
    let ours = Cycler::Node(SyncMode::Buffer);
    let m = bench.measure("agent.cycle_overhead", &[&ours], |c| {
        c.run(root.path(), &plan, payloads)
    })?;
    Ok(
        m.metric("agent.cycle_overhead_us", "us", Better::Lower, |s| {
            s.mean_us
        })?
        .goal(20.0)
        .spec_target(1.5e6)
        .params(&cycle_params(&plan, &[&ours], &m)?)
        .param("statistic", "mean cycle")
        .param(
            "peers",
            "none: no other runtime is built in; see agent.cycle_durable_p50_us",
        ),
    )
}

fn cycle_durable(
    bench: &mut Bench<'_>,
    sizes: &Sizes,
    root: &ScratchDir,
    payloads: &Payloads,
) -> Result<Vec<Metric>> {
    let plan = sizes.durable;
    let crate::wal::Ours::Built(wal) = append_log(Durability::Data) else {
        bail!("tiffany-wal's durable append is not built in");
    };
    let ours = Cycler::Node(SyncMode::Data);
    let wal = Cycler::Log(WAL_PEER, wal);
    let sqlite = Cycler::Log(SQLITE_PEER, &Sqlite);
    let cyclers = [&ours, &wal, &sqlite];
    let m = bench.measure("agent.cycle_durable", &cyclers, |c| {
        c.run(root.path(), &plan, payloads)
    })?;
    Ok(vec![
        m.metric("agent.cycle_durable_p50_us", "us", Better::Lower, |s| {
            s.p50_us
        })?
        .ratio_bound(WAL_PEER, 1.5)
        .params(&cycle_params(&plan, &cyclers, &m)?)
        .param("statistic", "p50 cycle; peers: p50 step")
        .param("peer_steps_per_sample", plan.peer_appends),
    ])
}

fn fleet(bench: &mut Bench<'_>, sizes: &Sizes, root: &ScratchDir) -> Result<Vec<Metric>> {
    let plan = sizes.fleet;
    let m = bench.measure("agent.cycles_per_sec_10k", &[&Fleet], |_| {
        fleet::sample(&plan, root.path())
    })?;
    let median = |f: fn(&FleetSample) -> f64| m.median_of(OURS, f);
    let params = [
        ("agents", json!(plan.agents)),
        ("tool_cycles_per_task", json!(plan.tool_steps)),
        ("planner_answers_per_task", json!(plan.tool_steps + 1)),
        ("llm_delay_ms", json!(plan.delay.as_millis())),
        (
            "llm",
            json!(
                "tiffany_testkit::MockLlmServer (HTTP/1.1 keep-alive, one thread) in its own child process; OpenAiCompatible client (its built-in HTTP/1.1 client for http:// endpoints), default limits"
            ),
        ),
        ("sync", json!("Data")),
        (
            "ideal_cycles_per_sec",
            json!(plan.agents as f64 / plan.delay.as_secs_f64()),
        ),
        ("round_secs", json!(median(|s| s.round_secs)?)),
        ("node_cpu_cores", json!(median(|s| s.node_cores)?)),
        ("server_cpu_secs", json!(median(|s| s.server_cpu_secs)?)),
        (
            "node_cpu_us_per_cycle",
            json!(median(|s| s.node_cpu_us_per_cycle)?),
        ),
        (
            "server_cpu_us_per_request",
            json!(median(|s| s.server_cpu_us_per_request)?),
        ),
        ("cycle_p50_ms", json!(median(|s| s.cycle_p50_ms)?)),
        ("cycle_p99_ms", json!(median(|s| s.cycle_p99_ms)?)),
        ("llm_retries", json!(median(|s| s.llm_retries)?)),
        (
            "process",
            json!(
                "fresh node and server child processes per sample; an untimed warm-up round opens the connections"
            ),
        ),
    ];
    Ok(vec![
        m.metric("agent.cycles_per_sec_10k", "1/s", Better::Higher, |s| {
            s.cycles_per_sec
        })?
        .goal(10_000.0)
        .params(&params),
        m.metric("agent.rss_10k_mib", "MiB", Better::Lower, |s| s.rss_mib)?
            .goal(2048.0)
            .params(&params)
            .param("statistic", "VmHWM of the node process"),
    ])
}

/// Ours in the 10,000-agent workload.
struct Fleet;

impl Named for Fleet {
    fn name(&self) -> &'static str {
        OURS
    }
}

/// Runs a child measurement of this suite (see [`crate::child`]).
pub(crate) fn run_child(entry: &str, args: &[String]) -> Result<Value> {
    match entry {
        "llm_server" => fleet::serve(args),
        "fleet" => fleet::run_node(args),
        _ => bail!("unknown child measurement `agent.{entry}`"),
    }
}
