//! Parking an agent: its tasks stop at their next yield, show as parked,
//! stay parked across a restart, and finish once unparked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tiffany_agent::{AgentOptions, Node, NodeConfig, TaskStatus};
use tiffany_llm::{BoxFuture, LlmError, LlmProvider, LlmRequest, LlmResponse, Scripted, Step};
use tiffany_skills::{BuiltinConfig, Registry};

/// The scripted planner, counting its calls.
struct Counting(Scripted, AtomicUsize);

impl LlmProvider for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.complete(request)
    }
}

fn open(dir: &std::path::Path) -> (Node, Arc<Counting>) {
    let planner = Arc::new(Counting(
        Scripted::steps(vec![
            Step::call("wait", json!({"ms": 200})),
            Step::call("noop", json!({})),
            Step::answer("done"),
        ]),
        AtomicUsize::new(0),
    ));
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
    while planner.1.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(node.park_agent(agent).unwrap(), 1);
    assert_eq!(node.task(task).unwrap().status, TaskStatus::Parked);
    // The wait ends, but the parked task does not plan again.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(planner.1.load(Ordering::SeqCst), 1);
    assert_eq!(node.task(task).unwrap().status, TaskStatus::Parked);
    drop(node);

    let (node, planner) = open(dir.path());
    assert_eq!(node.task(task).unwrap().status, TaskStatus::Parked);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        planner.1.load(Ordering::SeqCst),
        0,
        "a parked task ran after the restart"
    );
    assert_eq!(node.unpark_agent(agent).unwrap(), 1);
    let state = node.wait(task, Duration::from_secs(30)).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(planner.1.load(Ordering::SeqCst), 2);
}
