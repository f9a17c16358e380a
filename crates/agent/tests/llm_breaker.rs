//! The LLM circuit breaker as the agents see it: a failing server makes new
//! tasks fail fast with the breaker's error (no request reaches the
//! server), and once the cooldown has passed a probe goes through, closes
//! the breaker, and new tasks complete.

mod common;

use std::time::{Duration, Instant};

use tiffany_agent::{AgentOptions, TaskStatus};
use tiffany_llm::{BreakerConfig, BreakerState};
use tiffany_testkit::{MockLlmServer, MockReply};

use common::{WAIT, client, open};

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the test's thread waits for the cooldown, it is not a task"
)]
fn breaker_fails_tasks_fast_while_open_and_lets_them_complete_after_a_probe() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("answered".into()));
    // Opens after two failures out of two; half-opens a second later
    // (long enough for the fail-fast phase below to run inside it).
    let breaker = BreakerConfig {
        window: 4,
        min_calls: 2,
        error_rate: 0.5,
        slow_calls: 0,
        cooldown: Duration::from_secs(1),
        ..BreakerConfig::default()
    };
    let llm = client(&server.url(), 0, breaker);
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), llm.clone());
    let agent = node.create_agent(AgentOptions::new("breaker")).unwrap();
    let run = |instruction: &str| {
        let task = node.submit(agent, instruction).unwrap();
        node.wait(task, WAIT).unwrap()
    };

    // The server fails: the first two tasks reach it and fail with its
    // status, which trips the breaker.
    server.fail_next(u32::MAX, 503);
    for i in 0..2 {
        let state = run(&format!("reach a failing server {i}"));
        assert_eq!(state.status, TaskStatus::Failed, "{state:?}");
        let error = state.outcome.unwrap();
        assert!(error.contains("HTTP 503"), "{error}");
    }
    assert_eq!(server.request_count(), 2);
    assert!(matches!(llm.breaker_state(), BreakerState::Open { .. }));

    // While it is open, tasks fail fast with the breaker's error and no
    // request reaches the server.
    for i in 0..3 {
        let state = run(&format!("fail fast {i}"));
        assert_eq!(state.status, TaskStatus::Failed, "{state:?}");
        let error = state.outcome.unwrap();
        assert!(
            error.starts_with("the planner failed at step 0: the LLM circuit breaker is open"),
            "{error}"
        );
    }
    assert_eq!(server.request_count(), 2);
    assert_eq!(llm.stats().rejected, 3);

    // The server recovers; after the cooldown the next task is the probe.
    server.fail_next(0, 503);
    let deadline = Instant::now() + WAIT;
    while llm.breaker_state() != BreakerState::HalfOpen {
        assert!(Instant::now() < deadline, "the breaker never half-opened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let probe = run("probe");
    assert_eq!(probe.status, TaskStatus::Completed, "{probe:?}");
    assert_eq!(probe.outcome.as_deref(), Some("answered"));
    assert_eq!(llm.breaker_state(), BreakerState::Closed);
    assert_eq!(server.request_count(), 3);

    // Closed again: every new task completes.
    for i in 0..3 {
        let state = run(&format!("after recovery {i}"));
        assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    }
    assert_eq!(server.request_count(), 6);
    assert_eq!(llm.stats().breaker_opened, 1);
    node.shutdown().unwrap();
}
