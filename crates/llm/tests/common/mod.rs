//! Shared set-up of the HTTP tests: a provider tuned for fast tests in
//! front of a [`MockLlmServer`].

use std::time::Duration;

use serde_json::json;
use tiffany_llm::{BreakerConfig, LlmRequest, Message, OpenAiCompatible, OpenAiConfig, ToolSpec};
use tiffany_testkit::MockLlmServer;

/// A configuration for `server` with millisecond backoffs, no API key
/// (whatever the environment holds) and a breaker that stays closed unless
/// a test tunes it.
pub(crate) fn config(server: &MockLlmServer) -> OpenAiConfig {
    OpenAiConfig {
        api_key: None,
        request_timeout: Duration::from_secs(2),
        max_retries: 3,
        backoff_base: Duration::from_millis(2),
        backoff_cap: Duration::from_millis(10),
        breaker: BreakerConfig {
            error_rate: 1.0,
            slow_calls: 0,
            ..BreakerConfig::default()
        },
        ..OpenAiConfig::new(server.url(), "mock-model")
    }
}

/// A provider for `config`.
pub(crate) fn provider(config: OpenAiConfig) -> OpenAiCompatible {
    OpenAiCompatible::new(config).expect("an HTTP client")
}

/// A user question with two tools offered.
pub(crate) fn question() -> LlmRequest {
    let tool = |name: &str| ToolSpec {
        name: name.into(),
        description: format!("the {name} tool"),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    };
    LlmRequest {
        messages: vec![
            Message::system("be brief"),
            Message::user("weather in Oslo and Rome?"),
        ],
        tools: vec![tool("weather"), tool("time")].into(),
        max_tokens: Some(128),
    }
}
