//! A mock OpenAI-compatible chat-completions server on loopback.
//!
//! Invariants:
//! - The server runs on its own thread with its own current-thread tokio
//!   runtime, so it answers while the test's thread (or runtime) blocks,
//!   waits on a child process, or runs a different runtime. It listens on
//!   `127.0.0.1` at a port chosen by the OS, reachable from other processes.
//!   It speaks HTTP/1.1 with keep-alive (see the `http1` module for what of
//!   HTTP it serves and refuses).
//! - It checks the protocol independently of `tiffany-llm`: a request that
//!   is not a valid chat completion (bad JSON, unknown role, a tool call that
//!   is not `{id, type: "function", function: {name, arguments}}`, a tool
//!   message whose `tool_call_id` answers no earlier call, a malformed tool)
//!   is answered `400` with an OpenAI-style error and never reaches the
//!   responder.
//! - Every request to `/v1/chat/completions` is counted and recorded (body,
//!   fingerprint of its `messages`, `Authorization` header, the status it
//!   got) before it is answered. The log keeps each body as it arrived;
//!   [`MockLlmServer::requests`] parses and fingerprints them when asked, so
//!   a server under load pays for neither (nor for the memory a parsed log
//!   would take). Injected failures are decided when a
//!   request arrives, in arrival order: first `fail_next`, then
//!   `malformed_next`, then the responder. The delay applies to every
//!   answer, injected or not.
//! - Dropping the server stops accepting, closes every connection and joins
//!   its thread: once `drop` returns the port is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::http1;

/// The path completions are posted to; [`MockLlmServer::url`] ends in `/v1`.
const COMPLETIONS_PATH: &str = "/v1/chat/completions";

type Responder = dyn Fn(&MockRequest) -> MockReply + Send + Sync;

/// A chat-completions request as the mock parsed it.
#[derive(Clone, Debug, PartialEq)]
pub struct MockRequest {
    /// The `model` field.
    pub model: String,
    /// The conversation, oldest first.
    pub messages: Vec<MockMessage>,
    /// The names of the tools offered, in order.
    pub tools: Vec<String>,
    /// The `max_tokens` field, if sent.
    pub max_tokens: Option<u64>,
    /// The whole request body, as sent.
    raw: Arc<[u8]>,
}

/// One message of a [`MockRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (`None` when sent as `null`).
    pub content: Option<String>,
    /// The tool calls of an assistant message.
    pub tool_calls: Vec<MockToolCall>,
    /// For a tool message, the id of the call it answers.
    pub tool_call_id: Option<String>,
}

/// One tool call of an assistant message in a [`MockRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockToolCall {
    /// The call's id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as a JSON text.
    pub arguments: String,
}

impl MockRequest {
    /// The number of assistant messages after the last user message: which
    /// step of a script this request asks for.
    pub fn step(&self) -> usize {
        let start = self
            .messages
            .iter()
            .rposition(|m| m.role == "user")
            .map_or(0, |i| i + 1);
        self.messages
            .iter()
            .skip(start)
            .filter(|m| m.role == "assistant")
            .count()
    }

    /// The content of the last tool message, if any.
    pub fn last_tool_result(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "tool")
            .and_then(|m| m.content.as_deref())
    }

    /// The whole request body.
    pub fn body(&self) -> Value {
        // It parsed when the request arrived.
        serde_json::from_slice(&self.raw).unwrap_or(Value::Null)
    }

    /// Checks and parses a request body: typed deserialization for the
    /// shapes, then the rules serde cannot state (roles, which messages
    /// carry what, tool calls answered in order).
    fn parse(raw: Arc<[u8]>) -> Result<MockRequest, String> {
        let body: WireRequest =
            serde_json::from_slice(&raw).map_err(|e| format!("not a chat completion: {e}"))?;
        let mut messages: Vec<MockMessage> = Vec::with_capacity(body.messages.len());
        for (i, message) in body.messages.into_iter().enumerate() {
            let message = message.check().map_err(|e| format!("messages[{i}]: {e}"))?;
            if let Some(id) = &message.tool_call_id {
                let answered = messages
                    .iter()
                    .flat_map(|m| &m.tool_calls)
                    .any(|c| &c.id == id);
                if !answered {
                    return Err(format!(
                        "messages[{i}]: tool message answers no earlier tool call `{id}`"
                    ));
                }
            }
            messages.push(message);
        }
        let tools = body
            .tools
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.check().map_err(|e| format!("tools[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(MockRequest {
            model: body.model,
            messages,
            tools,
            max_tokens: body.max_tokens,
            raw,
        })
    }
}

