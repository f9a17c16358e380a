//! Many agents at once against an LLM over real HTTP: the mock
//! chat-completions server of `tiffany-testkit` runs in a child process of
//! its own (so its CPU time is its own), the node in another, fresh for
//! every sample (so its peak memory is this run's alone).
//!
//! Invariants:
//! - the server answers every request after the same fixed delay, with a
//!   `noop` call up to the script's length and then the final answer, and
//!   at once with the answer to a warm-up task;
//! - a warm-up round (one one-step task per agent, untimed) opens the
//!   client's pooled connections, so the timed round measures the steady
//!   state, not 10,000 simultaneous TCP handshakes;
//! - the timed round is one task per agent, all submitted at once; it ends
//!   when every task has ended, and every one must have completed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use tiffany_agent::Node;
use tiffany_llm::{OpenAiCompatible, OpenAiConfig};
use tiffany_testkit::{MockLlmServer, MockReply, MockRequest};
use tiffany_wal::SyncMode;

use super::setup::{INSTRUCTION, SKILL, create_agents, node_config, skills, wait_completed};
use crate::child::{measure_in_child, start_child, wait_for_stdin_eof};
use crate::os::{cpu_secs, peak_rss_bytes, raise_nofile_limit};
use crate::scratch::ScratchDir;

/// The instruction of the warm-up tasks, answered at once.
const WARM_UP: &str = "warm up";
/// How long a whole round may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);

/// One sample's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetPlan {
    /// Agents, each with one task.
    pub(crate) agents: usize,
    /// Tool cycles per task (the answer comes after them).
    pub(crate) tool_steps: usize,
    /// The server's delay before every answer.
    pub(crate) delay: Duration,
}

impl FleetPlan {
    fn args(&self) -> Vec<String> {
        vec![
            self.agents.to_string(),
            self.tool_steps.to_string(),
            self.delay.as_millis().to_string(),
        ]
    }

    fn parse(args: &[String]) -> Result<Self> {
        let [agents, tool_steps, delay_ms] = args else {
            bail!("usage: <agents> <tool_steps> <delay_ms>");
        };
        Ok(FleetPlan {
            agents: agents.parse().context("agents")?,
            tool_steps: tool_steps.parse().context("tool_steps")?,
            delay: Duration::from_millis(delay_ms.parse().context("delay_ms")?),
        })
    }
}

/// What one sample measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetSample {
    pub(crate) cycles_per_sec: f64,
    pub(crate) rss_mib: f64,
    /// CPU cores the node used during the timed round.
    pub(crate) node_cores: f64,
    /// CPU seconds the server used over the whole sample.
    pub(crate) server_cpu_secs: f64,
    /// The node's CPU time per cycle of the timed round, in microseconds:
    /// the figure that survives a busy machine best.
    pub(crate) node_cpu_us_per_cycle: f64,
    /// The server's CPU time per request over the whole sample (warm-up
    /// included), in microseconds.
    pub(crate) server_cpu_us_per_request: f64,
    pub(crate) round_secs: f64,
    pub(crate) cycle_p50_ms: f64,
    pub(crate) cycle_p99_ms: f64,
    pub(crate) llm_retries: f64,
}

/// One sample: a server child, then a node child talking to it.
pub(crate) fn sample(plan: &FleetPlan, root: &Path) -> Result<FleetSample> {
    let server = start_child("agent.llm_server", &plan.args())?;
    let url = server
        .ready
        .get("url")
        .and_then(Value::as_str)
        .context("the server child printed no url")?
        .to_owned();
    let mut args = plan.args();
    args.extend([url, root.display().to_string()]);
    let node = measure_in_child("agent.fleet", &args)?;
    let served = server.finish()?;
    let field = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("no {key} in {v}"))
    };
    let node_cores = field(&node, "cpu_cores")?;
    let round_secs = field(&node, "round_secs")?;
    let server_cpu_secs = field(&served, "cpu_secs")?;
    Ok(FleetSample {
        cycles_per_sec: field(&node, "cycles_per_sec")?,
        rss_mib: field(&node, "rss_hwm_bytes")? / f64::from(1 << 20),
        node_cores,
        server_cpu_secs,
        node_cpu_us_per_cycle: 1e6 * node_cores * round_secs / field(&node, "cycles")?,
        server_cpu_us_per_request: 1e6 * server_cpu_secs / field(&served, "requests")?,
        round_secs,
        cycle_p50_ms: field(&node, "cycle_p50_us")? / 1e3,
        cycle_p99_ms: field(&node, "cycle_p99_us")? / 1e3,
        llm_retries: field(&node, "llm_retries")?,
    })
}

