//! [`Ctx`]: a task's only way to touch the world. Every call yields, and
//! every completion is journaled, so a task rebuilt from its journal gets
//! the recorded results back instead of calling again.
//!
//! Two kinds of task use it:
//! - **ReAct tasks** (an instruction): the loop in `react.rs` plans with
//!   the planner and runs skills through the step-keyed calls
//!   ([`Ctx::plan_step`], [`Ctx::run_call`]); their journal is the
//!   conversation, and the loop derives its next step from it.
//! - **Program tasks** (a registered function, see [`Programs`]): the
//!   function gets a `Ctx` and calls [`Ctx::llm`], [`Ctx::skill`],
//!   [`Ctx::sleep`], [`Ctx::now`], [`Ctx::spawn`], [`Ctx::join`]. Calls
//!   are numbered in the order the program makes them; each is journaled
//!   as an [`Event::Effect`] under its number. After a restart the program
//!   runs again from its start and every call already journaled returns
//!   its recorded result at once, with no effect: the durable-execution
//!   model, paying one local group-committed fsync per effect instead of a
//!   database round trip.
//!
//! # Invariants
//! - A call takes its number when it is made (before it is first polled),
//!   so calls started together (for example several skills joined at once)
//!   are numbered in program order.
//! - A program must make the same calls in the same order when re-run with
//!   the same results: its decisions may depend only on its input and on
//!   what `Ctx` calls returned. A call whose kind or arguments differ from
//!   the journal at its number fails with [`CtxError::Nondeterministic`].
//! - A skill runs only after its start is durable (with
//!   [`tiffany_wal::SyncMode::Data`]); a non-idempotent one found started
//!   but unfinished is not run again ([`CtxError::Interrupted`]). A timer's
//!   deadline is durable before it sleeps, so a restart sleeps only what
//!   is left.
//! - Spawning a child journals the child's start and the parent's call in
//!   one record: a crash cannot start a child twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tiffany_llm::{LlmError, LlmRequest, LlmResponse, ToolCall};
use tiffany_skills::{SkillCtx, SkillError};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use crate::journal::{Effect, Event, Fnv, fingerprint};
use crate::node::{NodeError, NodeInner, now_ms};
use crate::pal::ActivityKind;
use crate::react::over_budget;
use crate::state::{TaskStatus, WaitOn};

/// The node tool a ReAct planner calls to hand an instruction to another
/// agent and get its final answer as the observation. Granted like a skill
/// (`*` or `agent.*` grant it); a resumed step re-attaches to the child it
/// started.
pub const DELEGATE: &str = "agent.delegate";

/// How deep delegations may nest (a task started by a delegation from a
/// task started by a delegation ...), so that planners delegating to each
/// other cannot start tasks without end.
pub const MAX_DELEGATION_DEPTH: usize = 4;

/// The arguments of [`DELEGATE`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateArgs {
    agent: String,
    instruction: String,
}

impl DelegateArgs {
    fn parse(arguments: &str) -> Result<DelegateArgs, serde_json::Error> {
        serde_json::from_str(arguments)
    }
}

/// The tool the planner sees for [`DELEGATE`].
pub(crate) fn delegate_tool() -> tiffany_llm::ToolSpec {
    tiffany_llm::ToolSpec {
        name: DELEGATE.to_owned(),
        description: "Give another agent of this node an instruction and wait for its final \
                      answer, which is returned as the result."
            .to_owned(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {
                "agent": {"type": "string", "description": "the agent's name"},
                "instruction": {"type": "string", "description": "what it should do"}
            },
            "required": ["agent", "instruction"],
            "additionalProperties": false
        }),
    }
}

