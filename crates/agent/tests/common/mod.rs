//! Helpers shared by the agent's integration tests: a node over a temporary
//! directory, the built-in skills, and an `OpenAiCompatible` client tuned
//! for tests (millisecond backoff, a breaker that never trips unless a test
//! asks for one).

#![allow(dead_code, unreachable_pub, reason = "each test file uses a subset")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tiffany_agent::{Node, NodeConfig, TaskState};
use tiffany_llm::{
    BoxFuture, BreakerConfig, LlmError, LlmProvider, LlmRequest, LlmResponse, OpenAiCompatible,
    OpenAiConfig, Role, Scripted,
};
use tiffany_skills::{BuiltinConfig, Registry};

/// The scripted planner, counting its calls.
pub struct Counting {
    inner: Scripted,
    /// Planner calls so far.
    pub calls: AtomicUsize,
}

impl Counting {
    /// Counts the calls of `inner`.
    pub fn new(inner: Scripted) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            calls: AtomicUsize::new(0),
        })
    }

    /// Planner calls so far.
    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl LlmProvider for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.complete(request)
    }
}

/// How long a test waits for a task before it gives up (a failure, never
/// a measurement).
pub const WAIT: Duration = Duration::from_secs(30);

/// The built-in skills with their default settings.
pub fn skills() -> Arc<Registry> {
    Arc::new(Registry::with_builtins(BuiltinConfig::default()))
}

/// A node configuration over `dir` with two workers.
pub fn config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.workers = Some(2);
    config
}

/// A breaker that never opens (errors never exceed a rate of 1.0; latency
/// never counts).
pub fn lenient_breaker() -> BreakerConfig {
    BreakerConfig {
        error_rate: 1.0,
        slow_calls: 0,
        ..BreakerConfig::default()
    }
}

/// A client for the mock at `url`: model `mock`, `max_retries` retries
/// after 1-2 ms of backoff, and `breaker`.
pub fn client(url: &str, max_retries: u32, breaker: BreakerConfig) -> Arc<OpenAiCompatible> {
    let mut config = OpenAiConfig::new(url, "mock");
    config.api_key = None;
    config.request_timeout = Duration::from_secs(10);
    config.max_retries = max_retries;
    config.backoff_base = Duration::from_millis(1);
    config.backoff_cap = Duration::from_millis(2);
    config.breaker = breaker;
    Arc::new(OpenAiCompatible::new(config).expect("an HTTP client"))
}

/// Opens a node over `dir` with `llm` and the built-in skills.
pub fn open(dir: &Path, llm: Arc<dyn LlmProvider>) -> Node {
    let (node, _) = Node::open(config(dir), llm, skills()).expect("open the node");
    node
}

/// The tool results of a task's conversation, in order.
pub fn tool_results(state: &TaskState) -> Vec<String> {
    state
        .conversation
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone())
        .collect()
}

/// The content of the newest message of `role` in `request` (empty when
/// there is none): what a scripted planner reacts to.
pub fn last_of(request: &LlmRequest, role: Role) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == role)
        .map_or(String::new(), |m| m.content.clone())
}
