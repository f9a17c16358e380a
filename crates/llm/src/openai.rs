//! The OpenAI-compatible chat-completions client.
//!
//! Invariants:
//! - One `complete` is at most `1 + max_retries` HTTP attempts. Each attempt
//!   first asks the circuit breaker; a refusal ends the completion at once
//!   with [`LlmError::CircuitOpen`] (also between retries: an opened breaker
//!   stops the retry loop). Each admitted attempt reports its outcome and
//!   latency to the breaker exactly once, or is abandoned if the future is
//!   dropped mid-flight.
//! - Each attempt (send and whole body) is bounded by `request-timeout`
//!   with a tokio timer; backoff sleeps are tokio timers too. Nothing
//!   blocks a thread, and no lock is held across an `.await`.
//! - Counters are monotonic atomics: `requests` counts completions,
//!   `retries` attempts after the first, `failures` completions that
//!   returned an error (including refusals by the open breaker, also counted
//!   in `rejected`), tokens those reported by the server (or estimated).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Outcome};
use crate::http1::{self, Http1Client};
use crate::retry::{Backoff, is_retryable};
use crate::{BoxFuture, LlmError, LlmProvider, LlmRequest, LlmResponse, wire};

/// What an assistant message that only calls tools sends as `content`.
///
/// Servers disagree: OpenAI's reference and some gateways want `null`;
/// Ollama rejects `null` ("invalid message content type") and accepts an
/// empty string, as do OpenAI, vLLM and llama.cpp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolCallContent {
    /// `"content": ""` (the default: accepted by every server we target).
    #[default]
    EmptyString,
    /// `"content": null`.
    Null,
}

/// How to reach an OpenAI-compatible server, and how hard to try.
///
/// In files the keys are kebab-case and durations are milliseconds
/// (`base-url`, `request-timeout-ms`, `breaker.cooldown-ms`). The API key is
/// never serialized and is redacted from `Debug`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct OpenAiConfig {
    /// The API root; requests go to `{base_url}/chat/completions`. Default
    /// `http://127.0.0.1:11434/v1` (a local Ollama).
    pub base_url: String,
    /// The model name sent with each request. Default empty (set it).
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set. Default: none, or
    /// `OPENAI_API_KEY` with [`OpenAiConfig::new`] and
    /// [`OpenAiConfig::or_env_api_key`].
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Bound on one attempt, from sending to the end of the body. Default
    /// 60 s.
    #[serde(rename = "request-timeout-ms", with = "crate::serde_ms")]
    pub request_timeout: Duration,
    /// Attempts after the first one fails with a retryable error. Default 3.
    pub max_retries: u32,
    /// Backoff before the first retry (doubling for each next retry, with
    /// jitter). Default 250 ms.
    #[serde(rename = "backoff-base-ms", with = "crate::serde_ms")]
    pub backoff_base: Duration,
    /// The longest backoff. Default 10 s.
    #[serde(rename = "backoff-cap-ms", with = "crate::serde_ms")]
    pub backoff_cap: Duration,
    /// When the circuit breaker opens. Default [`BreakerConfig::default`].
    pub breaker: BreakerConfig,
    /// `content` of assistant messages that only call tools. Default
    /// [`ToolCallContent::EmptyString`].
    pub tool_call_content: ToolCallContent,
}

impl Default for OpenAiConfig {
    fn default() -> OpenAiConfig {
        OpenAiConfig {
            base_url: "http://127.0.0.1:11434/v1".to_owned(),
            model: String::new(),
            api_key: None,
            request_timeout: Duration::from_secs(60),
            max_retries: 3,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
            tool_call_content: ToolCallContent::default(),
        }
    }
}