/// Why a [`Ctx`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtxError {
    /// The planner failed (after its retries).
    #[error("the planner failed: {0}")]
    Llm(#[from] LlmError),
    /// The skill ran and failed, or could not run (unknown, not granted,
    /// invalid arguments).
    #[error("skill `{skill}` failed: {message}")]
    Skill {
        /// The skill.
        skill: String,
        /// The error text (what a planner would observe).
        message: String,
    },
    /// A non-idempotent skill was running when the node stopped: it was not
    /// run again and its effects are unknown.
    #[error(
        "skill `{skill}` was running when the node stopped; it is not idempotent, so it was \
         not run again and its effects are unknown"
    )]
    Interrupted {
        /// The skill.
        skill: String,
    },
    /// The program asked something else at this call than its journal
    /// recorded: it does not make the same calls when re-run.
    #[error(
        "call {seq} ({what}) differs from the journal: a program must make the same calls in \
         the same order when it is re-run"
    )]
    Nondeterministic {
        /// The call's number.
        seq: u32,
        /// What the program asked this time.
        what: &'static str,
    },
    /// The task's [`crate::Budgets`] allow no further planner call (steps,
    /// tokens or wall time).
    #[error("{0}")]
    Budget(String),
    /// No task has this id.
    #[error("no task {0}")]
    UnknownTask(u64),
    /// The journal failed, or the node refused (an unknown agent): with a
    /// journal failure the task stops and continues when the node reopens.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The program's own failure (see [`CtxError::fail`]).
    #[error("{0}")]
    Failed(String),
}

impl CtxError {
    /// A failure of the program itself: the task fails with this text.
    pub fn fail(message: impl Into<String>) -> CtxError {
        CtxError::Failed(message.into())
    }
}

/// How a joined child task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildOutcome {
    /// The child.
    pub task: u64,
    /// Completed, failed or cancelled.
    pub status: TaskStatus,
    /// Its answer, or why it failed.
    pub text: String,
}

impl ChildOutcome {
    /// Whether the child completed.
    pub fn is_completed(&self) -> bool {
        self.status == TaskStatus::Completed
    }
}

/// What a program's function returns: a boxed future that may be `!Send`
/// (it stays on its agent's worker).
pub type ProgramFuture = Pin<Box<dyn Future<Output = Result<String, CtxError>>>>;

type ProgramFn = dyn Fn(Ctx, String) -> ProgramFuture + Send + Sync;

/// The programs a node can run as tasks, by name. A program is an async
/// function of a [`Ctx`] and an input text that returns the task's answer;
/// see the module docs for the rules a program follows to be resumable.
#[derive(Clone, Default)]
pub struct Programs {
    by_name: HashMap<String, Arc<ProgramFn>>,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Programs").field("names", &names).finish()
    }
}

impl Programs {
    /// Registers `program` under `name` (replacing one of the same name).
    ///
    /// # Panics
    /// If `name` is empty: a task journals its program by name.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, program: F) -> &mut Programs
    where
        F: Fn(Ctx, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, CtxError>> + 'static,
    {
        let name = name.into();
        assert!(!name.is_empty(), "a program needs a name");
        let boxed: Arc<ProgramFn> = Arc::new(move |ctx, input| Box::pin(program(ctx, input)));
        self.by_name.insert(name, boxed);
        self
    }

    /// Whether a program of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<Arc<ProgramFn>> {
        self.by_name.get(name).cloned()
    }
}

/// A task's handle to the world. Cheap to clone; clones share the task's
/// call numbering.
#[derive(Clone)]
pub struct Ctx {
    node: Arc<NodeInner>,
    task: u64,
    agent: u64,
    next_seq: Arc<AtomicU32>,
    /// The task's slot under `NodeConfig::max_active_tasks`, given back
    /// while it waits on a child (so parents waiting on children cannot
    /// hold every slot their children need).
    admitted: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("task", &self.task)
            .field("agent", &self.agent)
            .field("next_seq", &self.next_seq.load(Ordering::Relaxed))
            .finish()
    }
}

/// One numbered call in flight.
struct Call {
    ctx: Ctx,
    seq: u32,
    fingerprint: u64,
    what: &'static str,
    /// A `ctx` tracing span around the call.
    span: tracing::Span,
}

impl Ctx {
    /// A task's context; it takes the task's admission slot, if any.
    pub(crate) fn new(
        node: Arc<NodeInner>,
        task: u64,
        agent: u64,
        admitted: Option<OwnedSemaphorePermit>,
    ) -> Ctx {
        Ctx {
            node,
            task,
            agent,
            next_seq: Arc::new(AtomicU32::new(0)),
            admitted: Arc::new(Mutex::new(admitted)),
        }
    }

