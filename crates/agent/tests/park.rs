//! Parking an agent: its tasks stop at their next yield, show as parked,
//! stay parked across a restart, and finish once unparked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tiffany_agent::{AgentOptions, Node, NodeConfig, TaskStatus};
use tiffany_llm::{Scripted, Step};

use common::Counting;
use tiffany_skills::{BuiltinConfig, Registry};

fn open(dir: &std::path::Path) -> (Node, Arc<Counting>) {
    let planner = Counting::new(Scripted::steps(vec![
        Step::call("wait", json!({"ms": 200})),
        Step::call("noop", json!({})),
        Step::answer("done"),
    ]));
    let mut config = NodeConfig::new(dir);
    config.workers = Some(1);
    let skills = Arc::new(Registry::with_builtins(BuiltinConfig::default()));
    let (node, _) = Node::open(config, planner.clone(), skills).unwrap();
    (node, planner)
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the test's thread waits, it is not a task"
)]
fn a_parked_agent_stays_parked_across_a_restart_until_unparked() {
    let dir = tempfile::tempdir().unwrap();
    let (node, planner) = open(dir.path());
    let agent = node.create_agent(AgentOptions::new("parked")).unwrap();
    let task = node.submit(agent, "wait, then finish").unwrap();
    // Park while the first step's `wait` runs.
    while planner.count() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(node.park_agent(agent).unwrap(), 1);
    assert_eq!(node.task(task).unwrap().status, TaskStatus::Parked);
    // The wait ends, but the parked task does not plan again.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(planner.count(), 1);
    assert_eq!(node.task(task).unwrap().status, TaskStatus::Parked);
    drop(node);

    let (node, planner) = open(dir.path());
    assert_eq!(node.task(task).unwrap().status, TaskStatus::Parked);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(planner.count(), 0, "a parked task ran after the restart");
    assert_eq!(node.unpark_agent(agent).unwrap(), 1);
    let state = node.wait(task, Duration::from_secs(30)).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(planner.count(), 2);
}
