//! Tiffany's LLM providers: the planner half of a ReAct cycle.
//!
//! # Overview
//! - [`LlmProvider`] is the trait every planner implements: it takes the
//!   conversation so far ([`LlmRequest`]) and answers with an assistant
//!   [`Message`] holding either a final answer or one or more
//!   [`ToolCall`]s.
//! - The types mirror the OpenAI chat-completions protocol (roles, tool
//!   calls with an id, a name and JSON-encoded arguments) so that a journaled
//!   conversation can be sent to any compatible server unchanged.
//! - [`OpenAiCompatible`] sends a request to `POST {base}/chat/completions`
//!   of Ollama, vLLM, a llama.cpp server or OpenAI ([`OpenAiConfig`]). Each
//!   attempt passes a [circuit breaker](BreakerConfig) and has a timeout;
//!   failed attempts are retried with jittered exponential backoff;
//!   [`OpenAiCompatible::stats`] counts requests, retries, failures and
//!   tokens ([`LlmStats`]). A plain `http://` endpoint (a local or in-cluster
//!   server) is reached through a built-in keep-alive HTTP/1.1 client that
//!   the asking task drives itself; `https://` endpoints, and any endpoint
//!   when `http_proxy`, `HTTP_PROXY`, `all_proxy` or `ALL_PROXY` is set, go
//!   through reqwest.
//! - [`Scripted`] is the offline, deterministic planner (the default of the
//!   demo and of tests): a function of the conversation, or a list of
//!   [`Step`]s indexed by [`LlmRequest::step`].
//!
//! # Guarantees
//! - Nothing here is durable and no provider keeps conversation state: the
//!   whole conversation travels in every [`LlmRequest`], so a journal that
//!   recorded the responses can rebuild any step after a crash.
//! - [`Scripted`] is a pure function of the conversation: the same messages
//!   give the same answer, tool call ids (`call_<step>_<i>`) and estimated
//!   usage, in any process.
//! - [`OpenAiCompatible`] never blocks a thread: waits are tokio timers and
//!   I/O, so it runs inside `tiffany-sched` tasks (whose workers enter a tokio
//!   runtime) as well as on a plain tokio runtime. A completion takes at most
//!   `(1 + max_retries)` request timeouts plus the backoff sleeps.
//! - Which failures are retried, and which count against the circuit
//!   breaker: transport errors, timeouts, HTTP 429 and 5xx, and malformed
//!   bodies. Other 4xx answers are returned at once and count as a healthy
//!   server (the request, not the server, is at fault).
//!
//! # Example
//! ```
//! use tiffany_llm::{LlmProvider, LlmRequest, Message, Scripted, Step};
//!
//! let planner = Scripted::steps(vec![
//!     Step::call("search", serde_json::json!({"query": "rust"})),
//!     Step::answer("Rust is a language."),
//! ]);
//! let mut request = LlmRequest {
//!     messages: vec![Message::user("What is Rust?")],
//!     ..LlmRequest::default()
//! };
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//!
//! let first = rt.block_on(planner.complete(&request)).unwrap();
//! assert_eq!(first.message.tool_calls[0].id, "call_0_0");
//! assert_eq!(first.message.tool_calls[0].arguments, r#"{"query":"rust"}"#);
//!
//! request.messages.push(first.message);
//! request.messages.push(Message::tool_result("call_0_0", "a language"));
//! let second = rt.block_on(planner.complete(&request)).unwrap();
//! assert_eq!(second.message.content, "Rust is a language.");
//! ```
//!
//! Against a local Ollama (not run here):
//! ```no_run
//! use tiffany_llm::{OpenAiCompatible, OpenAiConfig};
//!
//! // The key, if any, comes from OPENAI_API_KEY.
//! let config = OpenAiConfig::new("http://127.0.0.1:11434/v1", "qwen2.5:7b");
//! let provider = OpenAiCompatible::new(config).unwrap();
//! # let _ = provider;
//! ```
//!
//! # Features
//! - `rustls` (default): HTTPS through rustls with the system's root
//!   certificates. Without it the client speaks plain HTTP only, which is
//!   enough for a server on the same machine or network (and is the
//!   built-in client's job either way).

mod breaker;
mod http1;
mod openai;
mod retry;
mod scripted;
mod serde_ms;
mod wire;

