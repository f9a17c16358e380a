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

use std::future::Future;
use std::pin::Pin;

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
    /// The tools the agent may call.
    pub tools: Vec<ToolSpec>,
    /// Upper bound on the tokens of the answer, if any.
    pub max_tokens: Option<u32>,
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