    /// The task's id.
    pub fn task(&self) -> u64 {
        self.task
    }

    /// The id of the task's agent.
    pub fn agent(&self) -> u64 {
        self.agent
    }

    pub(crate) fn node(&self) -> &Arc<NodeInner> {
        &self.node
    }

    /// Numbers a call and fingerprints what it asks.
    fn call(&self, what: &'static str, arguments: impl FnOnce(&mut Fnv)) -> Call {
        let mut h = Fnv::default();
        h.write(what.as_bytes());
        h.write(&[0xff]);
        arguments(&mut h);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        Call {
            ctx: self.clone(),
            seq,
            fingerprint: h.0,
            what,
            span: tracing::debug_span!("ctx", call = what, task = self.task, seq),
        }
    }

    /// Asks the planner. Journaled: after a restart the recorded answer is
    /// returned and the planner is not asked again. The task's budgets
    /// apply: past them, [`CtxError::Budget`].
    pub fn llm(
        &self,
        request: LlmRequest,
    ) -> impl Future<Output = Result<LlmResponse, CtxError>> + use<> {
        let names: Vec<String> = request.tools.iter().map(|t| t.name.clone()).collect();
        let asked = fingerprint(&request.messages, &names);
        let call = self.call("llm", |h| h.write(&asked.to_le_bytes()));
        let span = call.span.clone();
        async move {
            match call.recorded()? {
                Some(Effect::Answered {
                    content,
                    tool_calls,
                    usage,
                }) => {
                    return Ok(LlmResponse {
                        message: Event::assistant_message(&content, &tool_calls),
                        usage,
                    });
                }
                Some(Effect::Began(WaitOn::Llm)) => {}
                None => {
                    call.record(Effect::Began(WaitOn::Llm))?;
                }
                Some(_) => return Err(call.nondeterministic()),
            }
            let node = &call.ctx.node;
            let exhausted = {
                let table = node.table();
                let state = table.tasks.get(&call.ctx.task);
                state.and_then(|state| over_budget(node, state))
            };
            if let Some(reason) = exhausted {
                return Err(CtxError::Budget(reason));
            }
            node.publish(
                call.ctx.task,
                call.ctx.agent,
                ActivityKind::WaitingForLlm { step: call.seq },
            );
            let response = node.llm.complete(&request).await?;
            call.record(Effect::Answered {
                content: response.message.content.clone(),
                tool_calls: response.message.tool_calls.clone(),
                usage: response.usage,
            })?;
            Ok(response)
        }
        .instrument(span)
    }

    /// Runs a skill the agent was granted with `arguments` (JSON text) and
    /// returns its output. The start is durable before the skill runs; the
    /// result is journaled, and returned without running again after a
    /// restart.
    pub fn skill(
        &self,
        name: &str,
        arguments: &str,
    ) -> impl Future<Output = Result<String, CtxError>> + use<> {
        let (name, arguments) = (name.to_owned(), arguments.to_owned());
        let call = self.call("skill", |h| {
            h.write(name.as_bytes());
            h.write(&[0xff]);
            h.write(arguments.as_bytes());
        });
        let span = call.span.clone();
        async move {
            let ctx = &call.ctx;
            match call.recorded()? {
                Some(Effect::Ran { ok, content }) => return skill_result(&name, ok, content),
                Some(Effect::Interrupted) => return Err(CtxError::Interrupted { skill: name }),
                Some(Effect::Began(WaitOn::Skill))
                    if !ctx.node.is_idempotent(&name, &arguments) =>
                {
                    call.record(Effect::Interrupted)?;
                    ctx.node.publish(
                        ctx.task,
                        ctx.agent,
                        ActivityKind::SkillInterrupted {
                            skill: name.clone(),
                        },
                    );
                    return Err(CtxError::Interrupted { skill: name });
                }
                Some(Effect::Began(WaitOn::Skill)) => {}
                None => {}
                Some(_) => return Err(call.nondeterministic()),
            }
            let lsn = call.record(Effect::Began(WaitOn::Skill))?;
            ctx.node.durable(lsn).await?;
            // Programs wait durably with `Ctx::sleep`.
            let (ok, content) = ctx.run_skill(&name, &arguments, Duration::ZERO).await;
            call.record(Effect::Ran {
                ok,
                content: content.clone(),
            })?;
            skill_result(&name, ok, content)
        }
        .instrument(span)
    }