impl OpenAiConfig {
    /// A configuration for `model` at `base_url` with default limits, its
    /// API key taken from `OPENAI_API_KEY` if that is set and not empty.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            ..OpenAiConfig::default()
        }
        .or_env_api_key()
    }

    /// Fills a missing API key from `OPENAI_API_KEY` (if set and not
    /// empty), for a configuration read from a file.
    pub fn or_env_api_key(mut self) -> OpenAiConfig {
        if self.api_key.is_none() {
            self.api_key = std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
        }
        self
    }

    /// The URL completions are posted to.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("breaker", &self.breaker)
            .field("tool_call_content", &self.tool_call_content)
            .finish()
    }
}

/// A snapshot of a provider's counters and breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlmStats {
    /// Completions asked for.
    pub requests: u64,
    /// HTTP attempts after the first of a completion.
    pub retries: u64,
    /// Completions that returned an error.
    pub failures: u64,
    /// Completions refused by the open breaker without an attempt (also
    /// counted in `failures`).
    pub rejected: u64,
    /// Prompt tokens of successful completions.
    pub tokens_in: u64,
    /// Completion tokens of successful completions.
    pub tokens_out: u64,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
    /// The breaker now.
    pub breaker: BreakerState,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
}

/// An [`LlmProvider`] for any server that speaks OpenAI's chat completions
/// with tool calling: Ollama, vLLM, a llama.cpp server, OpenAI.
///
/// Cheap to share behind an `Arc`; all agents of a node should share one so
/// that its breaker sees the server's health as a whole.
#[derive(Debug)]
pub struct OpenAiCompatible {
    config: OpenAiConfig,
    endpoint: String,
    transport: Transport,
    breaker: Mutex<CircuitBreaker>,
    backoff: Backoff,
    counters: Counters,
}

