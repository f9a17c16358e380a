//! A task replayed from the journal equals the live one: run tasks to
//! their end against the mock server over HTTP (with snapshots written
//! mid-run), then read the node back read-only with
//! `tiffany_agent::inspect` and compare every task (conversation, steps,
//! usage, outcome, status) with the live table: after a crash-like stop,
//! and again after a clean shutdown (which writes a snapshot that compacts
//! finished conversations away).

mod common;

use serde_json::json;
use tiffany_agent::{AgentOptions, Node, TaskStatus};
use tiffany_llm::Role;
use tiffany_testkit::{MockLlmServer, MockReply};

use common::{WAIT, client, config, lenient_breaker, skills};

#[test]
fn replay_of_the_journal_equals_the_live_tasks() {
    let server = MockLlmServer::with_responder(|request| match request.step() {
        0 => MockReply::ToolCalls(vec![
            ("fs__write".into(), json!({"path": "a.txt", "content": "A"})),
            (
                "fs__write".into(),
                json!({"path": "b.txt", "content": "BB"}),
            ),
        ]),
        1 => MockReply::ToolCalls(vec![
            ("fs__read".into(), json!({"path": "a.txt"})),
            ("fs__read".into(), json!({"path": "missing.txt"})),
            ("noop".into(), json!({})),
        ]),
        _ => MockReply::Answer(format!("finished with {} messages", request.messages.len())),
    });
    let dir = tempfile::tempdir().unwrap();
    let llm = client(&server.url(), 0, lenient_breaker());
    let mut small_snapshots = config(dir.path());
    // A snapshot every few events: replay must merge them.
    small_snapshots.snapshot_every_bytes = 2048;
    let (node, _) = Node::open(small_snapshots, llm.clone(), skills()).unwrap();
    // One task whose planner fails: its failure replays too.
    server.fail_next(1, 400);
    let failing = node.create_agent(AgentOptions::new("failing")).unwrap();
    let failed = node.submit(failing, "meet a 400").unwrap();
    assert_eq!(node.wait(failed, WAIT).unwrap().status, TaskStatus::Failed);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let agent = node
            .create_agent(AgentOptions::new(format!("r{i}")))
            .unwrap();
        tasks.push(node.submit(agent, &format!("task {i}")).unwrap());
    }
    tasks.push(failed);
    assert_eq!(node.wait_idle(WAIT), 0);
    let live = node.table();
    node.flush().unwrap();
    // Dropped without a clean shutdown: the reader replays the events.
    drop(node);

    let (replayed, recovery) = tiffany_agent::inspect(dir.path()).unwrap();
    assert_eq!((recovery.finished, recovery.resumed), (tasks.len(), 0));
    assert!(
        recovery.snapshot.is_some(),
        "snapshots were written mid-run"
    );
    assert_eq!(replayed.agents, live.agents);
    let statuses: Vec<TaskStatus> = live.tasks.values().map(|t| t.status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == TaskStatus::Failed)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == TaskStatus::Completed)
            .count(),
        4
    );
    for task in &tasks {
        let (live, replayed) = (&live.tasks[task], &replayed.tasks[task]);
        assert_eq!(replayed.conversation, live.conversation, "task {task}");
        assert_eq!(replayed.steps, live.steps, "task {task}");
        assert_eq!(replayed.usage, live.usage, "task {task}");
        assert_eq!(replayed.outcome, live.outcome, "task {task}");
        assert_eq!(replayed, live, "task {task}");
    }

    // After a clean shutdown too (its snapshot drops finished
    // conversations; inspect replays the older events to keep them).
    let asked = server.request_count();
    let (node, recovery) = Node::open(config(dir.path()), llm, skills()).unwrap();
    assert_eq!(recovery.resumed, 0);
    assert_eq!(node.wait_idle(WAIT), 0);
    node.shutdown().unwrap();
    let (after_shutdown, recovery) = tiffany_agent::inspect(dir.path()).unwrap();
    assert!(recovery.clean_shutdown);
    assert_eq!(after_shutdown.tasks, live.tasks);
    assert_eq!(server.request_count(), asked, "nothing was asked again");

    // And the journaled conversation is the one the server was sent: the
    // last request of a completed task is its conversation minus the
    // final answer.
    let done = &live.tasks[&tasks[0]];
    assert_eq!(done.steps, 3);
    let last = server
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .find(|r| {
            r.body["messages"][1]["content"] == "task 0"
                && r.body["messages"].as_array().unwrap().len() + 1 == done.conversation.len()
        })
        .expect("the last request of task 0");
    let sent = last.body["messages"].as_array().unwrap();
    for (m, s) in done.conversation.iter().zip(sent) {
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        assert_eq!(s["role"], role);
        assert_eq!(s["content"].as_str().unwrap_or(""), m.content);
        assert_eq!(s["tool_call_id"].as_str(), m.tool_call_id.as_deref());
        let ids: Vec<&str> = s["tool_calls"]
            .as_array()
            .map(|calls| calls.iter().map(|c| c["id"].as_str().unwrap()).collect())
            .unwrap_or_default();
        let journaled: Vec<&str> = m.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, journaled);
    }
}