    /// Sleeps for `duration` on a durable timer: after a restart the task
    /// sleeps only what is left of it. The task shows as waiting on a
    /// timer meanwhile.
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = Result<(), CtxError>> + use<> {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let call = self.call("sleep", |h| h.write(&millis.to_le_bytes()));
        let span = call.span.clone();
        async move {
            let until_ms = match call.recorded()? {
                Some(Effect::Timer { until_ms }) => until_ms,
                None => {
                    let until_ms = now_ms().saturating_add(millis);
                    let lsn = call.record(Effect::Timer { until_ms })?;
                    call.ctx.node.durable(lsn).await?;
                    until_ms
                }
                Some(_) => return Err(call.nondeterministic()),
            };
            let left = until_ms.saturating_sub(now_ms());
            if left > 0 {
                tiffany_sched::sleep(Duration::from_millis(left)).await;
            }
            Ok(())
        }
        .instrument(span)
    }

    /// The wall-clock time, journaled: a re-run program reads the same.
    pub fn now(&self) -> impl Future<Output = Result<SystemTime, CtxError>> + use<> {
        let call = self.call("now", |_| {});
        let span = call.span.clone();
        async move {
            let ms = match call.recorded()? {
                Some(Effect::Clock { ms }) => ms,
                None => {
                    let ms = now_ms();
                    call.record(Effect::Clock { ms })?;
                    ms
                }
                Some(_) => return Err(call.nondeterministic()),
            };
            Ok(UNIX_EPOCH + Duration::from_millis(ms))
        }
        .instrument(span)
    }

    /// Starts a ReAct task for `agent` with `instruction`, as a child of
    /// this task; returns its id. See [`Ctx::join`].
    pub fn spawn(
        &self,
        agent: u64,
        instruction: &str,
    ) -> impl Future<Output = Result<u64, CtxError>> + use<> {
        let instruction = instruction.to_owned();
        let call = self.call("spawn", |h| {
            h.write(&agent.to_le_bytes());
            h.write(instruction.as_bytes());
        });
        let system = self.node.config.system_prompt.clone();
        let span = call.span.clone();
        call.spawn_child(agent, move |task, parent, started_ms| Event::TaskStarted {
            task,
            agent,
            system,
            instruction,
            started_ms,
            parent: Some(parent),
        })
        .instrument(span)
    }

    /// Starts a program task for `agent`, as a child of this task; returns
    /// its id.
    pub fn spawn_program(
        &self,
        agent: u64,
        program: &str,
        input: &str,
    ) -> impl Future<Output = Result<u64, CtxError>> + use<> {
        let (program, input) = (program.to_owned(), input.to_owned());
        let call = self.call("spawn_program", |h| {
            h.write(&agent.to_le_bytes());
            h.write(program.as_bytes());
            h.write(&[0xff]);
            h.write(input.as_bytes());
        });
        let span = call.span.clone();
        call.spawn_child(agent, move |task, parent, started_ms| {
            Event::ProgramStarted {
                task,
                agent,
                program,
                input,
                started_ms,
                parent: Some(parent),
            }
        })
        .instrument(span)
    }

    /// Waits until task `child` ends and returns how. The task shows as
    /// waiting on a join meanwhile.
    pub fn join(&self, child: u64) -> impl Future<Output = Result<ChildOutcome, CtxError>> + use<> {
        let call = self.call("join", |h| h.write(&child.to_le_bytes()));
        let span = call.span.clone();
        async move {
            match call.recorded()? {
                Some(Effect::Joined {
                    child,
                    status,
                    outcome,
                }) => {
                    return Ok(ChildOutcome {
                        task: child,
                        status,
                        text: outcome,
                    });
                }
                Some(Effect::Began(WaitOn::Join)) => {}
                None => {
                    call.record(Effect::Began(WaitOn::Join))?;
                }
                Some(_) => return Err(call.nondeterministic()),
            }
            let (status, text) = call.ctx.wait_for(child).await?;
            call.record(Effect::Joined {
                child,
                status,
                outcome: text.clone(),
            })?;
            Ok(ChildOutcome {
                task: child,
                status,
                text,
            })
        }
        .instrument(span)
    }

