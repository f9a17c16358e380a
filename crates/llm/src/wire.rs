//! The OpenAI chat-completions wire format: our [`LlmRequest`] out, a
//! [`LlmResponse`] back.
//!
//! Invariants:
//! - Every message carries `content` (a string, or `null` only for an
//!   assistant message that calls tools and has no text, when
//!   [`ToolCallContent::Null`] asks for it); tool calls go out as
//!   `{id, type: "function", function: {name, arguments}}` and tool results
//!   with their `tool_call_id`, exactly as journaled.
//! - Decoding accepts what compatible servers actually send: `content`
//!   missing or `null` (read as empty), `tool_calls` missing, `null` or
//!   empty, `arguments` as a JSON text or as an object (re-encoded as text),
//!   a tool call without an id (given the deterministic `call_<step>_<i>`),
//!   and no `usage` (estimated with [`Usage::estimate`]).
//! - Skill names with dots travel as `__` (`fs.read` is `fs__read` on the
//!   wire, as OpenAI's function names allow no dots) and are mapped back
//!   through the request's tool list.
//! - Anything else that is not a chat completion (not JSON, no choices, no
//!   message, a tool call without a function name) is
//!   [`LlmError::Malformed`], which the caller may retry.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::openai::ToolCallContent;
use crate::{LlmError, LlmRequest, LlmResponse, Message, Role, ToolCall, ToolSpec, Usage, call_id};

// The request is serialized straight from the caller's conversation and
// tool list: the wrappers below borrow them and write each sequence from an
// iterator, so encoding allocates nothing but the output.

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Messages<'a>,
    #[serde(skip_serializing_if = "Tools::is_empty")]
    tools: Tools<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

struct Messages<'a> {
    messages: &'a [Message],
    empty_content: ToolCallContent,
}

impl Serialize for Messages<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.messages.iter().map(|m| {
            let null_content = self.empty_content == ToolCallContent::Null
                && m.content.is_empty()
                && !m.tool_calls.is_empty();
            WireMessage {
                role: m.role,
                content: (!null_content).then_some(m.content.as_str()),
                tool_calls: ToolCalls(&m.tool_calls),
                tool_call_id: m.tool_call_id.as_deref(),
            }
        }))
    }
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "ToolCalls::is_empty")]
    tool_calls: ToolCalls<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

struct ToolCalls<'a>(&'a [ToolCall]);

impl ToolCalls<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ToolCalls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|c| WireToolCall {
            id: &c.id,
            kind: "function",
            function: WireFunctionCall {
                name: wire_name(&c.name),
                arguments: &c.arguments,
            },
        }))
    }
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: Cow<'a, str>,
    arguments: &'a str,
}

struct Tools<'a>(&'a [ToolSpec]);

impl Tools<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Tools<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|t| WireTool {
            kind: "function",
            function: WireFunction {
                name: wire_name(&t.name),
                description: &t.description,
                parameters: &t.parameters,
            },
        }))
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: Cow<'a, str>,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

/// The name a tool goes by on the wire: OpenAI allows only
/// `[a-zA-Z0-9_-]` in function names, so the dots of our skill names
/// (`fs.read`) become `__` (`fs__read`).
fn wire_name(name: &str) -> Cow<'_, str> {
    if name.contains('.') {
        Cow::Owned(name.replace('.', "__"))
    } else {
        Cow::Borrowed(name)
    }
}

/// The skill a wire name stands for: the offered tool whose wire name it
/// is, else the name as sent (an unknown skill, reported as such).
fn skill_name(name: String, request: &LlmRequest) -> String {
    request
        .tools
        .iter()
        .find(|t| t.name != name && wire_name(&t.name) == name.as_str())
        .map_or(name, |t| t.name.clone())
}

/// Appends the JSON body of a chat-completions request to `out` (give it
/// [`encoded_size_hint`] bytes of spare capacity).
pub(crate) fn encode(
    model: &str,
    request: &LlmRequest,
    empty_content: ToolCallContent,
    out: &mut Vec<u8>,
) -> Result<(), LlmError> {
    let body = ChatRequest {
        model,
        messages: Messages {
            messages: &request.messages,
            empty_content,
        },
        tools: Tools(&request.tools),
        max_tokens: request.max_tokens,
    };
    serde_json::to_writer(out, &body)
        .map_err(|e| LlmError::Planner(format!("cannot encode the request: {e}")))
}

/// Roughly the encoded size of `request` (texts plus room for keys and
/// escapes), so that the output seldom grows while it is written.
pub(crate) fn encoded_size_hint(request: &LlmRequest) -> usize {
    let calls = |m: &Message| -> usize {
        m.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + 2 * c.arguments.len() + 64)
            .sum()
    };
    let messages: usize = request
        .messages
        .iter()
        .map(|m| m.content.len() + calls(m) + 96)
        .sum();
    let tools: usize = request
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + 256)
        .sum();
    128 + messages + messages / 8 + tools
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ResponseToolCall>>,
}

#[derive(Deserialize)]
struct ResponseToolCall {
    #[serde(default)]
    id: Option<String>,
    function: ResponseFunction,
}

