//! The `replay` recovery mode: a planner re-asked every journaled step;
//! the same planner agrees with the journal, a changed one is caught at the
//! step where it changed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tiffany_agent::{AgentOptions, Node, NodeConfig, TaskStatus, audit};
use tiffany_llm::{LlmProvider, Scripted, Step};
use tiffany_skills::{BuiltinConfig, Registry};

fn script(last: &str) -> Arc<dyn LlmProvider> {
    Arc::new(Scripted::steps(vec![
        Step::call("noop", json!({"n": 1})),
        Step::ToolCalls(vec![
            ("noop".into(), json!({"n": 2})),
            ("noop".into(), json!({"n": 3})),
        ]),
        Step::answer(last),
    ]))
}

#[test]
fn an_audit_replays_every_step_and_reports_where_the_planner_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.workers = Some(1);
    let skills = Arc::new(Registry::with_builtins(BuiltinConfig::default()));
    let (node, _) = Node::open(config, script("done"), skills).unwrap();
    let agent = node.create_agent(AgentOptions::new("audited")).unwrap();
    let task = node.submit(agent, "count").unwrap();
    let state = node.wait(task, Duration::from_secs(30)).unwrap();
    assert_eq!(state.status, TaskStatus::Completed);
    node.shutdown().unwrap();

    let same = audit(dir.path(), &script("done"), &[]).unwrap();
    assert_eq!((same.tasks, same.steps), (1, 3));
    assert!(same.divergences.is_empty(), "{:?}", same.divergences);

    let changed = audit(dir.path(), &script("something else"), &[]).unwrap();
    assert_eq!(changed.divergences.len(), 1, "{:?}", changed.divergences);
    let d = &changed.divergences[0];
    assert_eq!((d.task, d.step), (task, 2));
    assert_eq!(d.journaled.content, "done");
    assert_eq!(d.replayed.as_ref().unwrap().content, "something else");
}