    /// Waits until task `child` ends; returns its status and outcome. The
    /// task's admission slot is given back meanwhile.
    async fn wait_for(&self, child: u64) -> Result<(TaskStatus, String), CtxError> {
        let node = &self.node;
        // Whether the slot was given back (`None`: not yet).
        let mut gave_back: Option<bool> = None;
        let ended = loop {
            let ended = node.task_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let finished = {
                let table = node.table();
                let state = table
                    .tasks
                    .get(&child)
                    .ok_or(CtxError::UnknownTask(child))?;
                state
                    .status
                    .is_terminal()
                    .then(|| (state.status, state.outcome.clone().unwrap_or_default()))
            };
            if let Some(finished) = finished {
                break finished;
            }
            if gave_back.is_none() {
                gave_back = Some(self.lock_admitted().take().is_some());
            }
            ended.await;
        };
        if let (Some(true), Some(permits)) = (gave_back, &node.admission) {
            let permit = Arc::clone(permits).acquire_owned().await;
            *self.lock_admitted() = permit.ok();
        }
        Ok(ended)
    }

    fn lock_admitted(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.admitted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the node tool [`DELEGATE`] for call `index` of a ReAct step:
    /// starts a ReAct task for the named agent as a child of this one
    /// (journaled with the call's identity, so a resumed step finds its
    /// child instead of starting another) and waits for its answer.
    async fn delegate(&self, step: u32, index: u32, arguments: &str) -> (bool, String) {
        let request = match DelegateArgs::parse(arguments) {
            Ok(request) => request,
            Err(error) => {
                return (
                    false,
                    format!("error: invalid arguments for `{DELEGATE}`: {error}"),
                );
            }
        };
        let child = match self.start_delegate(step_call_key(DELEGATE, step, index), &request) {
            Ok(child) => child,
            Err(error) => return (false, format!("error: {error}")),
        };
        match self.wait_for(child).await {
            Ok((TaskStatus::Completed, answer)) => (true, answer),
            Ok((status, outcome)) => (
                false,
                format!(
                    "error: task {child} of `{}` {}: {outcome}",
                    request.agent,
                    status.as_str()
                ),
            ),
            Err(error) => (false, format!("error: {error}")),
        }
    }

    /// The child a delegation `key` started, or a new one.
    fn start_delegate(&self, key: u64, request: &DelegateArgs) -> Result<u64, CtxError> {
        let node = &self.node;
        let mut table = node.table();
        let Some(state) = table.tasks.get(&self.task) else {
            return Err(CtxError::UnknownTask(self.task));
        };
        let started = state.effects.iter().find_map(|r| match &r.effect {
            Effect::Spawned(child) if r.call == key => child.task(),
            _ => None,
        });
        if let Some(child) = started {
            return Ok(child);
        }
        let seq = state.effects.len() as u32;
        let mut depth = 0;
        let mut ancestor = state.parent;
        while let Some(parent) = ancestor {
            depth += 1;
            ancestor = table.tasks.get(&parent).and_then(|t| t.parent);
        }
        if depth >= MAX_DELEGATION_DEPTH {
            return Err(CtxError::fail(format!(
                "delegation is nested {depth} deep, the most allowed is {MAX_DELEGATION_DEPTH}"
            )));
        }
        let agent = table
            .agents
            .values()
            .find(|a| a.name == request.agent)
            .map(|a| a.id)
            .ok_or_else(|| NodeError::UnknownAgent(request.agent.clone()))?;
        let child = table.next_task_id();
        let event = Event::Effect {
            task: self.task,
            seq,
            call: key,
            effect: Effect::Spawned(Box::new(Event::TaskStarted {
                task: child,
                agent,
                system: node.config.system_prompt.clone(),
                instruction: request.instruction.clone(),
                started_ms: now_ms(),
                parent: Some(self.task),
            })),
        };
        node.append_locked(&mut table, self.agent, &event)?;
        drop(table);
        node.start(child, agent, false);
        Ok(child)
    }

    /// Journals the planner call of a ReAct step and asks the planner.
    #[tracing::instrument(level = "debug", name = "ctx.plan", skip_all, fields(task = self.task, step))]
    pub(crate) async fn plan_step(
        &self,
        step: u32,
        request: &LlmRequest,
        tool_names: &[String],
    ) -> Result<(), PlanError> {
        let (node, task, agent) = (&self.node, self.task, self.agent);
        let fingerprint = fingerprint(&request.messages, tool_names);
        node.journal(
            agent,
            &Event::LlmRequested {
                task,
                step,
                fingerprint,
            },
        )?;
        node.publish(task, agent, ActivityKind::WaitingForLlm { step });
        let response = node.llm.complete(request).await.map_err(PlanError::Llm)?;
        let event = Event::LlmResponded {
            task,
            step,
            content: response.message.content,
            tool_calls: response.message.tool_calls,
            usage: response.usage,
        };
        node.journal(agent, &event)?;
        Ok(())
    }

    /// Runs call `index` of a ReAct step (its start already durable) and
    /// journals the observation. `resumed_after`: see
    /// [`Ctx::wait_resumed_after`].
    #[tracing::instrument(level = "debug", name = "ctx.skill", skip_all, fields(task = self.task, step, index, skill = %call.name))]
    pub(crate) async fn run_call(
        self,
        step: u32,
        index: u32,
        call: ToolCall,
        resumed_after: Duration,
    ) -> Result<(), NodeError> {
        let (ok, content) = if call.name == DELEGATE && self.node.delegation_granted(self.agent) {
            self.delegate(step, index, &call.arguments).await
        } else {
            self.run_skill(&call.name, &call.arguments, resumed_after)
                .await
        };
        self.node.journal(
            self.agent,
            &Event::SkillFinished {
                task: self.task,
                step,
                call: index,
                ok,
                content,
            },
        )?;
        Ok(())
    }

    /// For call `index` of ReAct step `step`, whose skill [`waits`]: on its
    /// first run, journals when it starts (just before its `SkillStarted`,
    /// so the sync of the step's starts covers it) and returns zero; for a
    /// call a restart resumes, returns how long ago that journaled start
    /// was ([`SkillCtx::resumed_after`]).
    ///
    /// [`waits`]: tiffany_skills::Skill::waits
    pub(crate) fn wait_resumed_after(&self, step: u32, index: u32) -> Result<Duration, NodeError> {
        let key = step_call_key("skill.started", step, index);
        let mut table = self.node.table();
        // A running task is in the table; one that is not has nothing a
        // restart could resume.
        let Some(state) = table.tasks.get(&self.task) else {
            return Ok(Duration::ZERO);
        };
        let started = state.effects.iter().find_map(|r| match r.effect {
            Effect::Clock { ms } if r.call == key => Some(ms),
            _ => None,
        });
        if let Some(ms) = started {
            return Ok(Duration::from_millis(now_ms().saturating_sub(ms)));
        }
        let event = Event::Effect {
            task: self.task,
            seq: state.effects.len() as u32,
            call: key,
            effect: Effect::Clock { ms: now_ms() },
        };
        self.node.append_locked(&mut table, self.agent, &event)?;
        Ok(Duration::ZERO)
    }

    /// Runs a skill with the agent's grants and workspace; returns whether
    /// it succeeded and what the caller observes. Reports to the PAL.
    /// `resumed_after`: see [`SkillCtx::resumed_after`].
    async fn run_skill(
        &self,
        name: &str,
        arguments: &str,
        resumed_after: Duration,
    ) -> (bool, String) {
        let (node, task, agent) = (&self.node, self.task, self.agent);
        node.publish(
            task,
            agent,
            ActivityKind::SkillStart {
                skill: name.to_owned(),
                arguments: arguments.to_owned(),
            },
        );
        let started = Instant::now();
        let grants = node.grants(agent);
        let (workspace, agent_name) = node.workspace_and_name(agent);
        let skill_ctx = SkillCtx {
            workspace: &workspace,
            agent: &agent_name,
            timeout: node.config.skill_timeout,
            resumed_after,
        };
        let result = node.skills.call(&grants, name, arguments, skill_ctx).await;
        let ok = result.is_ok();
        let content = match result {
            Ok(output) => output.content,
            Err(error) => observation_of(&error),
        };
        node.publish(
            task,
            agent,
            ActivityKind::SkillComplete {
                skill: name.to_owned(),
                ok,
                micros: started.elapsed().as_micros() as u64,
            },
        );
        (ok, content)
    }
}

impl Call {
    /// What the journal holds for this call, checked against what is
    /// asked now.
    fn recorded(&self) -> Result<Option<Effect>, CtxError> {
        let table = self.ctx.node.table();
        let state = table
            .tasks
            .get(&self.ctx.task)
            .ok_or(CtxError::UnknownTask(self.ctx.task))?;
        match state.effects.get(self.seq as usize) {
            None => Ok(None),
            Some(record) if record.call == self.fingerprint => Ok(Some(record.effect.clone())),
            Some(_) => Err(self.nondeterministic()),
        }
    }

