//! Which failures the OpenAI-compatible client retries, over real HTTP.

mod common;

use std::time::{Duration, Instant};

use tiffany_llm::{LlmError, LlmProvider, Message};
use tiffany_testkit::{MockLlmServer, MockReply};

fn answering_server() -> MockLlmServer {
    MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()))
}

#[tokio::test]
async fn openai_retries_5xx_and_429_then_succeeds() {
    let server = answering_server();
    let provider = common::provider(common::config(&server));

    for status in [503, 429] {
        server.fail_next(2, status);
        let response = provider.complete(&common::question()).await.unwrap();
        assert_eq!(response.message, Message::assistant("ok"));
    }

    assert_eq!(server.request_count(), 6);
    let stats = provider.stats();
    assert_eq!((stats.requests, stats.retries, stats.failures), (2, 4, 0));
    // Failed attempts resent the same conversation; only one was answered.
    assert_eq!(server.repeated_conversations().len(), 1);
}

#[tokio::test]
async fn openai_gives_up_after_max_retries_with_the_last_error() {
    let server = answering_server();
    let mut config = common::config(&server);
    config.max_retries = 2;
    let provider = common::provider(config);
    server.fail_next(10, 500);

    let result = provider.complete(&common::question()).await;

    assert!(
        matches!(result, Err(LlmError::Status { status: 500, .. })),
        "{result:?}"
    );
    assert_eq!(server.request_count(), 3);
    assert_eq!(provider.stats().failures, 1);
}

#[tokio::test]
async fn openai_malformed_bodies_retried_then_reported() {
    let server = answering_server();
    let mut config = common::config(&server);
    config.max_retries = 2;
    let provider = common::provider(config);

    server.malformed_next(2);
    let response = provider.complete(&common::question()).await.unwrap();
    assert_eq!(response.message, Message::assistant("ok"));
    assert_eq!(server.request_count(), 3);

    server.malformed_next(3);
    let result = provider.complete(&common::question()).await;
    let Err(LlmError::Malformed(reason)) = result else {
        panic!("a Malformed error expected: {result:?}");
    };
    assert!(
        reason.contains("EOF"),
        "the reason names the parse error: {reason}"
    );
    assert_eq!(server.request_count(), 6);
}

#[tokio::test]
async fn openai_4xx_not_retried() {
    let server = answering_server();
    let provider = common::provider(common::config(&server));

    for status in [400, 401, 404] {
        server.fail_next(1, status);
        let result = provider.complete(&common::question()).await;
        let Err(LlmError::Status { status: got, body }) = result else {
            panic!("a Status error expected: {result:?}");
        };
        assert_eq!(got, status);
        assert!(body.contains("injected failure"), "{body}");
    }

    assert_eq!(server.request_count(), 3);
    assert_eq!(provider.stats().retries, 0);
}

#[tokio::test]
async fn openai_times_out_a_slow_answer() {
    let server = answering_server();
    let mut config = common::config(&server);
    config.request_timeout = Duration::from_millis(100);
    config.max_retries = 1;
    let provider = common::provider(config);
    server.set_delay(Duration::from_millis(1000));

    let started = Instant::now();
    let result = provider.complete(&common::question()).await;

    assert_eq!(result, Err(LlmError::Timeout(Duration::from_millis(100))));
    // Two attempts of 100 ms and a backoff of at most 10 ms.
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn openai_transport_errors_retried_then_reported() {
    let url = {
        let server = answering_server();
        server.url()
    };
    // The server is gone: its port refuses connections.
    let provider = common::provider(tiffany_llm::OpenAiConfig {
        max_retries: 1,
        backoff_base: Duration::from_millis(1),
        ..tiffany_llm::OpenAiConfig::new(url, "m")
    });

    let result = provider.complete(&common::question()).await;

    assert!(matches!(result, Err(LlmError::Transport(_))), "{result:?}");
    assert_eq!(provider.stats().retries, 1);
}
