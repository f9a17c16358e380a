//! The `wait` skill in a ReAct task keeps its deadline across a restart:
//! its start is journaled before it sleeps, and the call a restart resumes
//! sleeps only for what is left. Restarts in the same process stand in
//! for crashes (the journal is in the page cache, as after a SIGKILL).
#![allow(
    clippy::disallowed_methods,
    reason = "the test thread polls and sleeps; no task blocks"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{Counting, WAIT, last_of, open, tool_results};
use tiffany_agent::{AgentOptions, Effect, TaskState, TaskStatus, WaitOn};
use tiffany_llm::{LlmRequest, Message, Role, Scripted, ToolCall};

/// How long the planner's wait asks for.
const WAIT_MS: u64 = 1_500;

/// Step 0 waits `WAIT_MS`; step 1 answers with what the wait reported.
fn planner() -> Arc<Counting> {
    Counting::new(Scripted::from_fn(|request: &LlmRequest| {
        Ok(match request.step() {
            0 => Message::tool_calls(vec![ToolCall {
                id: "call_0_0".to_owned(),
                name: "wait".to_owned(),
                arguments: format!(r#"{{"ms": {WAIT_MS}}}"#),
            }]),
            _ => Message::assistant(last_of(request, Role::Tool)),
        })
    }))
}

/// The journaled starts of the task's waits, in milliseconds since the
/// epoch.
fn wait_starts(state: &TaskState) -> Vec<u64> {
    state
        .effects
        .iter()
        .filter_map(|r| match r.effect {
            Effect::Clock { ms } => Some(ms),
            _ => None,
        })
        .collect()
}

fn now_ms() -> u64 {
    UNIX_EPOCH.elapsed().unwrap().as_millis() as u64
}

#[test]
fn a_wait_resumed_after_a_restart_keeps_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let first = planner();
    let node = open(dir.path(), first.clone());
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let task = node.submit(agent, "wait a while").unwrap();
    let deadline = Instant::now() + WAIT;
    let started_ms = loop {
        let state = node.task(task).unwrap();
        assert!(!state.status.is_terminal(), "finished too soon: {state:?}");
        if let ([ms], TaskStatus::Waiting(WaitOn::Skill)) = (&wait_starts(&state)[..], state.status)
        {
            break *ms;
        }
        assert!(
            Instant::now() < deadline,
            "the wait never started: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    std::thread::sleep(Duration::from_millis(600));
    drop(node);

    let second = planner();
    let node = open(dir.path(), second.clone());
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert!(
        now_ms() >= started_ms + WAIT_MS,
        "woke before the journaled deadline"
    );
    assert_eq!(
        wait_starts(&state),
        [started_ms],
        "the start is journaled once"
    );
    // The observation says how much of the wait passed before the restart:
    // at least the 600 ms the test slept, less than the whole wait.
    let observed = &tool_results(&state)[0];
    let before: u64 = observed
        .strip_prefix(&format!("waited {WAIT_MS} ms ("))
        .and_then(|rest| rest.strip_suffix(" ms of it before a restart)"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("observation: {observed}"));
    assert!((600..WAIT_MS).contains(&before), "{observed}");
    assert_eq!(state.outcome.as_deref(), Some(observed.as_str()));
    // The step's answer came from the journal: only the answer after the
    // wait was asked again.
    assert_eq!((first.count(), second.count()), (1, 1));
    node.shutdown().unwrap();
}

#[test]
fn a_wait_run_once_reports_the_whole_wait() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), planner());
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let task = node.submit(agent, "wait a while").unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(tool_results(&state), [format!("waited {WAIT_MS} ms")]);
    assert_eq!(wait_starts(&state).len(), 1);
    node.shutdown().unwrap();
}
