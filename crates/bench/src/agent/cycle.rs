//! One agent's cycle: tasks run one after another on a fresh node, each
//! `tool_steps` Plan -> Execute -> Observe cycles of the scripted planner
//! and the `noop` skill, then its answer. The durable peers journal one
//! step the way a plain log or a DBOS-style database would.
//!
//! Invariants:
//! - a cycle is timed from one planner call to the next call of the same
//!   task ([`Probe`]), so it spans exactly one whole loop turn: journal the
//!   answer, journal the skill's start (and wait for it to be durable in
//!   `Data` mode), run the skill, journal its result, read the next step,
//!   journal the request; opening the node, creating the agent and closing
//!   the node are never timed;
//! - the peers append one 256-byte record per step with the `wal` suite's
//!   own loop ([`append_latency`]), so their figures are that suite's.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use tiffany_agent::Node;
use tiffany_wal::SyncMode;

use super::setup::{
    INSTRUCTION, Probe, create_agents, node_config, planner, skills, wait_completed,
};
use crate::measure::Named;
use crate::sample::percentile;
use crate::scratch::ScratchDir;
use crate::wal::AppendLog;
use crate::wal::workload::{Budget, LatencySample, Payloads, append_latency};

/// How long a task may take before the run is abandoned.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// One run's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CyclePlan {
    /// Tasks, one after another, on one agent.
    pub(crate) tasks: usize,
    /// Tool cycles per task (the answer comes after them).
    pub(crate) tool_steps: usize,
    /// A peer's appends per run.
    pub(crate) peer_appends: u64,
}

/// Per-cycle (or, for a peer, per-step) latency of one run, microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CycleSample {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) mean_us: f64,
    /// Wall time from the first submit to the last task's end over every
    /// planner answer (tool cycles and closing plans); 0 for a peer.
    pub(crate) wall_per_step_us: f64,
}

impl CycleSample {
    fn of_peer(s: &LatencySample) -> Self {
        CycleSample {
            p50_us: s.p50 * 1e6,
            p99_us: s.p99 * 1e6,
            mean_us: s.mean * 1e6,
            wall_per_step_us: 0.0,
        }
    }
}

/// Who runs the cycle workload.
pub(crate) enum Cycler {
    /// Ours: a node journaling with this mode.
    Node(SyncMode),
    /// A peer journaling one record per step.
    Log(&'static str, &'static dyn AppendLog),
}

impl Named for Cycler {
    fn name(&self) -> &'static str {
        match self {
            Cycler::Node(_) => super::OURS,
            Cycler::Log(name, _) => name,
        }
    }
}

impl Cycler {
    /// One run under `root`.
    pub(crate) fn run(
        &self,
        root: &Path,
        plan: &CyclePlan,
        payloads: &Payloads,
    ) -> Result<CycleSample> {
        let dir = ScratchDir::new_in(root, self.name())?;
        match self {
            Cycler::Node(sync) => node_cycles(dir.path(), *sync, plan),
            Cycler::Log(_, log) => {
                let budget = Budget {
                    appends: plan.peer_appends,
                    min_appends: 100,
                    time: Duration::from_secs(5),
                };
                Ok(CycleSample::of_peer(&append_latency(
                    *log,
                    dir.path(),
                    budget,
                    payloads,
                )?))
            }
        }
    }

    /// How this contender journals a step, for the report.
    pub(crate) fn setup(&self) -> String {
        match self {
            Cycler::Node(sync) => format!(
                "tiffany-agent node, SyncMode::{sync:?}, default workers and WAL, \
                 Scripted planner answering at once, noop skill"
            ),
            Cycler::Log(_, log) => format!("one 256-byte record per step: {}", log.setup()),
        }
    }
}

fn node_cycles(dir: &Path, sync: SyncMode, plan: &CyclePlan) -> Result<CycleSample> {
    let probe = Arc::new(Probe::default());
    let llm = Arc::new(planner(plan.tool_steps, Some(Arc::clone(&probe))));
    let config = node_config(dir, sync, plan.tool_steps);
    let (node, _) = Node::open(config, llm, skills())?;
    let agents = create_agents(&node, 1)?;
    let agent = agents.first().copied().context("no agent")?;
    let start = Instant::now();
    for _ in 0..plan.tasks {
        run_task(&node, agent)?;
    }
    let wall = start.elapsed();
    node.shutdown()?;
    let mut cycles = probe.cycle_secs();
    let expected = plan.tasks * plan.tool_steps;
    ensure!(
        cycles.len() == expected,
        "timed {} cycles, expected {expected}",
        cycles.len()
    );
    cycles.sort_by(f64::total_cmp);
    let (Some(p50), Some(p99)) = (percentile(&cycles, 50.0), percentile(&cycles, 99.0)) else {
        anyhow::bail!("no cycle was timed");
    };
    let answers = plan.tasks * (plan.tool_steps + 1);
    Ok(CycleSample {
        p50_us: p50 * 1e6,
        p99_us: p99 * 1e6,
        mean_us: cycles.iter().sum::<f64>() / cycles.len() as f64 * 1e6,
        wall_per_step_us: wall.as_secs_f64() / answers as f64 * 1e6,
    })
}

fn run_task(node: &Node, agent: u64) -> Result<()> {
    let task = node.submit(agent, INSTRUCTION)?;
    wait_completed(node, task, TASK_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_node_times_every_tool_cycle() {
        let root = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-cycle-test").unwrap();
        let plan = CyclePlan {
            tasks: 3,
            tool_steps: 4,
            peer_appends: 10,
        };
        let payloads = Payloads::random(1, 4, 256);
        let s = Cycler::Node(SyncMode::Buffer)
            .run(root.path(), &plan, &payloads)
            .unwrap();
        assert!(s.p50_us > 0.0 && s.p50_us <= s.p99_us, "{s:?}");
        assert!(s.wall_per_step_us > 0.0);
    }
}
