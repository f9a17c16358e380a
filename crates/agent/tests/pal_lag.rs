//! PAL under a subscriber that never reads: it loses the oldest events and
//! is told exactly how many (`Received::Lagged`), and the agents are not
//! held back: every task completes, as in a run without the subscriber.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tiffany_agent::{AgentOptions, Filter, Node, Received, Subscription, TaskStatus};
use tiffany_llm::{Scripted, Step};

use common::{WAIT, config, skills};

const AGENTS: usize = 50;

/// Runs `AGENTS` agents of one three-step task each (one call, then two in
/// parallel, then an answer) with a bus of `capacity`, optionally with a
/// subscriber that reads nothing until the node is gone. Returns the
/// subscriber and the total planner answers journaled.
fn run(dir: &Path, capacity: usize, subscribe: bool) -> (Option<Subscription>, u32) {
    let planner = Scripted::steps(vec![
        Step::call("noop", json!({"step": 0})),
        Step::ToolCalls(vec![
            ("noop".into(), json!({"step": 1})),
            ("noop".into(), json!({"step": 1, "second": true})),
        ]),
        Step::answer("done"),
    ]);
    let mut config = config(dir);
    config.pal_capacity = capacity;
    let (node, _) = Node::open(config, Arc::new(planner), skills()).unwrap();
    let subscriber = subscribe.then(|| node.pal().subscribe(Filter::default()));
    let tasks: Vec<u64> = (0..AGENTS)
        .map(|i| {
            let agent = node
                .create_agent(AgentOptions::new(format!("a{i}")))
                .unwrap();
            node.submit(agent, "three steps").unwrap()
        })
        .collect();
    assert_eq!(node.wait_idle(WAIT), 0, "every task finishes");
    let mut steps = 0;
    for task in tasks {
        let state = node.task(task).unwrap();
        assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
        steps += state.steps;
    }
    // Shutting down stops every loop, so all their events are published
    // and the bus closes.
    node.shutdown().unwrap();
    (subscriber, steps)
}

/// Everything the subscriber holds: lost counts and events, in order.
fn drain(mut subscriber: Subscription) -> (Vec<u64>, usize) {
    let mut lagged = Vec::new();
    let mut events = 0;
    while let Some(received) = subscriber.try_recv() {
        match received {
            Received::Event(_) => events += 1,
            Received::Lagged(n) => lagged.push(n),
            Received::Closed => break,
        }
    }
    (lagged, events)
}

#[test]
fn pal_lagging_subscriber_is_told_what_it_lost_and_agents_finish_anyway() {
    // Without any subscriber.
    let dir = tempfile::tempdir().unwrap();
    let (_, steps_alone) = run(dir.path(), 64, false);
    assert_eq!(steps_alone, 3 * AGENTS as u32);

    // A bus large enough for everything: how many events the run publishes.
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, steps) = run(dir.path(), 1 << 16, true);
    assert_eq!(steps, steps_alone);
    let (lagged, total) = drain(subscriber.unwrap());
    assert!(lagged.is_empty(), "{lagged:?}");
    // Per task at least: instruction, 3 plans, 3 skill starts and ends,
    // completion, idle.
    assert!(total >= AGENTS * 11, "{total}");

    // A small bus and a subscriber that never reads: it lost all but the
    // last 64 events, and is told exactly how many, once.
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, steps) = run(dir.path(), 64, true);
    assert_eq!(steps, steps_alone);
    let (lagged, kept) = drain(subscriber.unwrap());
    assert_eq!(kept, 64);
    assert_eq!(lagged, [(total - kept) as u64]);
}
