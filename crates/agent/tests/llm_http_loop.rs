//! The ReAct loop against the mock OpenAI-compatible server over real HTTP:
//! an in-process node whose planner is `OpenAiCompatible` pointed at
//! `MockLlmServer`. Tool calls (one and several per step), the final
//! answer, error observations for unknown skills and invalid arguments,
//! retried malformed answers, and token accounting.

mod common;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tiffany_agent::{AgentOptions, TaskStatus};
use tiffany_llm::Usage;
use tiffany_testkit::{MockLlmServer, MockReply, MockRequest, RecordedRequest};

use common::{WAIT, client, lenient_breaker, open, tool_results};

/// The usage the mock reports for `reply` to `request` (its documented
/// rule: 10 prompt tokens per message; 5 completion tokens per tool call,
/// or 5 for an answer).
fn mock_usage(request: &MockRequest, reply: &MockReply) -> Usage {
    let completion = match reply {
        MockReply::ToolCalls(calls) => 5 * calls.len() as u64,
        _ => 5,
    };
    Usage {
        prompt_tokens: 10 * request.messages.len() as u64,
        completion_tokens: completion,
    }
}

/// The tool messages of a recorded request, as (tool_call_id, content).
fn tool_messages(request: &RecordedRequest) -> Vec<(String, String)> {
    request.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn http_loop_runs_parallel_calls_reports_bad_calls_and_counts_the_servers_tokens() {
    // Tool names travel as wire names (`fs__write`), as a real model sends
    // them back.
    let reported = Arc::new(Mutex::new(Vec::<Usage>::new()));
    let log = Arc::clone(&reported);
    let server = MockLlmServer::with_responder(move |request| {
        let reply = match request.step() {
            0 => MockReply::ToolCalls(vec![(
                "fs__write".into(),
                json!({"path": "notes/a.txt", "content": "hello"}),
            )]),
            // Four calls in one step: a read, a noop, a skill that does not
            // exist and arguments that do not fit the schema.
            1 => MockReply::ToolCalls(vec![
                ("fs__read".into(), json!({"path": "notes/a.txt"})),
                ("noop".into(), json!({"k": 1})),
                ("no.such.skill".into(), json!({})),
                ("fs__read".into(), json!({"path": 5})),
            ]),
            _ => MockReply::Answer(format!(
                "done after {} results",
                request.messages.iter().filter(|m| m.role == "tool").count()
            )),
        };
        log.lock().unwrap().push(mock_usage(request, &reply));
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let llm = client(&server.url(), 0, lenient_breaker());
    let node = open(dir.path(), llm.clone());
    let agent = node.create_agent(AgentOptions::new("http")).unwrap();
    let task = node.submit(agent, "write a note, read it back").unwrap();
    let state = node.wait(task, WAIT).unwrap();

    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(state.outcome.as_deref(), Some("done after 5 results"));
    assert_eq!(state.steps, 3);
    assert_eq!(server.request_count(), 3);
    assert!(server.repeated_conversations().is_empty());

    // The planner saw every result of the parallel step, each answering its
    // own call, the failures as error observations.
    let requests = server.requests();
    let seen = tool_messages(&requests[2]);
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    for id in [
        "call_mock_0_0",
        "call_mock_1_0",
        "call_mock_1_1",
        "call_mock_1_2",
        "call_mock_1_3",
    ] {
        assert!(ids.contains(&id), "{id} missing from {seen:?}");
    }
    let result_of = |id: &str| {
        seen.iter()
            .find(|(i, _)| i == id)
            .map(|(_, c)| c.as_str())
            .unwrap()
    };
    assert_eq!(result_of("call_mock_1_0"), "hello");
    assert_eq!(
        serde_json::from_str::<Value>(result_of("call_mock_1_1")).unwrap(),
        json!({"k": 1})
    );
    assert_eq!(
        result_of("call_mock_1_2"),
        "error: unknown skill `no.such.skill`"
    );
    assert!(
        result_of("call_mock_1_3").starts_with("error: invalid arguments for `fs.read`"),
        "{seen:?}"
    );
    // The journaled conversation is the one the planner saw.
    assert_eq!(tool_results(&state).len(), 5);

    // Token accounting: the task's usage is what the server reported.
    let expected = reported
        .lock()
        .unwrap()
        .iter()
        .fold(Usage::default(), |a, u| Usage {
            prompt_tokens: a.prompt_tokens + u.prompt_tokens,
            completion_tokens: a.completion_tokens + u.completion_tokens,
        });
    assert_eq!(state.usage, expected);
    // 3 requests of 2, 4 and 9 messages; 5 + 20 + 5 completion tokens.
    assert_eq!(
        expected,
        Usage {
            prompt_tokens: 150,
            completion_tokens: 30
        }
    );
    let stats = llm.stats();
    assert_eq!(
        (stats.tokens_in, stats.tokens_out),
        (expected.prompt_tokens, expected.completion_tokens)
    );
    #[allow(clippy::disallowed_methods, reason = "test code, not a task")]
    let note = std::fs::read_to_string(dir.path().join("workspaces/http/notes/a.txt")).unwrap();
    assert_eq!(note, "hello");
    node.shutdown().unwrap();
}

#[test]
fn http_loop_turns_unparsable_arguments_into_an_observation_and_continues() {
    // Arguments that are not JSON at all, which `MockReply::ToolCalls`
    // cannot produce: a raw completion.
    let server = MockLlmServer::with_responder(|request| match request.step() {
        0 => MockReply::Raw(json!({
            "id": "chatcmpl-raw",
            "object": "chat.completion",
            "created": 0,
            "model": request.model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "raw_0", "type": "function",
                    "function": {"name": "fs__read", "arguments": "{\"path\": "}}]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        })),
        _ => MockReply::Answer(format!(
            "observed: {}",
            request.last_tool_result().unwrap_or("nothing")
        )),
    });
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), client(&server.url(), 0, lenient_breaker()));
    let agent = node.create_agent(AgentOptions::new("raw")).unwrap();
    let task = node.submit(agent, "read with broken arguments").unwrap();
    let state = node.wait(task, WAIT).unwrap();

    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    let results = tool_results(&state);
    assert_eq!(results.len(), 1);
    assert!(
        results[0].starts_with("error: invalid arguments for `fs.read`"),
        "{results:?}"
    );
    // The planner's next request carried the observation.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        tool_messages(&requests[1]),
        [("raw_0".to_owned(), results[0].clone())]
    );
    assert_eq!(
        state.outcome.as_deref(),
        Some(format!("observed: {}", results[0]).as_str())
    );
    // 7 + 3 from the raw answer, then 10 per message (system, user,
    // assistant, tool) + 5.
    assert_eq!(
        state.usage,
        Usage {
            prompt_tokens: 7 + 40,
            completion_tokens: 3 + 5
        }
    );
    node.shutdown().unwrap();
}

#[test]
fn http_loop_retries_malformed_answers_then_fails_the_task_with_a_clear_error() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("fine".into()));
    let dir = tempfile::tempdir().unwrap();
    // Two retries: three attempts per completion.
    let llm = client(&server.url(), 2, lenient_breaker());
    let node = open(dir.path(), llm.clone());
    let agent = node.create_agent(AgentOptions::new("retry")).unwrap();

    // Two malformed bodies, then a good one: the step succeeds.
    server.malformed_next(2);
    let task = node.submit(agent, "survive two bad answers").unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(state.outcome.as_deref(), Some("fine"));
    assert_eq!(state.steps, 1);
    assert_eq!(server.request_count(), 3);
    assert_eq!(llm.stats().retries, 2);

    // Three malformed bodies exhaust the retries: the task fails, saying
    // which step and why.
    server.malformed_next(3);
    let task = node.submit(agent, "give up after three").unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Failed, "{state:?}");
    assert_eq!(state.steps, 0);
    let error = state.outcome.unwrap();
    assert!(
        error.starts_with("the planner failed at step 0: malformed LLM response"),
        "{error}"
    );
    assert_eq!(server.request_count(), 6);
    assert_eq!(llm.stats().failures, 1);
    node.shutdown().unwrap();
}