/// A chat-completions request body as the mock reads it (other fields are
/// ignored).
#[derive(Deserialize)]
struct WireRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default, deserialize_with = "not_null")]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    arguments: String,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    parameters: Option<Value>,
}

/// An optional field that, when present, must not be `null`.
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The function type every tool and tool call must name.
const FUNCTION: Option<&str> = Some("function");

impl WireMessage {
    fn check(self) -> Result<MockMessage, String> {
        let role = self.role;
        if !["system", "user", "assistant", "tool"].contains(&role.as_str()) {
            return Err(format!("unknown role `{role}`"));
        }
        let tool_calls = match self.tool_calls {
            None => Vec::new(),
            Some(_) if role != "assistant" => {
                return Err("only assistant messages call tools".into());
            }
            Some(calls) => calls
                .into_iter()
                .map(|call| {
                    if call.kind.as_deref() != FUNCTION {
                        return Err("a tool call's `type` must be \"function\"".to_owned());
                    }
                    Ok(MockToolCall {
                        id: call.id,
                        name: call.function.name,
                        arguments: call.function.arguments,
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if self.content.is_none() && tool_calls.is_empty() {
            return Err("`content` must be a string".into());
        }
        let tool_call_id = if role == "tool" {
            Some(self.tool_call_id.ok_or("`tool_call_id` must be a string")?)
        } else {
            None
        };
        Ok(MockMessage {
            role,
            content: self.content,
            tool_calls,
            tool_call_id,
        })
    }
}

impl WireTool {
    fn check(self) -> Result<String, String> {
        if self.kind.as_deref() != FUNCTION {
            return Err("a tool's `type` must be \"function\"".into());
        }
        if !self
            .function
            .parameters
            .as_ref()
            .is_some_and(Value::is_object)
        {
            return Err("a tool's `parameters` must be a JSON schema object".into());
        }
        Ok(self.function.name)
    }
}

/// What the mock answers.
#[derive(Clone, Debug, PartialEq)]
pub enum MockReply {
    /// A final answer. Usage: 10 prompt tokens per request message, 5
    /// completion tokens.
    Answer(String),
    /// Tool calls (name, arguments), with ids `call_mock_<step>_<i>` and
    /// `content: null`. Usage: 10 prompt tokens per request message, 5
    /// completion tokens per call.
    ToolCalls(Vec<(String, Value)>),
    /// An error status with this body.
    Error {
        /// The HTTP status.
        status: u16,
        /// The body, sent as is.
        body: String,
    },
    /// Any JSON body with status 200, for protocol variants.
    Raw(Value),
}

/// A request the mock received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// The body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// A hash of the body's `messages` as sent; equal conversations have
    /// equal fingerprints.
    pub fingerprint: u64,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Behaviour {
    delay: Duration,
    fail_next: u32,
    fail_status: u16,
    malformed_next: u32,
}

enum Injected {
    Fail(u16),
    Malformed,
}

/// A request as logged: parsed into a [`RecordedRequest`] only when asked.
#[derive(Clone)]
struct Logged {
    body: Arc<[u8]>,
    authorization: Option<String>,
    status: u16,
}

impl Logged {
    fn recorded(&self) -> RecordedRequest {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        RecordedRequest {
            fingerprint: fingerprint(body.get("messages").unwrap_or(&Value::Null)),
            body,
            authorization: self.authorization.clone(),
            status: self.status,
        }
    }
}

struct Shared {
    responder: Mutex<Arc<Responder>>,
    behaviour: Mutex<Behaviour>,
    log: Mutex<Vec<Logged>>,
    count: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panicking
    // responder must not take the server down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A mock OpenAI-compatible chat-completions server (see the module notes).
///
/// ```
/// use tiffany_testkit::{MockLlmServer, MockReply};
///
/// let server = MockLlmServer::with_responder(|request| {
///     MockReply::Answer(format!("{} messages", request.messages.len()))
/// });
/// server.fail_next(2, 503);
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// assert_eq!(server.request_count(), 0);
/// ```
pub struct MockLlmServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockLlmServer {
    /// A server with the default script: at step 0 (see
    /// [`MockRequest::step`]) it calls the first tool offered with `{}`
    /// (answers "done" if none is offered); at later steps it answers
    /// `done: <last tool result>`.
    pub fn start() -> MockLlmServer {
        MockLlmServer::with_responder(default_script)
    }

    /// A server that answers every valid request with `responder(request)`.
    ///
    /// # Panics
    /// If no loopback port can be bound or the runtime cannot start.
    pub fn with_responder(
        responder: impl Fn(&MockRequest) -> MockReply + Send + Sync + 'static,
    ) -> MockLlmServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("the bound address");
        let shared = Arc::new(Shared {
            responder: Mutex::new(Arc::new(responder)),
            behaviour: Mutex::new(Behaviour::default()),
            log: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("the mock server's runtime");
        let (shutdown, stop) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("mock-llm-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, serving, stop)))
            .expect("spawn the mock server's thread");
        MockLlmServer {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The base URL to give a client, `http://127.0.0.1:<port>/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the responder for the next requests.
    pub fn set_responder(
        &self,
        responder: impl Fn(&MockRequest) -> MockReply + Send + Sync + 'static,
    ) {
        *lock(&self.shared.responder) = Arc::new(responder);
    }

    /// Delays every answer by `delay` (zero to stop).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.behaviour).delay = delay;
    }

    /// Answers the next `n` requests with `status` and an OpenAI-style
    /// error body.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut behaviour = lock(&self.shared.behaviour);
        behaviour.fail_next = n;
        behaviour.fail_status = status;
    }

    /// Answers the next `n` requests (after any `fail_next` ones) with
    /// status 200 and a truncated JSON body.
    pub fn malformed_next(&self, n: u32) {
        lock(&self.shared.behaviour).malformed_next = n;
    }

    /// How many requests reached the completions endpoint.
    pub fn request_count(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let log = lock(&self.shared.log).clone();
        log.iter().map(Logged::recorded).collect()
    }

    /// Fingerprints of conversations that were answered successfully more
    /// than once: a client that never repeats a completed LLM call leaves
    /// this empty (retries of failed attempts do not count).
    pub fn repeated_conversations(&self) -> Vec<u64> {
        let mut answered: HashMap<u64, usize> = HashMap::new();
        for request in self.requests().iter().filter(|r| r.status == 200) {
            *answered.entry(request.fingerprint).or_default() += 1;
        }
        let mut repeated: Vec<u64> = answered
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|(fingerprint, _)| fingerprint)
            .collect();
        repeated.sort_unstable();
        repeated
    }
}

impl std::fmt::Debug for MockLlmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockLlmServer")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Drop for MockLlmServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Joining is quick: the accept loop ends at once and dropping the
            // runtime cancels the connections. Waiting makes "dropped" mean
            // "port closed" for the test.
            #[allow(
                clippy::disallowed_methods,
                reason = "test helper; the thread stops at once"
            )]
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = Arc::clone(&shared);
        // A client that hangs up mid-answer (a timeout) just ends its
        // connection's task.
        tokio::spawn(http1::serve_connection(
            stream,
            move |request| answer(Arc::clone(&shared), request),
            error_body,
        ));
    }
}

/// The status and body of the answer to `request`, after the delay.
async fn answer(shared: Arc<Shared>, request: http1::Request) -> (u16, String) {
    let path = request.target.split('?').next().unwrap_or_default();
    if request.method != "POST" || path != COMPLETIONS_PATH {
        return (404, error_body("no such endpoint"));
    }
    let http1::Request {
        authorization,
        body: bytes,
        ..
    } = request;
    shared.count.fetch_add(1, Ordering::SeqCst);
    let (delay, injected) = {
        let mut behaviour = lock(&shared.behaviour);
        let injected = if behaviour.fail_next > 0 {
            behaviour.fail_next -= 1;
            Some(Injected::Fail(behaviour.fail_status))
        } else if behaviour.malformed_next > 0 {
            behaviour.malformed_next -= 1;
            Some(Injected::Malformed)
        } else {
            None
        };
        (behaviour.delay, injected)
    };

    let (status, text) = match injected {
        Some(Injected::Fail(status)) => (status, error_body("injected failure")),
        Some(Injected::Malformed) => (
            200,
            r#"{"id": "chatcmpl-mock", "choices": [{"mess"#.to_owned(),
        ),
        None => match MockRequest::parse(Arc::clone(&bytes)) {
            Err(reason) => (400, error_body(&reason)),
            Ok(parsed) => {
                let responder = Arc::clone(&*lock(&shared.responder));
                render(&parsed, responder(&parsed))
            }
        },
    };
    lock(&shared.log).push(Logged {
        body: bytes,
        authorization,
        status,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    (status, text)
}

fn error_body(message: &str) -> String {
    json!({"error": {"message": message, "type": "invalid_request_error"}}).to_string()
}

/// A chat completion as the mock sends it.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'static str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice; 1],
    usage: CompletionUsage,
}

#[derive(Serialize)]
struct Choice {
    index: u32,
    message: AssistantMessage,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    /// `null` for tool calls.
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CallOut>,
}

#[derive(Serialize)]
struct CallOut {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut,
}

#[derive(Serialize)]
struct FunctionOut {
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// The status and body of `reply` to `request`.
fn render(request: &MockRequest, reply: MockReply) -> (u16, String) {
    let prompt_tokens = 10 * request.messages.len() as u64;
    let (message, completion_tokens, finish_reason) = match reply {
        MockReply::Error { status, body } => return (status, body),
        MockReply::Raw(body) => return (200, body.to_string()),
        MockReply::Answer(text) => (
            AssistantMessage {
                role: "assistant",
                content: Some(text),
                tool_calls: Vec::new(),
            },
            5,
            "stop",
        ),
        MockReply::ToolCalls(calls) => {
            let step = request.step();
            let calls: Vec<CallOut> = calls
                .into_iter()
                .enumerate()
                .map(|(i, (name, arguments))| CallOut {
                    id: format!("call_mock_{step}_{i}"),
                    kind: "function",
                    function: FunctionOut {
                        name,
                        arguments: arguments.to_string(),
                    },
                })
                .collect();
            let tokens = 5 * calls.len() as u64;
            (
                AssistantMessage {
                    role: "assistant",
                    content: None,
                    tool_calls: calls,
                },
                tokens,
                "tool_calls",
            )
        }
    };
    let body = Completion {
        id: "chatcmpl-mock",
        object: "chat.completion",
        created: 0,
        model: &request.model,
        choices: [Choice {
            index: 0,
            message,
            finish_reason,
        }],
        usage: CompletionUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        },
    };
    // Strings, numbers and a fixed shape: it always serializes.
    let text = serde_json::to_string(&body).unwrap_or_default();
    (200, text)
}

fn default_script(request: &MockRequest) -> MockReply {
    match (request.step(), request.tools.first()) {
        (0, Some(tool)) => MockReply::ToolCalls(vec![(tool.clone(), json!({}))]),
        (0, None) => MockReply::Answer("done".into()),
        _ => MockReply::Answer(format!(
            "done: {}",
            request.last_tool_result().unwrap_or("")
        )),
    }
}

/// FNV-1a over the JSON text: stable across runs and processes.
fn fingerprint(messages: &Value) -> u64 {
    messages
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &Value) -> Result<MockRequest, String> {
        MockRequest::parse(body.to_string().into_bytes().into())
    }

    fn request(messages: Value) -> Result<MockRequest, String> {
        parse(&json!({"model": "m", "messages": messages}))
    }

    #[test]
    fn llm_server_accepts_a_tool_round_trip() {
        let parsed = request(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "ok"}
        ]))
        .unwrap();
        assert_eq!(parsed.step(), 1);
        assert_eq!(parsed.last_tool_result(), Some("ok"));
        assert_eq!(
            default_script(&parsed),
            MockReply::Answer("done: ok".into())
        );
    }

    #[test]
    fn llm_server_rejects_protocol_violations() {
        let bad = [
            json!([{"role": "robot", "content": "hi"}]),
            json!([{"role": "user", "content": null}]),
            json!([{"role": "tool", "tool_call_id": "nope", "content": "x"}]),
            json!([{"role": "assistant", "content": "", "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "{}"}}]}]),
            json!([{"role": "assistant", "content": "", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": {}}}]}]),
        ];
        for messages in bad {
            assert!(request(messages.clone()).is_err(), "{messages}");
        }
        let bad_tool = json!({"model": "m", "messages": [], "tools": [{"type": "function",
            "function": {"name": "f"}}]});
        assert!(parse(&bad_tool).is_err());
        assert!(MockRequest::parse(Arc::from(&b"{\"model\""[..])).is_err());
    }

    #[test]
    fn llm_server_fingerprints_equal_conversations_alike() {
        let a = json!([{"role": "user", "content": "hi"}]);
        let b = json!([{"role": "user", "content": "hi!"}]);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