/// The server child: serves until stdin closes, then reports its requests
/// and CPU time.
pub(crate) fn serve(args: &[String]) -> Result<Value> {
    let plan = FleetPlan::parse(args)?;
    raise_nofile_limit()?;
    let tool_steps = plan.tool_steps;
    let server = MockLlmServer::with_responder(move |request| reply(request, tool_steps));
    server.set_delay(plan.delay);
    println!("{}", json!({ "url": server.url() }));
    wait_for_stdin_eof()?;
    let requests = server.request_count();
    drop(server);
    Ok(json!({ "requests": requests, "cpu_secs": cpu_secs()? }))
}

fn reply(request: &MockRequest, tool_steps: usize) -> MockReply {
    let warm_up = request
        .messages
        .iter()
        .any(|m| m.role == "user" && m.content.as_deref() == Some(WARM_UP));
    if warm_up || request.step() >= tool_steps {
        MockReply::Answer("done".to_owned())
    } else {
        MockReply::ToolCalls(vec![(SKILL.to_owned(), json!({}))])
    }
}

/// The node child: a warm-up round, then the timed round.
// Blocking on purpose: the child's main thread waits for its node.
#[allow(clippy::disallowed_methods)]
pub(crate) fn run_node(args: &[String]) -> Result<Value> {
    let (plan_args, [url, root]) = args.split_at(args.len().saturating_sub(2)) else {
        bail!("usage: <agents> <tool_steps> <delay_ms> <url> <root>");
    };
    let plan = FleetPlan::parse(plan_args)?;
    let nofile = raise_nofile_limit()?;
    let dir = ScratchDir::new_in(Path::new(root), "fleet")?;
    let mut llm_config = OpenAiConfig::new(url.as_str(), "mock");
    llm_config.api_key = None;
    let llm = Arc::new(OpenAiCompatible::new(llm_config)?);
    let config = node_config(dir.path(), SyncMode::Data, plan.tool_steps);
    let t_setup = Instant::now();
    let (node, _) = Node::open(config, Arc::clone(&llm) as _, skills())?;
    let agents = create_agents(&node, plan.agents)?;
    let setup_secs = t_setup.elapsed().as_secs_f64();
    let t_warm = Instant::now();
    round(&node, &agents, WARM_UP)?;
    let warm_up_secs = t_warm.elapsed().as_secs_f64();
    let before = node.stats().cycles;
    let (cpu0, t0) = (cpu_secs()?, Instant::now());
    round(&node, &agents, INSTRUCTION)?;
    let round_secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs()? - cpu0;
    let stats = node.stats();
    let cycles = stats.cycles - before;
    let expected = (plan.agents * (plan.tool_steps + 1)) as u64;
    ensure!(
        cycles == expected,
        "the timed round made {cycles} cycles, expected {expected}"
    );
    let llm_stats = llm.stats();
    let out = json!({
        "cycles_per_sec": cycles as f64 / round_secs,
        "round_secs": round_secs,
        "setup_secs": setup_secs,
        "warm_up_secs": warm_up_secs,
        "cycles": cycles,
        "cpu_cores": cpu / round_secs,
        // Cumulative over both rounds: the warm-up's cycles are 1 in
        // `tool_steps + 2` of all, at the round's bucket resolution.
        "cycle_p50_us": stats.cycle_p50_us,
        "cycle_p99_us": stats.cycle_p99_us,
        "rss_hwm_bytes": peak_rss_bytes()?,
        "llm_retries": llm_stats.retries,
        "nofile_limit": nofile,
    });
    drop(node);
    Ok(out)
}

/// One task per agent, all at once; returns when every one has completed.
/// Waits task by task: `Node::wait_idle` scans every task of the node at
/// each completion, which would charge the harness's wait to the node.
fn round(node: &Node, agents: &[u64], instruction: &str) -> Result<()> {
    let tasks = agents
        .iter()
        .map(|&agent| node.submit(agent, instruction))
        .collect::<Result<Vec<u64>, _>>()?;
    let deadline = Instant::now() + ROUND_TIMEOUT;
    for task in tasks {
        wait_completed(
            node,
            task,
            deadline.saturating_duration_since(Instant::now()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_plan_round_trips_through_args() {
        let plan = FleetPlan {
            agents: 3,
            tool_steps: 2,
            delay: Duration::from_millis(5),
        };
        let back = FleetPlan::parse(&plan.args()).unwrap();
        assert_eq!(
            (back.agents, back.tool_steps, back.delay),
            (3, 2, plan.delay)
        );
        assert!(FleetPlan::parse(&[]).is_err());
    }
}
