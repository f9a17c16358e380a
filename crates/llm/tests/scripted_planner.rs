//! The offline scripted planner: steps, deterministic ids and usage, a pure
//! function of the conversation.

use std::time::{Duration, Instant};

use serde_json::json;
use tiffany_llm::{LlmError, LlmProvider, LlmRequest, Message, Scripted, Step, Usage};

fn script() -> Scripted {
    Scripted::steps(vec![
        Step::ToolCalls(vec![
            ("weather".into(), json!({"city": "Oslo"})),
            ("weather".into(), json!({"city": "Rome"})),
        ]),
        Step::answer("Oslo: rain, Rome: sun"),
    ])
}

fn ask(text: &str) -> LlmRequest {
    LlmRequest {
        messages: vec![Message::system("be brief"), Message::user(text)],
        ..LlmRequest::default()
    }
}

#[tokio::test]
async fn scripted_walks_steps_with_deterministic_ids() {
    let planner = script();
    let mut request = ask("weather?");

    let first = planner.complete(&request).await.unwrap();
    let ids: Vec<&str> = first
        .message
        .tool_calls
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["call_0_0", "call_0_1"]);
    assert_eq!(first.message.tool_calls[1].arguments, r#"{"city":"Rome"}"#);

    request.messages.push(first.message.clone());
    request
        .messages
        .push(Message::tool_result("call_0_0", "rain"));
    request
        .messages
        .push(Message::tool_result("call_0_1", "sun"));
    let second = planner.complete(&request).await.unwrap();
    assert_eq!(second.message, Message::assistant("Oslo: rain, Rome: sun"));

    // Past the script's end.
    request.messages.push(second.message);
    let third = planner.complete(&request).await;
    assert!(matches!(third, Err(LlmError::Planner(_))), "{third:?}");
}

#[tokio::test]
async fn scripted_is_a_pure_function_of_the_conversation() {
    let request = ask("weather?");
    let a = script().complete(&request).await.unwrap();
    let b = script().complete(&request).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.usage, Usage::estimate(&request.messages, &a.message));

    // A new user message starts the script again.
    let mut follow_up = request.clone();
    follow_up.messages.push(a.message);
    follow_up.messages.push(Message::user("and tomorrow?"));
    assert_eq!(follow_up.step(), 0);
    let c = script().complete(&follow_up).await.unwrap();
    assert_eq!(c.message.tool_calls.len(), 2);
}

#[tokio::test]
async fn scripted_from_fn_and_latency() {
    let planner = Scripted::from_fn(|request| {
        Ok(Message::assistant(format!(
            "{} messages",
            request.messages.len()
        )))
    })
    .with_latency(Duration::from_millis(30));

    let started = Instant::now();
    let response = planner.complete(&ask("hi")).await.unwrap();

    assert_eq!(response.message.content, "2 messages");
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(planner.name(), "scripted");
}

#[test]
fn scripted_without_latency_is_ready_at_once() {
    // No runtime at all: the future completes on its first poll.
    let planner = script();
    let request = ask("weather?");
    let mut future = planner.complete(&request);
    let waker = std::task::Waker::noop();
    let poll = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    assert!(matches!(poll, std::task::Poll::Ready(Ok(_))));
}
