//! `agent.delegate`: a ReAct planner hands an instruction to another agent
//! and observes its answer; the child is journaled with the call, so a
//! resumed step re-attaches to it instead of starting another.
#![allow(
    clippy::disallowed_methods,
    reason = "the test thread polls the node; no task blocks"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Counting, WAIT, config, last_of, skills, tool_results};
use tiffany_agent::{AgentOptions, DELEGATE, MAX_DELEGATION_DEPTH, Node, TaskStatus};
use tiffany_llm::{LlmRequest, Message, Role, Scripted, ToolCall};

fn call(step: usize, name: &str, arguments: serde_json::Value) -> Message {
    Message::tool_calls(vec![ToolCall {
        id: format!("call_{step}_0"),
        name: name.to_owned(),
        arguments: arguments.to_string(),
    }])
}

/// Plans by instruction: `compute` answers 42; `slow` waits 300 ms first;
/// `ask AGENT INSTRUCTION` delegates and reports the observation;
/// `recurse AGENT` delegates `recurse AGENT` to AGENT.
fn planner() -> Arc<Counting> {
    Counting::new(Scripted::from_fn(|request: &LlmRequest| {
        let instruction = request
            .messages
            .iter()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let step = request.step();
        let observed = last_of(request, Role::Tool);
        let words: Vec<&str> = instruction.splitn(3, ' ').collect();
        Ok(match (words.as_slice(), step) {
            (["compute"], 0) => Message::assistant("42"),
            (["slow"], 0) => call(0, "wait", serde_json::json!({"ms": 300})),
            (["slow"], _) => Message::assistant("slept"),
            (["ask", agent, rest], 0) => call(
                0,
                DELEGATE,
                serde_json::json!({"agent": agent, "instruction": rest}),
            ),
            (["recurse", agent], 0) => call(
                0,
                DELEGATE,
                serde_json::json!({"agent": agent, "instruction": instruction}),
            ),
            (["raw", arguments @ ..], 0) => {
                let arguments = arguments.join(" ");
                Message::tool_calls(vec![ToolCall {
                    id: "call_0_0".into(),
                    name: DELEGATE.into(),
                    arguments,
                }])
            }
            _ => Message::assistant(format!("got: {observed}")),
        })
    }))
}

#[test]
fn a_planner_delegates_and_observes_the_answer_even_with_one_admission_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // The parent waits on its child: it must give its slot back.
    cfg.max_active_tasks = Some(1);
    let (node, _) = Node::open(cfg, planner(), skills()).unwrap();
    let boss = node.create_agent(AgentOptions::new("boss")).unwrap();
    let helper = node.create_agent(AgentOptions::new("helper")).unwrap();
    let task = node.submit(boss, "ask helper compute").unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(state.outcome.as_deref(), Some("got: 42"));
    let table = node.table();
    let child = table
        .tasks
        .values()
        .find(|t| t.parent == Some(task))
        .unwrap();
    assert_eq!(
        (child.agent, child.status, child.outcome.as_deref()),
        (helper, TaskStatus::Completed, Some("42"))
    );
    assert_eq!(child.instruction, "compute");
    assert_eq!(table.tasks.len(), 2);
}

#[test]
fn a_resumed_delegation_reattaches_to_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path(), planner());
    let boss = node.create_agent(AgentOptions::new("boss")).unwrap();
    node.create_agent(AgentOptions::new("helper")).unwrap();
    let task = node.submit(boss, "ask helper slow").unwrap();
    let deadline = Instant::now() + WAIT;
    while !node
        .table()
        .tasks
        .values()
        .any(|t| t.parent == Some(task) && t.steps == 1)
    {
        assert!(
            Instant::now() < deadline,
            "the child never reached its wait"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    node.flush().unwrap();
    drop(node);

    let llm = planner();
    let (node, recovery) = Node::open(config(dir.path()), llm.clone(), skills()).unwrap();
    assert_eq!(recovery.resumed, 2);
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.outcome.as_deref(), Some("got: slept"), "{state:?}");
    assert_eq!(node.table().tasks.len(), 2, "no second child");
    // Asked again: the child's step after its wait, and the parent's step
    // after its delegation; the delegation itself was not re-planned.
    assert_eq!(llm.count(), 2);
}

#[test]
fn bad_delegations_are_error_observations() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path(), planner());
    let boss = node.create_agent(AgentOptions::new("boss")).unwrap();
    let mut narrow = AgentOptions::new("narrow");
    narrow.grants = vec!["fs.*".to_owned()];
    let narrow = node.create_agent(narrow).unwrap();
    let cases = [
        (boss, "ask nobody compute", "no agent `nobody`"),
        (
            boss,
            r#"raw {"agent": "boss"}"#,
            "invalid arguments for `agent.delegate`: missing field `instruction`",
        ),
        (
            boss,
            r#"raw {"agent": "boss", "instruction": "x", "extra": 1}"#,
            "unknown field `extra`",
        ),
        (narrow, "ask boss compute", "unknown skill `agent.delegate`"),
    ];
    for (agent, instruction, expected) in cases {
        let task = node.submit(agent, instruction).unwrap();
        let state = node.wait(task, WAIT).unwrap();
        assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
        let results = tool_results(&state);
        assert!(
            results.len() == 1
                && results[0].starts_with("error: ")
                && results[0].contains(expected),
            "{instruction}: {results:?}"
        );
    }
    assert!(node.table().tasks.values().all(|t| t.parent.is_none()));
}

#[test]
fn delegation_depth_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path(), planner());
    let agent = node.create_agent(AgentOptions::new("echo")).unwrap();
    let task = node.submit(agent, "recurse echo").unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    let outcome = state.outcome.unwrap();
    // Each of the MAX + 1 tasks prefixes what it observed.
    let expected = format!(
        "{}error: delegation is nested {MAX_DELEGATION_DEPTH} deep",
        "got: ".repeat(MAX_DELEGATION_DEPTH + 1)
    );
    assert!(outcome.starts_with(&expected), "{outcome}");
    assert_eq!(node.table().tasks.len(), MAX_DELEGATION_DEPTH + 1);
}
