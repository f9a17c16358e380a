//! The OpenAI-compatible client against the mock server over real HTTP:
//! answers, tool calls, usage and headers. (The HTTP behaviours share one
//! file per area, not per case, to keep link times down on small machines.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tiffany_llm::{LlmProvider, Message, ToolCall, Usage};
use tiffany_testkit::{MockLlmServer, MockReply};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

/// A bare HTTP/1.1 server for framing cases the mock does not produce: it
/// answers each request with the next of `answers`, where an empty answer
/// means closing the connection without answering (as a server whose
/// keep-alive timeout ran out as the request came would), and closes the
/// connection after each answer when `close_after_each` holds. Returns its
/// base URL and a count of the connections it accepted.
async fn bare_server(
    answers: Vec<&'static str>,
    close_after_each: bool,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            loop {
                if read_request(&mut stream).await.is_none() {
                    break;
                }
                let Some(answer) = answers.next() else { return };
                stream.write_all(answer.as_bytes()).await.unwrap();
                if close_after_each || answer.is_empty() {
                    break;
                }
            }
        }
    });
    (url, accepted)
}

/// Reads one request (head and `Content-Length` body); `None` at the end of
/// the stream.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return Some(());
            }
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const ANSWER_OK: &str = r#"{"choices":[{"message":{"role":"assistant","content":"ok"}}]}"#;

fn length_framed(body: &str) -> &'static str {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .leak()
}

#[tokio::test]
async fn openai_reads_chunked_answers_and_reuses_the_connection() {
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        10\r\n{\"choices\":[{\"me\r\n\
        2d\r\nssage\":{\"role\":\"assistant\",\"content\":\"ok\"}}]}\r\n\
        0\r\n\r\n";
    let (url, accepted) =
        bare_server(vec![chunked, chunked, length_framed(ANSWER_OK)], false).await;
    let provider = common::provider(tiffany_llm::OpenAiConfig {
        api_key: None,
        ..tiffany_llm::OpenAiConfig::new(url, "m")
    });

    for _ in 0..3 {
        let response = provider.complete(&common::question()).await.unwrap();
        assert_eq!(response.message, Message::assistant("ok"));
    }

    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
    assert_eq!(provider.stats().retries, 0);
}

#[tokio::test]
async fn openai_survives_connections_the_server_closed_while_idle() {
    let answer = length_framed(ANSWER_OK);
    let (url, accepted) = bare_server(vec![answer; 4], true).await;
    let provider = common::provider(tiffany_llm::OpenAiConfig {
        api_key: None,
        max_retries: 0,
        ..tiffany_llm::OpenAiConfig::new(url, "m")
    });

    // The server's close reaches the client before its next request (found
    // when the connection leaves the pool, or when it is written to).
    for pause in [0, 0, 50, 0] {
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        let response = provider.complete(&common::question()).await.unwrap();
        assert_eq!(response.message, Message::assistant("ok"));
    }

    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    let stats = provider.stats();
    assert_eq!((stats.retries, stats.failures), (0, 0));
}

#[tokio::test]
async fn openai_resends_on_a_fresh_connection_when_a_reused_one_closes_unanswered() {
    let answer = length_framed(ANSWER_OK);
    let (url, accepted) = bare_server(vec![answer, "", answer, "", answer], false).await;
    let provider = common::provider(tiffany_llm::OpenAiConfig {
        api_key: None,
        max_retries: 0,
        ..tiffany_llm::OpenAiConfig::new(url, "m")
    });

    for _ in 0..3 {
        let response = provider.complete(&common::question()).await.unwrap();
        assert_eq!(response.message, Message::assistant("ok"));
    }

    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    let stats = provider.stats();
    assert_eq!((stats.retries, stats.failures), (0, 0));
}

#[tokio::test]
async fn openai_fresh_connection_closed_unanswered_is_a_transport_error() {
    let (url, _) = bare_server(vec![""], false).await;
    let provider = common::provider(tiffany_llm::OpenAiConfig {
        api_key: None,
        max_retries: 0,
        ..tiffany_llm::OpenAiConfig::new(url, "m")
    });

    let result = provider.complete(&common::question()).await;

    assert!(
        matches!(&result, Err(tiffany_llm::LlmError::Transport(m)) if m.contains("without answering")),
        "{result:?}"
    );
}