pub use breaker::{BreakerConfig, BreakerState};
pub use openai::{LlmStats, OpenAiCompatible, OpenAiConfig, ToolCallContent};
pub use scripted::{Scripted, Step};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A boxed, sendable future, the return type of [`LlmProvider::complete`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The instruction of the task.
    User,
    /// The planner.
    Assistant,
    /// The result of one tool call.
    Tool,
}

/// One tool call requested by the planner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The planner's id for this call; the tool message that answers it
    /// carries the same id.
    pub id: String,
    /// The skill to run.
    pub name: String,
    /// The arguments as a JSON text, exactly as the planner wrote them (they
    /// may be invalid JSON: the skill layer validates them).
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text (empty for an assistant message that only calls tools).
    pub content: String,
    /// Tool calls of an assistant message; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message, the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::text(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::text(Role::User, content)
    }

    /// An assistant message with a final answer.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::text(Role::Assistant, content)
    }

    /// An assistant message that calls tools.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Message {
        Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// The result of the tool call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
        }
    }

    fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool the planner may call: the skill's name, description and the JSON
/// schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The skill's name.
    pub name: String,
    /// What it does, for the planner.
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// What a provider is asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LlmRequest {
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// The tools the agent may call. Shared: an agent's list is built once
    /// and offered with each of its requests.
    pub tools: Arc<[ToolSpec]>,
    /// Upper bound on the tokens of the answer, if any.
    pub max_tokens: Option<u32>,
}

impl LlmRequest {
    /// The index of the step this request asks for: the number of assistant
    /// messages after the last user message (all of them if there is no
    /// user message). A pure function of the conversation, so a recovered
    /// agent asks for the same step again.
    pub fn step(&self) -> usize {
        let start = self
            .messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .map_or(0, |i| i + 1);
        self.messages
            .iter()
            .skip(start)
            .filter(|m| m.role == Role::Assistant)
            .count()
    }
}

/// The deterministic id of the `index`-th tool call of step `step`:
/// `call_<step>_<index>`.
fn call_id(step: usize, index: usize) -> String {
    format!("call_{step}_{index}")
}

/// Tokens a completion used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// An estimate for a server that reports no usage (and for [`Scripted`]):
    /// one token per four characters, rounded up, of the texts, tool names
    /// and arguments of `prompt` and of `answer`.
    pub fn estimate(prompt: &[Message], answer: &Message) -> Usage {
        let prompt_chars: usize = prompt.iter().map(message_chars).sum();
        Usage {
            prompt_tokens: tokens_of(prompt_chars),
            completion_tokens: tokens_of(message_chars(answer)),
        }
    }
}

fn message_chars(message: &Message) -> usize {
    let calls: usize = message
        .tool_calls
        .iter()
        .map(|c| c.name.chars().count() + c.arguments.chars().count())
        .sum();
    message.content.chars().count() + calls
}

fn tokens_of(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmResponse {
    /// The assistant message: a final answer (no tool calls) or tool calls.
    pub message: Message,
    /// Tokens used.
    pub usage: Usage,
}

/// Why a completion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// No answer within the timeout.
    #[error("the LLM did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The server answered with an error status.
    #[error("the LLM server answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The server's answer is not a valid chat completion.
    #[error("malformed LLM response: {0}")]
    Malformed(String),
    /// The connection failed.
    #[error("cannot reach the LLM server: {0}")]
    Transport(String),
    /// The circuit breaker is open: calls fail fast until a probe succeeds.
    #[error("the LLM circuit breaker is open (retry in {retry_in:?})")]
    CircuitOpen {
        /// When the next probe is allowed.
        retry_in: std::time::Duration,
    },
    /// A planner-specific failure (for example a script that has no step
    /// for this conversation).
    #[error("{0}")]
    Planner(String),
}

/// A planner: answers a conversation with a final answer or tool calls.
///
/// A provider need not be deterministic: recovery never calls it for a
/// step whose response was journaled, so it may be as random as a real LLM.
pub trait LlmProvider: Send + Sync {
    /// A short name for logs and metrics (`"openai"`, `"scripted"`).
    fn name(&self) -> &str;

    /// Answers `request`.
    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>>;
}