#[derive(Deserialize)]
struct ResponseFunction {
    name: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Parses the body of a successful answer to `request`.
pub(crate) fn decode(body: &[u8], request: &LlmRequest) -> Result<LlmResponse, LlmError> {
    let response: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| LlmError::Malformed(format!("{e} in {:?}", excerpt(body))))?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::Malformed("no choices in the answer".into()));
    };
    let step = request.step();
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| call_id(step, i)),
            name: skill_name(call.function.name, request),
            arguments: match call.function.arguments {
                serde_json::Value::String(text) => text,
                serde_json::Value::Null => "{}".to_owned(),
                object => object.to_string(),
            },
        })
        .collect();
    let message = Message {
        role: Role::Assistant,
        content: choice.message.content.unwrap_or_default(),
        tool_calls,
        tool_call_id: None,
    };
    let usage = match response.usage {
        Some(u) => Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        },
        None => Usage::estimate(&request.messages, &message),
    };
    Ok(LlmResponse { message, usage })
}

/// The start of a body, for error messages: at most 200 characters.
pub(crate) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn conversation() -> LlmRequest {
        LlmRequest {
            messages: vec![
                Message::system("be brief"),
                Message::user("weather?"),
                Message::tool_calls(vec![ToolCall {
                    id: "c1".into(),
                    name: "weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into(),
                }]),
                Message::tool_result("c1", "rain"),
            ],
            tools: vec![ToolSpec {
                name: "weather".into(),
                description: "the weather".into(),
                parameters: json!({"type": "object"}),
            }]
            .into(),
            max_tokens: Some(64),
        }
    }

    fn encoded_with(request: &LlmRequest, content: ToolCallContent) -> Value {
        let mut body = Vec::new();
        encode("m", request, content, &mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn encoded(content: ToolCallContent) -> Value {
        encoded_with(&conversation(), content)
    }

    #[test]
    fn wire_encodes_messages_tools_and_max_tokens() {
        let body = encoded(ToolCallContent::EmptyString);
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "c1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
                    ]},
                    {"role": "tool", "content": "rain", "tool_call_id": "c1"}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "weather", "description": "the weather",
                    "parameters": {"type": "object"}}}],
                "max_tokens": 64
            })
        );
    }

    #[test]
    fn wire_names_with_dots_travel_as_double_underscores_and_come_back() {
        let mut request = conversation();
        let mut tools = request.tools.to_vec();
        tools[0].name = "fs.read".into();
        request.tools = tools.into();
        request.messages[2].tool_calls[0].name = "fs.read".into();
        let body = encoded_with(&request, ToolCallContent::EmptyString);
        assert_eq!(body["tools"][0]["function"]["name"], "fs__read");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["name"],
            "fs__read"
        );
        let answer = json!({"choices": [{"message": {"tool_calls": [
            {"id": "a", "function": {"name": "fs__read", "arguments": "{}"}},
            {"id": "b", "function": {"name": "no__such", "arguments": "{}"}}
        ]}}]});
        let response = decode(answer.to_string().as_bytes(), &request).unwrap();
        let names: Vec<&str> = response
            .message
            .tool_calls
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["fs.read", "no__such"]);
    }

    #[test]
    fn wire_null_content_only_for_tool_call_messages() {
        let body = encoded(ToolCallContent::Null);
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][3]["content"], "rain");
    }

    #[test]
    fn wire_decodes_lenient_tool_calls() {
        let request = conversation();
        let body = json!({"choices": [{"message": {"role": "assistant", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"function": {"name": "b", "arguments": {"k": 1}}},
            {"id": "", "function": {"name": "c"}}
        ]}}]});
        let response = decode(body.to_string().as_bytes(), &request).unwrap();
        let calls = &response.message.tool_calls;
        assert_eq!(response.message.content, "");
        assert_eq!(
            (calls[0].id.as_str(), calls[0].arguments.as_str()),
            ("x", "{}")
        );
        assert_eq!(
            (calls[1].id.as_str(), calls[1].arguments.as_str()),
            ("call_1_1", r#"{"k":1}"#)
        );
        assert_eq!(
            (calls[2].id.as_str(), calls[2].arguments.as_str()),
            ("call_1_2", "{}")
        );
        // No usage reported: estimated.
        assert_eq!(
            response.usage,
            Usage::estimate(&request.messages, &response.message)
        );
    }

    #[test]
    fn wire_decodes_content_and_usage() {
        let body = json!({"choices": [{"message": {"content": "sunny", "tool_calls": null}}],
                          "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}});
        let response = decode(body.to_string().as_bytes(), &conversation()).unwrap();
        assert_eq!(response.message, Message::assistant("sunny"));
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 7,
                completion_tokens: 3
            }
        );
    }

    #[test]
    fn wire_rejects_what_is_not_a_completion() {
        for body in [
            "",
            "{\"choices\": [",
            "{}",
            "{\"choices\": []}",
            "{\"choices\": [{}]}",
            "{\"choices\": [{\"message\": {\"tool_calls\": [{\"function\": {}}]}}]}",
        ] {
            let result = decode(body.as_bytes(), &conversation());
            assert!(
                matches!(result, Err(LlmError::Malformed(_))),
                "{body}: {result:?}"
            );
        }
    }
}
