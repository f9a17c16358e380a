//! The circuit breaker of the OpenAI-compatible client, over real HTTP:
//! it opens on errors or latency, fails fast, and closes after a probe.

mod common;

use std::time::Duration;

use tiffany_llm::{BreakerConfig, BreakerState, LlmError, LlmProvider, Message, OpenAiCompatible};
use tiffany_testkit::{MockLlmServer, MockReply};

/// Long enough that a stalled test machine does not reach half-open before
/// the fail-fast check; short enough to keep each test under a second.
const COOLDOWN: Duration = Duration::from_millis(300);

fn breaker_provider(server: &MockLlmServer, breaker: BreakerConfig) -> OpenAiCompatible {
    let mut config = common::config(server);
    config.max_retries = 0;
    config.breaker = BreakerConfig {
        cooldown: COOLDOWN,
        ..breaker
    };
    common::provider(config)
}

fn error_breaker() -> BreakerConfig {
    BreakerConfig {
        window: 4,
        min_calls: 2,
        error_rate: 0.5,
        slow_calls: 0,
        ..BreakerConfig::default()
    }
}

#[tokio::test]
async fn openai_breaker_opens_on_errors_and_closes_after_a_probe() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()));
    let provider = breaker_provider(&server, error_breaker());
    let request = common::question();

    server.fail_next(2, 502);
    for _ in 0..2 {
        let result = provider.complete(&request).await;
        assert!(
            matches!(result, Err(LlmError::Status { status: 502, .. })),
            "{result:?}"
        );
    }
    assert!(matches!(
        provider.breaker_state(),
        BreakerState::Open { .. }
    ));

    // Open: fails fast without reaching the server.
    let result = provider.complete(&request).await;
    let Err(LlmError::CircuitOpen { retry_in }) = result else {
        panic!("CircuitOpen expected: {result:?}");
    };
    assert!(retry_in <= COOLDOWN);
    assert_eq!(server.request_count(), 2);

    tokio::time::sleep(COOLDOWN).await;
    assert_eq!(provider.breaker_state(), BreakerState::HalfOpen);
    let probe = provider.complete(&request).await.unwrap();
    assert_eq!(probe.message, Message::assistant("ok"));
    assert_eq!(provider.breaker_state(), BreakerState::Closed);
    assert_eq!(server.request_count(), 3);

    let stats = provider.stats();
    assert_eq!((stats.requests, stats.failures, stats.rejected), (4, 3, 1));
    assert_eq!(stats.breaker_opened, 1);
}

#[tokio::test]
async fn openai_breaker_failed_probe_reopens() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()));
    let provider = breaker_provider(&server, error_breaker());
    let request = common::question();

    server.fail_next(3, 500);
    for _ in 0..2 {
        assert!(provider.complete(&request).await.is_err());
    }
    tokio::time::sleep(COOLDOWN).await;
    let probe = provider.complete(&request).await;
    assert!(
        matches!(probe, Err(LlmError::Status { status: 500, .. })),
        "{probe:?}"
    );
    assert!(matches!(
        provider.breaker_state(),
        BreakerState::Open { .. }
    ));
    assert_eq!(provider.stats().breaker_opened, 2);

    tokio::time::sleep(COOLDOWN).await;
    assert!(provider.complete(&request).await.is_ok());
    assert_eq!(provider.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn openai_breaker_opens_on_a_run_of_slow_answers() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()));
    let provider = breaker_provider(
        &server,
        BreakerConfig {
            error_rate: 1.0,
            slow_call: Duration::from_millis(100),
            slow_calls: 2,
            ..BreakerConfig::default()
        },
    );
    let request = common::question();

    server.set_delay(Duration::from_millis(150));
    for _ in 0..2 {
        // Slow but successful.
        assert!(provider.complete(&request).await.is_ok());
    }
    assert!(matches!(
        provider.breaker_state(),
        BreakerState::Open { .. }
    ));
    assert!(matches!(
        provider.complete(&request).await,
        Err(LlmError::CircuitOpen { .. })
    ));

    server.set_delay(Duration::ZERO);
    tokio::time::sleep(COOLDOWN).await;
    assert!(provider.complete(&request).await.is_ok());
    assert_eq!(provider.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn openai_breaker_tripped_by_hand() {
    let server = MockLlmServer::with_responder(|_| MockReply::Answer("ok".into()));
    let provider = breaker_provider(&server, error_breaker());

    provider.trip_breaker();

    assert!(matches!(
        provider.complete(&common::question()).await,
        Err(LlmError::CircuitOpen { .. })
    ));
    assert_eq!(server.request_count(), 0);
}
