//! The OpenAI-compatible client against the mock server over real HTTP:
//! answers, tool calls, usage and headers. (The HTTP behaviours share one
//! file per area, not per case, to keep link times down on small machines.)

mod common;

use serde_json::json;
use tiffany_llm::{LlmProvider, Message, ToolCall, Usage};
use tiffany_testkit::{MockLlmServer, MockReply};

#[tokio::test]
async fn openai_final_answer() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("sunny".into()));
    let provider = common::provider(common::config(&server));

    let response = provider.complete(&common::question()).await.unwrap();

    assert_eq!(response.message, Message::assistant("sunny"));
    let sent = &server.requests()[0];
    assert_eq!(sent.status, 200);
    assert_eq!(sent.body["model"], "mock-model");
    assert_eq!(sent.body["max_tokens"], 128);
    assert_eq!(sent.body["tools"][0]["function"]["name"], "weather");
    assert_eq!(sent.authorization, None);
}

#[tokio::test]
async fn openai_single_tool_call_round_trip() {
    let server = MockLlmServer::start();
    let provider = common::provider(common::config(&server));
    let mut request = common::question();

    // The default script calls the first tool offered, then concludes.
    let first = provider.complete(&request).await.unwrap();
    let [call] = first.message.tool_calls.as_slice() else {
        panic!("one tool call expected: {first:?}");
    };
    assert_eq!(
        (call.name.as_str(), call.arguments.as_str()),
        ("weather", "{}")
    );
    assert_eq!(call.id, "call_mock_0_0");

    // The mock rejects a tool message that answers no earlier call, so a 200
    // here shows the call went back with its id.
    request.messages.push(first.message.clone());
    request
        .messages
        .push(Message::tool_result(call.id.clone(), "rain"));
    let second = provider.complete(&request).await.unwrap();
    assert_eq!(second.message, Message::assistant("done: rain"));

    let sent = &server.requests()[1].body["messages"];
    assert_eq!(
        sent[2],
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_mock_0_0",
            "type": "function", "function": {"name": "weather", "arguments": "{}"}}]})
    );
    assert_eq!(
        sent[3],
        json!({"role": "tool", "tool_call_id": "call_mock_0_0", "content": "rain"})
    );
    assert!(server.repeated_conversations().is_empty());
}

#[tokio::test]
async fn openai_parallel_tool_calls() {
    let server = MockLlmServer::with_responder(|_| {
        MockReply::ToolCalls(vec![
            ("weather".into(), json!({"city": "Oslo"})),
            ("weather".into(), json!({"city": "Rome"})),
            ("time".into(), json!({"city": "Rome"})),
        ])
    });
    let provider = common::provider(common::config(&server));

    let response = provider.complete(&common::question()).await.unwrap();

    let expected: Vec<ToolCall> = [("weather", "Oslo"), ("weather", "Rome"), ("time", "Rome")]
        .iter()
        .enumerate()
        .map(|(i, (name, city))| ToolCall {
            id: format!("call_mock_0_{i}"),
            name: (*name).into(),
            arguments: format!(r#"{{"city":"{city}"}}"#),
        })
        .collect();
    assert_eq!(response.message.tool_calls, expected);
    assert_eq!(response.message.content, "");
}

#[tokio::test]
async fn openai_usage_is_reported_and_accounted() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()));
    let provider = common::provider(common::config(&server));
    let request = common::question();

    // The mock reports 10 prompt tokens per message and 5 for an answer.
    for _ in 0..3 {
        let response = provider.complete(&request).await.unwrap();
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 20,
                completion_tokens: 5
            }
        );
    }
    let stats = provider.stats();
    assert_eq!((stats.requests, stats.failures, stats.retries), (3, 0, 0));
    assert_eq!((stats.tokens_in, stats.tokens_out), (60, 15));
}

#[tokio::test]
async fn openai_usage_estimated_when_the_server_reports_none() {
    let server = MockLlmServer::with_responder(|_| {
        MockReply::Raw(
            json!({"choices": [{"message": {"role": "assistant", "content": "12345678"}}]}),
        )
    });
    let provider = common::provider(common::config(&server));
    let request = common::question();

    let response = provider.complete(&request).await.unwrap();

    assert_eq!(
        response.usage,
        Usage::estimate(&request.messages, &response.message)
    );
    assert_eq!(response.usage.completion_tokens, 2);
}

#[tokio::test]
async fn openai_sends_the_api_key_as_bearer() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()));
    let mut config = common::config(&server);
    config.api_key = Some("sk-test".into());
    let provider = common::provider(config);

    provider.complete(&common::question()).await.unwrap();

    assert_eq!(
        server.requests()[0].authorization.as_deref(),
        Some("Bearer sk-test")
    );
}
