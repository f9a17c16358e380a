//! How every `agent` and `boot` workload sets up a node: the planner that
//! calls `noop` a fixed number of times, the skills, the node's
//! configuration, and the agents.
//!
//! Invariants:
//! - every planner here answers from the step alone ([`LlmRequest::step`]):
//!   a tool call of `noop` with `{}` for steps `0..tool_steps`, then the
//!   final answer (or, for [`Stalling`], an answer that never comes), so a
//!   task runs exactly `tool_steps` Plan -> Execute -> Observe cycles and
//!   one closing plan;
//! - agents are granted `noop` only, so a request carries one tool schema
//!   (over HTTP too);
//! - the node's budgets never end a task early: `max_steps` is above the
//!   script's length and the token budget is unlimited.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use tiffany_agent::{AgentOptions, Node, NodeConfig, TaskStatus};
use tiffany_llm::{
    BoxFuture, LlmError, LlmProvider, LlmRequest, LlmResponse, Message, Scripted, ToolCall,
};
use tiffany_skills::{BuiltinConfig, Registry};
use tiffany_wal::SyncMode;

/// The skill every tool call runs.
pub(crate) const SKILL: &str = "noop";

/// The instruction of every measured task.
pub(crate) const INSTRUCTION: &str = "call noop until told to stop, then answer";

/// The planner's message at `step` of a script of `tool_steps` tool calls.
pub(crate) fn scripted_message(step: usize, tool_steps: usize) -> Message {
    if step < tool_steps {
        Message::tool_calls(vec![ToolCall {
            id: format!("call_{step}_0"),
            name: SKILL.to_owned(),
            arguments: "{}".to_owned(),
        }])
    } else {
        Message::assistant("done")
    }
}

/// When each planner call of a run happened, with its step: the time
/// between two calls of the same task is one whole cycle.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    calls: Mutex<Vec<(usize, Instant)>>,
}

impl Probe {
    fn record(&self, step: usize) {
        let now = Instant::now();
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((step, now));
    }

    /// Every cycle's duration in seconds: the gap from a call at step
    /// `n - 1` to the next call, at step `n`, of the same task. Tasks run
    /// one after another, so consecutive calls belong to the same task
    /// unless the later one is a step 0.
    pub(crate) fn cycle_secs(&self) -> Vec<f64> {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls
            .windows(2)
            .filter_map(|pair| match pair {
                [(a, t0), (b, t1)] if *b == a + 1 => Some((*t1 - *t0).as_secs_f64()),
                _ => None,
            })
            .collect()
    }
}

/// The scripted planner of `tool_steps` `noop` calls then an answer,
/// noting each call in `probe` when given one.
pub(crate) fn planner(tool_steps: usize, probe: Option<Arc<Probe>>) -> Scripted {
    Scripted::from_fn(move |request| {
        let step = request.step();
        if let Some(probe) = &probe {
            probe.record(step);
        }
        Ok(scripted_message(step, tool_steps))
    })
}

/// A planner that runs `tool_steps` `noop` calls and then never answers,
/// leaving its task unfinished (waiting for the LLM) with every step
/// before journaled: the state a node is in when it is killed.
pub(crate) struct Stalling {
    inner: Scripted,
    tool_steps: usize,
    stalled: AtomicUsize,
}

impl Stalling {
    /// Stalls after `tool_steps` calls.
    pub(crate) fn new(tool_steps: usize) -> Stalling {
        Stalling {
            inner: planner(tool_steps, None),
            tool_steps,
            stalled: AtomicUsize::new(0),
        }
    }

    /// How many tasks have reached the stall.
    pub(crate) fn stalled(&self) -> usize {
        self.stalled.load(Ordering::Acquire)
    }
}

impl LlmProvider for Stalling {
    fn name(&self) -> &str {
        "stalling"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        if request.step() < self.tool_steps {
            return self.inner.complete(request);
        }
        self.stalled.fetch_add(1, Ordering::AcqRel);
        Box::pin(std::future::pending())
    }
}

/// The built-in skills (`noop` among them).
pub(crate) fn skills() -> Arc<Registry> {
    Arc::new(Registry::with_builtins(BuiltinConfig::default()))
}

/// A node configuration under `dir` journaling with `sync`, whose budgets
/// let a task of `tool_steps` calls run to its end. Everything else is the
/// default (workers: one per core; snapshots every 32 MiB).
pub(crate) fn node_config(dir: &Path, sync: SyncMode, tool_steps: usize) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.sync = sync;
    config.budgets.max_steps = u32::try_from(tool_steps + 2).unwrap_or(u32::MAX);
    config.budgets.max_tokens = u64::MAX;
    config
}

/// Creates `count` agents (`agent-<i>`, granted `noop` only) and makes them
/// durable; returns their ids.
pub(crate) fn create_agents(node: &Node, count: usize) -> Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let mut options = AgentOptions::new(format!("agent-{i}"));
        options.grants = vec![SKILL.to_owned()];
        ids.push(node.create_agent(options)?);
    }
    node.flush()?;
    Ok(ids)
}

/// Waits at most `timeout` for `task` to end and checks that it completed.
pub(crate) fn wait_completed(node: &Node, task: u64, timeout: Duration) -> Result<()> {
    let state = node
        .wait(task, timeout)
        .with_context(|| format!("task {task} vanished"))?;
    ensure!(
        state.status == TaskStatus::Completed,
        "task {task} ended {:?}: {:?}",
        state.status,
        state.outcome
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_script_calls_noop_then_answers() {
        let call = scripted_message(0, 2);
        assert_eq!(call.tool_calls[0].name, SKILL);
        assert_eq!(call.tool_calls[0].id, "call_0_0");
        assert!(scripted_message(2, 2).tool_calls.is_empty());
    }

    #[test]
    fn setup_probe_keeps_gaps_within_a_task() {
        let probe = Probe::default();
        for step in [0, 1, 2, 0, 1] {
            probe.record(step);
        }
        assert_eq!(
            probe.cycle_secs().len(),
            3,
            "2 + 1 cycles, no gap across tasks"
        );
    }
}
