//! The offline, deterministic planner.
//!
//! Invariants:
//! - The answer is a pure function of the request: the script's step is
//!   [`LlmRequest::step`] (assistant messages after the last user message),
//!   tool call ids are `call_<step>_<i>`, and usage is
//!   [`Usage::estimate`]. A recovered agent that asks again gets the same
//!   answer, in any process.
//! - No thread is spawned and nothing blocks: without latency the future is
//!   ready at its first poll; with latency it waits on a tokio timer, so it
//!   needs a tokio time driver (present in `tiffany-sched` workers).

use std::fmt;
use std::time::Duration;

use crate::{
    BoxFuture, LlmError, LlmProvider, LlmRequest, LlmResponse, Message, ToolCall, Usage, call_id,
};

type PlanFn = dyn Fn(&LlmRequest) -> Result<Message, LlmError> + Send + Sync;

/// One step of a script: what the planner answers at that step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Call these tools (name and JSON arguments), in parallel.
    ToolCalls(Vec<(String, serde_json::Value)>),
    /// End with this answer.
    Answer(String),
}

impl Step {
    /// A step that calls one tool.
    pub fn call(name: impl Into<String>, arguments: serde_json::Value) -> Step {
        Step::ToolCalls(vec![(name.into(), arguments)])
    }

    /// A step that gives the final answer.
    pub fn answer(text: impl Into<String>) -> Step {
        Step::Answer(text.into())
    }

    fn to_message(&self, step: usize) -> Message {
        match self {
            Step::Answer(text) => Message::assistant(text.clone()),
            Step::ToolCalls(calls) => Message::tool_calls(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, arguments))| ToolCall {
                        id: call_id(step, i),
                        name: name.clone(),
                        arguments: arguments.to_string(),
                    })
                    .collect(),
            ),
        }
    }
}

/// A planner that follows a script or a function of the conversation, with
/// no network.
pub struct Scripted {
    plan: Box<PlanFn>,
    latency: Duration,
}

impl Scripted {
    /// A planner that answers with `plan(request)`.
    pub fn from_fn<F>(plan: F) -> Scripted
    where
        F: Fn(&LlmRequest) -> Result<Message, LlmError> + Send + Sync + 'static,
    {
        Scripted {
            plan: Box::new(plan),
            latency: Duration::ZERO,
        }
    }

    /// A planner that answers step `n` of a conversation ([`LlmRequest::step`])
    /// with `steps[n]`, and with [`LlmError::Planner`] past the end.
    pub fn steps(steps: Vec<Step>) -> Scripted {
        Scripted::from_fn(move |request| {
            let step = request.step();
            steps.get(step).map(|s| s.to_message(step)).ok_or_else(|| {
                LlmError::Planner(format!(
                    "the script has {} steps and no step {step}",
                    steps.len()
                ))
            })
        })
    }

    /// Waits `latency` (on a tokio timer) before each answer, to stand in
    /// for a real model's think time.
    pub fn with_latency(mut self, latency: Duration) -> Scripted {
        self.latency = latency;
        self
    }
}

impl fmt::Debug for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scripted")
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl LlmProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let message = (self.plan)(request)?;
            let usage = Usage::estimate(&request.messages, &message);
            Ok(LlmResponse { message, usage })
        })
    }
}