impl OpenAiCompatible {
    /// A provider for `config`. Fails with [`LlmError::Transport`] only if
    /// the HTTP client cannot be built: a base URL that does not parse, an
    /// API key with control characters, no usable TLS roots.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiCompatible, LlmError> {
        let transport = Transport::for_config(&config)?;
        Ok(OpenAiCompatible::with_transport(config, transport))
    }

    fn with_transport(config: OpenAiConfig, transport: Transport) -> OpenAiCompatible {
        OpenAiCompatible {
            endpoint: config.endpoint(),
            transport,
            breaker: Mutex::new(CircuitBreaker::new(config.breaker.clone())),
            backoff: Backoff::new(config.backoff_base, config.backoff_cap),
            counters: Counters::default(),
            config,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The breaker now.
    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state(now())
    }

    /// Opens the breaker for one cooldown, as the overload controller does
    /// when it sheds LLM load; it then recovers through a probe as usual.
    pub fn trip_breaker(&self) {
        self.lock_breaker().trip(now());
    }

    /// Counters since creation and the breaker now.
    pub fn stats(&self) -> LlmStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut breaker = self.lock_breaker();
        LlmStats {
            requests: load(&self.counters.requests),
            retries: load(&self.counters.retries),
            failures: load(&self.counters.failures),
            rejected: load(&self.counters.rejected),
            tokens_in: load(&self.counters.tokens_in),
            tokens_out: load(&self.counters.tokens_out),
            breaker_opened: breaker.opened(),
            breaker: breaker.state(now()),
        }
    }

    fn lock_breaker(&self) -> MutexGuard<'_, CircuitBreaker> {
        // The breaker's invariants hold between method calls, so a panic
        // elsewhere while it was locked leaves it usable.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn complete_with_retries(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let prepared = self
            .transport
            .prepare(wire::encoded_size_hint(request), |out| {
                wire::encode(
                    &self.config.model,
                    request,
                    self.config.tool_call_content,
                    out,
                )
            })?;
        let mut retry = 0;
        loop {
            let permit = match self.lock_breaker().try_acquire(now()) {
                Ok(admission) => Permit {
                    provider: self,
                    admission: Some(admission),
                },
                Err(retry_in) => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(LlmError::CircuitOpen { retry_in });
                }
            };
            let started = Instant::now();
            let result = self.attempt(&prepared, request).await;
            permit.finish(Outcome {
                failed: result.as_ref().is_err_and(is_retryable),
                latency: started.elapsed(),
            });
            match result {
                Ok(response) => return Ok(response),
                Err(error) if retry < self.config.max_retries && is_retryable(&error) => {
                    retry += 1;
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = self.backoff.delay(retry);
                    tracing::warn!(%error, retry, ?delay, endpoint = %self.endpoint, "LLM attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One HTTP attempt, bounded by the request timeout.
    async fn attempt(
        &self,
        prepared: &Prepared,
        request: &LlmRequest,
    ) -> Result<LlmResponse, LlmError> {
        let exchange = async {
            let response = self
                .transport
                .send(prepared, self.config.api_key.as_deref())
                .await
                .map_err(LlmError::Transport)?;
            if !(200..300).contains(&response.status) {
                return Err(LlmError::Status {
                    status: response.status,
                    body: wire::excerpt(&response.body),
                });
            }
            wire::decode(&response.body, request)
        };
        let timeout = self.config.request_timeout;
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| LlmError::Timeout(timeout))?
    }
}

/// How requests travel: a plain `http://` endpoint through the built-in
/// HTTP/1.1 client ([`crate::http1`]), anything else (`https://`, or any
/// endpoint when a proxy is configured in the environment) through reqwest.
#[derive(Debug)]
enum Transport {
    Http1(Http1Client),
    Reqwest {
        client: reqwest::Client,
        endpoint: reqwest::Url,
    },
}

/// What a transport sends for one completion: `bytes[start..]`.
struct Prepared {
    bytes: Vec<u8>,
    start: usize,
}

impl Prepared {
    fn wire(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// The environment variables through which reqwest picks up a proxy for
/// `http://` URLs; when one is set, plain endpoints use reqwest too.
const HTTP_PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

impl Transport {
    fn for_config(config: &OpenAiConfig) -> Result<Transport, LlmError> {
        let endpoint = reqwest::Url::parse(&config.endpoint()).map_err(|e| {
            LlmError::Transport(format!("invalid base URL {:?}: {e}", config.base_url))
        })?;
        let proxied = HTTP_PROXY_VARS
            .iter()
            .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
        if endpoint.scheme() == "http" && !proxied {
            Http1Client::new(&endpoint, config.api_key.as_deref())
                .map(Transport::Http1)
                .map_err(LlmError::Transport)
        } else {
            Transport::reqwest(config, endpoint)
        }
    }

    fn reqwest(config: &OpenAiConfig, endpoint: reqwest::Url) -> Result<Transport, LlmError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(http1::IDLE_TIMEOUT)
            .build()
            .map_err(|e| LlmError::Transport(error_chain(&e)))?;
        Ok(Transport::Reqwest { client, endpoint })
    }

    /// What [`Transport::send`] sends for the JSON body `encode` writes
    /// (about `body_size_hint` bytes), built once per completion for all its
    /// attempts: the whole HTTP request for the built-in client, the body
    /// for reqwest.
    fn prepare(
        &self,
        body_size_hint: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), LlmError>,
    ) -> Result<Prepared, LlmError> {
        let (bytes, start) = match self {
            Transport::Http1(client) => client.request(body_size_hint, encode)?,
            Transport::Reqwest { .. } => {
                let mut body = Vec::with_capacity(body_size_hint);
                encode(&mut body)?;
                (body, 0)
            }
        };
        Ok(Prepared { bytes, start })
    }

    /// One exchange: the status and the whole body, or why there is none.
    async fn send(
        &self,
        prepared: &Prepared,
        api_key: Option<&str>,
    ) -> Result<http1::Response, String> {
        let prepared = prepared.wire();
        match self {
            Transport::Http1(client) => client.send(prepared).await,
            Transport::Reqwest { client, endpoint } => {
                let mut builder = client
                    .post(endpoint.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(prepared.to_vec());
                if let Some(key) = api_key {
                    builder = builder.bearer_auth(key);
                }
                let response = builder.send().await.map_err(|e| error_chain(&e))?;
                let status = response.status().as_u16();
                let body = response.bytes().await.map_err(|e| error_chain(&e))?;
                Ok(http1::Response {
                    status,
                    body: body.into(),
                })
            }
        }
    }
}

impl LlmProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        "openai"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = self.complete_with_retries(request).await;
            match &result {
                Ok(response) => {
                    let usage = response.usage;
                    self.counters
                        .tokens_in
                        .fetch_add(usage.prompt_tokens, Ordering::Relaxed);
                    self.counters
                        .tokens_out
                        .fetch_add(usage.completion_tokens, Ordering::Relaxed);
                }
                Err(_) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            result
        })
    }
}

