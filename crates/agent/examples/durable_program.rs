//! A durable program: one task fans an instruction out to three agents,
//! sleeps on a durable timer, joins them and reports.
//!
//! ```sh
//! cargo run -p tiffany-agent --example durable_program -- /tmp/fanout
//! ```
//!
//! Interrupt it during the 5-second sleep (Ctrl-C, or `kill -9`) and run
//! it again on the same directory: the program re-runs from its start, but
//! every call already journaled (the clock read, the three spawns, the
//! timer's deadline) returns its recorded result, so no child is started
//! twice and it sleeps only what was left.

use std::sync::Arc;
use std::time::Duration;

use tiffany_agent::{AgentOptions, CtxError, Node, NodeConfig, Programs};
use tiffany_llm::{Message, Scripted};
use tiffany_skills::{BuiltinConfig, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: durable_program DATA_DIR")?;
    let mut programs = Programs::default();
    programs.register("fan-out", |ctx, input| async move {
        let started = ctx.now().await?;
        let mut children = Vec::new();
        for agent in input.split(',') {
            let agent: u64 = agent.parse().map_err(|_| CtxError::fail("bad agent id"))?;
            children.push(ctx.spawn(agent, "say hello").await?);
        }
        ctx.sleep(Duration::from_secs(5)).await?;
        let mut report = Vec::new();
        for child in children {
            let outcome = ctx.join(child).await?;
            report.push(format!("task {}: {}", outcome.task, outcome.text));
        }
        let at = ctx.now().await?;
        let took = at.duration_since(started).unwrap_or_default();
        Ok(format!("{} (after {took:.1?})", report.join("; ")))
    });
    // An offline planner: every ReAct child answers at once.
    let planner = Arc::new(Scripted::from_fn(|_| {
        Ok(Message::assistant("hello from a child task"))
    }));
    let skills = Arc::new(Registry::with_builtins(BuiltinConfig::default()));
    let (node, recovery) = Node::open_with(NodeConfig::new(&dir), planner, skills, programs)?;
    let existing = node
        .table()
        .tasks
        .values()
        .find(|t| t.program.is_some())
        .map(|t| t.id);
    let task = match existing {
        Some(task) => {
            println!(
                "reopened: {} unfinished tasks resumed, {} journal records replayed",
                recovery.resumed, recovery.records
            );
            task
        }
        None => {
            let mut ids = Vec::new();
            for name in ["ada", "grace", "edsger"] {
                ids.push(node.create_agent(AgentOptions::new(name))?.to_string());
            }
            let boss = node.create_agent(AgentOptions::new("boss"))?;
            node.submit_program(boss, "fan-out", &ids.join(","))?
        }
    };
    println!("task {task} runs; its journal is in {dir}/wal");
    let state = node
        .wait(task, Duration::from_secs(60))
        .ok_or("the task vanished")?;
    println!(
        "{}: {}",
        state.status.as_str(),
        state.outcome.unwrap_or_default()
    );
    node.shutdown()?;
    Ok(())
}