    fn record(&self, effect: Effect) -> Result<tiffany_wal::Lsn, NodeError> {
        self.ctx.node.journal(
            self.ctx.agent,
            &Event::Effect {
                task: self.ctx.task,
                seq: self.seq,
                call: self.fingerprint,
                effect,
            },
        )
    }

    fn nondeterministic(&self) -> CtxError {
        CtxError::Nondeterministic {
            seq: self.seq,
            what: self.what,
        }
    }

    /// Journals a child's start and this call in one record, then starts
    /// the child's loop; after a restart returns the recorded child.
    async fn spawn_child(
        self,
        agent: u64,
        start: impl FnOnce(u64, u64, u64) -> Event + 'static,
    ) -> Result<u64, CtxError> {
        match self.recorded()? {
            Some(Effect::Spawned(child)) => {
                return child.task().ok_or(CtxError::UnknownTask(0));
            }
            None => {}
            Some(_) => return Err(self.nondeterministic()),
        }
        let node = &self.ctx.node;
        let child = {
            let mut table = node.table();
            if !table.agents.contains_key(&agent) {
                return Err(NodeError::UnknownAgent(agent.to_string()).into());
            }
            let child = table.next_task_id();
            let event = Event::Effect {
                task: self.ctx.task,
                seq: self.seq,
                call: self.fingerprint,
                effect: Effect::Spawned(Box::new(start(child, self.ctx.task, now_ms()))),
            };
            node.append_locked(&mut table, self.ctx.agent, &event)?;
            child
        };
        node.start(child, agent, false);
        Ok(child)
    }
}

/// The identity of a ReAct step's call `index` in the task's effects, for
/// what the runtime journals about it (`what`: a delegation's child, a
/// wait's start).
fn step_call_key(what: &str, step: u32, index: u32) -> u64 {
    let mut h = Fnv::default();
    h.write(what.as_bytes());
    h.write(&step.to_le_bytes());
    h.write(&index.to_le_bytes());
    h.0
}

fn skill_result(name: &str, ok: bool, content: String) -> Result<String, CtxError> {
    if ok {
        Ok(content)
    } else {
        Err(CtxError::Skill {
            skill: name.to_owned(),
            message: content,
        })
    }
}

/// The text the planner sees for a failed call.
fn observation_of(error: &SkillError) -> String {
    format!("error: {error}")
}

/// Why a ReAct plan step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error(transparent)]
    Llm(LlmError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Runs a program task from its start (journaled calls return their
/// recorded results) and concludes it with what the program returns.
pub(crate) async fn run_program(
    ctx: Ctx,
    program: &str,
    input: String,
) -> Result<Option<Event>, NodeError> {
    let task = ctx.task;
    let Some(body) = ctx.node.programs.get(program) else {
        tracing::warn!(
            task,
            program,
            "no program of this name is registered: the task waits for a node that has it"
        );
        return Ok(None);
    };
    Ok(Some(match body(ctx, input).await {
        Ok(answer) => Event::TaskCompleted { task, answer },
        Err(CtxError::Node(error)) => return Err(error),
        Err(error) => Event::TaskFailed {
            task,
            error: error.to_string(),
        },
    }))
}

/// How a program task's instruction reads on the PAL and in `tasks list`.
pub(crate) fn program_instruction(program: &str, input: &str) -> String {
    format!("{program}({input})")
}