/// An admitted attempt: reports its outcome to the breaker once, or
/// abandons its admission if dropped first (the caller was cancelled).
struct Permit<'a> {
    provider: &'a OpenAiCompatible,
    admission: Option<Admission>,
}

impl Permit<'_> {
    fn finish(mut self, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            self.provider
                .lock_breaker()
                .record(now(), admission, outcome);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.provider.lock_breaker().abandon(admission);
        }
    }
}

/// The breaker's clock: tokio's, so that paused-time tests move it too.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// An error and its sources, `a: b: c` (reqwest's own message alone rarely
/// says what went wrong).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_kebab_case_milliseconds() {
        let config: OpenAiConfig = serde_json::from_value(serde_json::json!({
            "base-url": "http://localhost:8000/v1/",
            "model": "qwen",
            "request-timeout-ms": 1500,
            "breaker": {"cooldown-ms": 10, "min-calls": 2},
            "tool-call-content": "null"
        }))
        .unwrap();
        assert_eq!(
            config.endpoint(),
            "http://localhost:8000/v1/chat/completions"
        );
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
        assert_eq!(config.breaker.cooldown, Duration::from_millis(10));
        assert_eq!(config.breaker.min_calls, 2);
        assert_eq!(config.breaker.window, BreakerConfig::default().window);
        assert_eq!(config.tool_call_content, ToolCallContent::Null);
        assert_eq!(config.max_retries, 3);
    }

    /// `https://` endpoints use reqwest; this runs that path against the
    /// plain-HTTP mock.
    #[tokio::test]
    async fn openai_reqwest_transport_answers_and_reports_statuses() {
        let server = tiffany_testkit::MockLlmServer::with_responder(|_| {
            tiffany_testkit::MockReply::Answer("ok".into())
        });
        let config = OpenAiConfig {
            api_key: Some("sk-test".into()),
            max_retries: 0,
            ..OpenAiConfig::new(server.url(), "m")
        };
        let endpoint = reqwest::Url::parse(&config.endpoint()).unwrap();
        let transport = Transport::reqwest(&config, endpoint).unwrap();
        let provider = OpenAiCompatible::with_transport(config, transport);
        let request = LlmRequest {
            messages: vec![crate::Message::user("hi")],
            ..LlmRequest::default()
        };

        let response = provider.complete(&request).await.unwrap();
        assert_eq!(response.message, crate::Message::assistant("ok"));
        server.fail_next(1, 400);
        let failed = provider.complete(&request).await;
        assert!(
            matches!(&failed, Err(LlmError::Status { status: 400, body }) if body.contains("injected")),
            "{failed:?}"
        );

        let sent = server.requests();
        assert_eq!(sent[0].authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(sent[0].body["messages"][0]["content"], "hi");
    }

    #[test]
    fn config_never_shows_the_api_key() {
        let config = OpenAiConfig {
            api_key: Some("sk-secret".into()),
            ..OpenAiConfig::default()
        };
        assert!(!format!("{config:?}").contains("sk-secret"));
        assert!(
            !serde_json::to_string(&config)
                .unwrap()
                .contains("sk-secret")
        );
    }
}
