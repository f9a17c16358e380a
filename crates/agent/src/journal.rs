//! The journal: what a node writes to its WAL, one record per event.
//!
//! # Layout
//! Each WAL record is one event: a schema version byte ([`SCHEMA_VERSION`]),
//! a kind byte, then the kind's fields (see [`crate::codec`]). Node-wide
//! events (agents, snapshots, shutdown) go to stream [`NODE_STREAM`]; a
//! task's events go to its agent's stream, so `wal dump --stream N` shows
//! one agent.
//!
//! # Invariants
//! - The conversation is journaled as deltas: a task's instruction once,
//!   then each step's assistant message and each tool result once. Nothing
//!   is ever re-journaled, so the journal grows linearly with steps.
//! - Decoding rejects unknown versions and kinds with a typed error; it
//!   never panics on any input.

use tiffany_llm::{Message, ToolCall, Usage};

use crate::codec::{Decoder, Encoder};
use crate::state::{TaskStatus, WaitOn};

/// The version written in the first byte of every record.
pub const SCHEMA_VERSION: u8 = 1;

/// The WAL stream of node-wide events.
pub const NODE_STREAM: u64 = 0;

/// A journal record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Written by a newer Tiffany.
    #[error(
        "journal schema version {0} is not supported (this build reads version {SCHEMA_VERSION})"
    )]
    UnsupportedVersion(u8),
    /// An event kind this build does not know.
    #[error("unknown journal event kind {0}")]
    UnknownKind(u8),
    /// The bytes do not decode.
    #[error("malformed journal record at byte {offset}: expected {what}")]
    Malformed {
        /// Offset in the record.
        offset: usize,
        /// What was expected there.
        what: &'static str,
    },
}

/// A scheduling class, as journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Runs before everything else.
    Critical,
    /// The default.
    #[default]
    Normal,
    /// Runs when nothing else is ready; parked first under overload.
    Background,
}

impl Priority {
    fn code(self) -> u8 {
        match self {
            Priority::Critical => 0,
            Priority::Normal => 1,
            Priority::Background => 2,
        }
    }

    fn from_code(code: u8) -> Option<Priority> {
        Some(match code {
            0 => Priority::Critical,
            1 => Priority::Normal,
            2 => Priority::Background,
            _ => return None,
        })
    }

    /// The lowercase name (`critical`, `normal`, `background`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Background => "background",
        }
    }
}

/// An agent's definition, journaled when it is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// The node-unique id; also the agent's WAL stream.
    pub id: u64,
    /// The node-unique name.
    pub name: String,
    /// The memory namespace.
    pub namespace: String,
    /// Granted skills (`*` grants all, `fs.*` a family).
    pub grants: Vec<String>,
    /// The scheduling class of its tasks.
    pub priority: Priority,
    /// Its workspace directory.
    pub workspace: String,
}

/// One journal event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An agent was created.
    AgentCreated(AgentSpec),
    /// A task received its instruction.
    TaskStarted {
        /// Task id.
        task: u64,
        /// Owning agent.
        agent: u64,
        /// The system prompt the conversation starts with.
        system: String,
        /// The instruction.
        instruction: String,
        /// Wall-clock start, milliseconds since the Unix epoch.
        started_ms: u64,
        /// The task that spawned it, if any.
        parent: Option<u64>,
    },
    /// The planner is about to be asked (fingerprint of the request).
    LlmRequested {
        /// Task id.
        task: u64,
        /// The step (0-based).
        step: u32,
        /// FNV-1a of the request's conversation and tools.
        fingerprint: u64,
    },
    /// The planner answered.
    LlmResponded {
        /// Task id.
        task: u64,
        /// The step.
        step: u32,
        /// The final answer text, if no tool calls.
        content: String,
        /// The tool calls.
        tool_calls: Vec<ToolCall>,
        /// Tokens used.
        usage: Usage,
    },
    /// A skill call began.
    SkillStarted {
        /// Task id.
        task: u64,
        /// The step.
        step: u32,
        /// Index of the call in the step's tool calls.
        call: u32,
    },
    /// A skill call ended; `content` is the observation the planner sees.
    SkillFinished {
        /// Task id.
        task: u64,
        /// The step.
        step: u32,
        /// Index of the call.
        call: u32,
        /// Whether the skill succeeded.
        ok: bool,
        /// The observation (output or error text).
        content: String,
    },
    /// A non-idempotent skill was found in flight after a crash: it is not
    /// run again, and the planner sees an error for it.
    SkillInterrupted {
        /// Task id.
        task: u64,
        /// The step.
        step: u32,
        /// Index of the call.
        call: u32,
    },
    /// The task was parked by overload control.
    Parked {
        /// Task id.
        task: u64,
    },
    /// The task was unparked.
    Unparked {
        /// Task id.
        task: u64,
    },
    /// The task concluded with a final answer.
    TaskCompleted {
        /// Task id.
        task: u64,
        /// The answer.
        answer: String,
    },
    /// The task failed.
    TaskFailed {
        /// Task id.
        task: u64,
        /// Why.
        error: String,
    },
    /// The task was cancelled.
    TaskCancelled {
        /// Task id.
        task: u64,
    },
    /// A compressed snapshot of every task, written before a WAL checkpoint
    /// so that replay can start there.
    Snapshot {
        /// lz4-compressed snapshot (see `crate::state`).
        compressed: Vec<u8>,
    },
    /// The node shut down cleanly.
    Shutdown,
    /// A program task (a registered function run over a [`crate::Ctx`])
    /// received its input.
    ProgramStarted {
        /// Task id.
        task: u64,
        /// Owning agent.
        agent: u64,
        /// The registered program's name.
        program: String,
        /// Its input.
        input: String,
        /// Wall-clock start, milliseconds since the Unix epoch.
        started_ms: u64,
        /// The task that spawned it, if any.
        parent: Option<u64>,
    },
    /// One [`crate::Ctx`] call of a program task: that it began, or what it
    /// returned. Calls are numbered in the order the program makes them.
    Effect {
        /// Task id.
        task: u64,
        /// The call's number in the task (0-based).
        seq: u32,
        /// FNV-1a of what was asked (kind and arguments): a re-run program
        /// asking something else at `seq` is not deterministic.
        call: u64,
        /// What happened.
        effect: Effect,
    },
}

/// What one [`crate::Ctx`] call of a program task journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The call began and waits; a skill's is durable before it runs.
    Began(WaitOn),
    /// The planner answered.
    Answered {
        /// The answer text.
        content: String,
        /// The tool calls.
        tool_calls: Vec<ToolCall>,
        /// Tokens used.
        usage: Usage,
    },
    /// A skill ran.
    Ran {
        /// Whether it succeeded.
        ok: bool,
        /// Its output, or the error text.
        content: String,
    },
    /// A non-idempotent skill was in flight at a crash: not run again.
    Interrupted,
    /// A durable timer: the call sleeps until this wall-clock time
    /// (milliseconds since the Unix epoch), across restarts.
    Timer {
        /// The deadline.
        until_ms: u64,
    },
    /// The wall clock was read.
    Clock {
        /// Milliseconds since the Unix epoch.
        ms: u64,
    },
    /// A child task was started: its [`Event::TaskStarted`] or
    /// [`Event::ProgramStarted`], applied with this record (one record, so
    /// a crash cannot start a child twice).
    Spawned(Box<Event>),
    /// A child task ended and the caller saw how.
    Joined {
        /// The child.
        child: u64,
        /// Its terminal status.
        status: TaskStatus,
        /// Its answer or error.
        outcome: String,
    },
}

impl Effect {
    /// The effect's name, as `wal dump` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Effect::Began(_) => "began",
            Effect::Answered { .. } => "answered",
            Effect::Ran { .. } => "ran",
            Effect::Interrupted => "interrupted",
            Effect::Timer { .. } => "timer",
            Effect::Clock { .. } => "clock",
            Effect::Spawned(_) => "spawned",
            Effect::Joined { .. } => "joined",
        }
    }

    pub(crate) fn encode_into(&self, e: &mut Encoder) {
        match self {
            Effect::Began(on) => {
                e.u8(0);
                e.u8(TaskStatus::Waiting(*on).code());
            }
            Effect::Answered {
                content,
                tool_calls,
                usage,
            } => {
                e.u8(1);
                e.str(content);
                e.tool_calls(tool_calls);
                e.varint(usage.prompt_tokens);
                e.varint(usage.completion_tokens);
            }
            Effect::Ran { ok, content } => {
                e.u8(2);
                e.u8(u8::from(*ok));
                e.str(content);
            }
            Effect::Interrupted => e.u8(3),
            Effect::Timer { until_ms } => {
                e.u8(4);
                e.varint(*until_ms);
            }
            Effect::Clock { ms } => {
                e.u8(5);
                e.varint(*ms);
            }
            Effect::Spawned(child) => {
                e.u8(6);
                child.encode_into(e);
            }
            Effect::Joined {
                child,
                status,
                outcome,
            } => {
                e.u8(7);
                e.varint(*child);
                e.u8(status.code());
                e.str(outcome);
            }
        }
    }

    pub(crate) fn decode_from(d: &mut Decoder<'_>) -> Result<Effect, JournalError> {
        let status = |d: &mut Decoder<'_>| {
            TaskStatus::from_code(d.u8()?).ok_or_else(|| d.malformed("a task status code"))
        };
        Ok(match d.u8()? {
            0 => match status(d)? {
                TaskStatus::Waiting(on) => Effect::Began(on),
                _ => return Err(d.malformed("a wait kind")),
            },
            1 => Effect::Answered {
                content: d.string()?,
                tool_calls: d.tool_calls()?,
                usage: Usage {
                    prompt_tokens: d.varint()?,
                    completion_tokens: d.varint()?,
                },
            },
            2 => Effect::Ran {
                ok: d.bool()?,
                content: d.string()?,
            },
            3 => Effect::Interrupted,
            4 => Effect::Timer {
                until_ms: d.varint()?,
            },
            5 => Effect::Clock { ms: d.varint()? },
            6 => match Event::decode_from(d)? {
                child @ (Event::TaskStarted { .. } | Event::ProgramStarted { .. }) => {
                    Effect::Spawned(Box::new(child))
                }
                _ => return Err(d.malformed("a child task's start")),
            },
            7 => Effect::Joined {
                child: d.varint()?,
                status: status(d)?,
                outcome: d.string()?,
            },
            _ => return Err(d.malformed("an effect kind")),
        })
    }

    /// The effect as a JSON object (`{"effect": kind, ...fields}`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut v = match self {
            Effect::Began(on) => json!({"waits_on": TaskStatus::Waiting(*on).waiting_on()}),
            Effect::Answered {
                content,
                tool_calls,
                usage,
            } => json!({
                "content": content, "tool_calls": tool_calls,
                "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            }),
            Effect::Ran { ok, content } => json!({"ok": ok, "content": content}),
            Effect::Interrupted => json!({}),
            Effect::Timer { until_ms } => json!({"until_ms": until_ms}),
            Effect::Clock { ms } => json!({"ms": ms}),
            Effect::Spawned(child) => json!({"child": child.to_json()}),
            Effect::Joined {
                child,
                status,
                outcome,
            } => json!({"child": child, "status": status.as_str(), "outcome": outcome}),
        };
        v["effect"] = self.name().into();
        v
    }
}

impl Event {
    /// The task this event belongs to, if any.
    pub fn task(&self) -> Option<u64> {
        match self {
            Event::TaskStarted { task, .. }
            | Event::LlmRequested { task, .. }
            | Event::LlmResponded { task, .. }
            | Event::SkillStarted { task, .. }
            | Event::SkillFinished { task, .. }
            | Event::SkillInterrupted { task, .. }
            | Event::Parked { task }
            | Event::Unparked { task }
            | Event::TaskCompleted { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskCancelled { task }
            | Event::ProgramStarted { task, .. }
            | Event::Effect { task, .. } => Some(*task),
            Event::AgentCreated(_) | Event::Snapshot { .. } | Event::Shutdown => None,
        }
    }

    /// The event's name, as `wal dump` prints it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AgentCreated(_) => "agent_created",
            Event::TaskStarted { .. } => "task_started",
            Event::LlmRequested { .. } => "llm_requested",
            Event::LlmResponded { .. } => "llm_responded",
            Event::SkillStarted { .. } => "skill_started",
            Event::SkillFinished { .. } => "skill_finished",
            Event::SkillInterrupted { .. } => "skill_interrupted",
            Event::Parked { .. } => "parked",
            Event::Unparked { .. } => "unparked",
            Event::TaskCompleted { .. } => "task_completed",
            Event::TaskFailed { .. } => "task_failed",
            Event::TaskCancelled { .. } => "task_cancelled",
            Event::Snapshot { .. } => "snapshot",
            Event::Shutdown => "shutdown",
            Event::ProgramStarted { .. } => "program_started",
            Event::Effect { .. } => "effect",
        }
    }

    /// The assistant message of an [`Event::LlmResponded`].
    pub fn assistant_message(content: &str, tool_calls: &[ToolCall]) -> Message {
        if tool_calls.is_empty() {
            Message::assistant(content)
        } else {
            let mut m = Message::tool_calls(tool_calls.to_vec());
            m.content = content.to_owned();
            m
        }
    }

    /// Encodes the event as one WAL record.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        self.encode_into(&mut e);
        e.buf
    }

    pub(crate) fn encode_into(&self, e: &mut Encoder) {
        e.u8(SCHEMA_VERSION);
        match self {
            Event::AgentCreated(a) => {
                e.u8(1);
                e.varint(a.id);
                e.str(&a.name);
                e.str(&a.namespace);
                e.varint(a.grants.len() as u64);
                for g in &a.grants {
                    e.str(g);
                }
                e.u8(a.priority.code());
                e.str(&a.workspace);
            }
            Event::TaskStarted {
                task,
                agent,
                system,
                instruction,
                started_ms,
                parent,
            } => {
                e.u8(2);
                e.varint(*task);
                e.varint(*agent);
                e.str(system);
                e.str(instruction);
                e.varint(*started_ms);
                e.opt_varint(*parent);
            }
            Event::LlmRequested {
                task,
                step,
                fingerprint,
            } => {
                e.u8(3);
                e.varint(*task);
                e.varint(u64::from(*step));
                e.u64_fixed(*fingerprint);
            }
            Event::LlmResponded {
                task,
                step,
                content,
                tool_calls,
                usage,
            } => {
                e.u8(4);
                e.varint(*task);
                e.varint(u64::from(*step));
                e.str(content);
                e.tool_calls(tool_calls);
                e.varint(usage.prompt_tokens);
                e.varint(usage.completion_tokens);
            }
            Event::SkillStarted { task, step, call } => {
                e.u8(5);
                e.varint(*task);
                e.varint(u64::from(*step));
                e.varint(u64::from(*call));
            }
            Event::SkillFinished {
                task,
                step,
                call,
                ok,
                content,
            } => {
                e.u8(6);
                e.varint(*task);
                e.varint(u64::from(*step));
                e.varint(u64::from(*call));
                e.u8(u8::from(*ok));
                e.str(content);
            }
            Event::Parked { task } => {
                e.u8(7);
                e.varint(*task);
            }
            Event::Unparked { task } => {
                e.u8(8);
                e.varint(*task);
            }
            Event::TaskCompleted { task, answer } => {
                e.u8(9);
                e.varint(*task);
                e.str(answer);
            }
            Event::TaskFailed { task, error } => {
                e.u8(10);
                e.varint(*task);
                e.str(error);
            }
            Event::TaskCancelled { task } => {
                e.u8(11);
                e.varint(*task);
            }
            Event::Snapshot { compressed } => {
                e.u8(12);
                e.bytes(compressed);
            }
            Event::Shutdown => e.u8(13),
            Event::SkillInterrupted { task, step, call } => {
                e.u8(14);
                e.varint(*task);
                e.varint(u64::from(*step));
                e.varint(u64::from(*call));
            }
            Event::ProgramStarted {
                task,
                agent,
                program,
                input,
                started_ms,
                parent,
            } => {
                e.u8(15);
                e.varint(*task);
                e.varint(*agent);
                e.str(program);
                e.str(input);
                e.varint(*started_ms);
                e.opt_varint(*parent);
            }
            Event::Effect {
                task,
                seq,
                call,
                effect,
            } => {
                e.u8(16);
                e.varint(*task);
                e.varint(u64::from(*seq));
                e.u64_fixed(*call);
                effect.encode_into(e);
            }
        }
    }

    /// Decodes one WAL record.
    pub fn decode(bytes: &[u8]) -> Result<Event, JournalError> {
        let mut d = Decoder::new(bytes);
        let event = Event::decode_from(&mut d)?;
        d.finish()?;
        Ok(event)
    }

    pub(crate) fn decode_from(d: &mut Decoder<'_>) -> Result<Event, JournalError> {
        let version = d.u8()?;
        if version != SCHEMA_VERSION {
            return Err(JournalError::UnsupportedVersion(version));
        }
        let kind = d.u8()?;
        Ok(match kind {
            1 => {
                let id = d.varint()?;
                let name = d.string()?;
                let namespace = d.string()?;
                let grants = (0..d.count()?)
                    .map(|_| d.string())
                    .collect::<Result<_, _>>()?;
                let priority =
                    Priority::from_code(d.u8()?).ok_or_else(|| d.malformed("a priority code"))?;
                let workspace = d.string()?;
                Event::AgentCreated(AgentSpec {
                    id,
                    name,
                    namespace,
                    grants,
                    priority,
                    workspace,
                })
            }
            2 => Event::TaskStarted {
                task: d.varint()?,
                agent: d.varint()?,
                system: d.string()?,
                instruction: d.string()?,
                started_ms: d.varint()?,
                parent: d.opt_varint()?,
            },
            3 => Event::LlmRequested {
                task: d.varint()?,
                step: d.u32()?,
                fingerprint: d.u64_fixed()?,
            },
            4 => {
                let task = d.varint()?;
                let step = d.u32()?;
                let content = d.string()?;
                let tool_calls = d.tool_calls()?;
                let usage = Usage {
                    prompt_tokens: d.varint()?,
                    completion_tokens: d.varint()?,
                };
                Event::LlmResponded {
                    task,
                    step,
                    content,
                    tool_calls,
                    usage,
                }
            }
            5 => Event::SkillStarted {
                task: d.varint()?,
                step: d.u32()?,
                call: d.u32()?,
            },
            6 => Event::SkillFinished {
                task: d.varint()?,
                step: d.u32()?,
                call: d.u32()?,
                ok: d.bool()?,
                content: d.string()?,
            },
            7 => Event::Parked { task: d.varint()? },
            8 => Event::Unparked { task: d.varint()? },
            9 => Event::TaskCompleted {
                task: d.varint()?,
                answer: d.string()?,
            },
            10 => Event::TaskFailed {
                task: d.varint()?,
                error: d.string()?,
            },
            11 => Event::TaskCancelled { task: d.varint()? },
            12 => Event::Snapshot {
                compressed: d.bytes()?.to_vec(),
            },
            13 => Event::Shutdown,
            14 => Event::SkillInterrupted {
                task: d.varint()?,
                step: d.u32()?,
                call: d.u32()?,
            },
            15 => Event::ProgramStarted {
                task: d.varint()?,
                agent: d.varint()?,
                program: d.string()?,
                input: d.string()?,
                started_ms: d.varint()?,
                parent: d.opt_varint()?,
            },
            16 => Event::Effect {
                task: d.varint()?,
                seq: d.u32()?,
                call: d.u64_fixed()?,
                effect: Effect::decode_from(d)?,
            },
            other => return Err(JournalError::UnknownKind(other)),
        })
    }
}

impl Event {
    /// The event as a JSON object (`{"event": kind, ...fields}`), every
    /// text in full; a snapshot shows its compressed size only.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut v = match self {
            Event::AgentCreated(a) => json!({
                "agent": a.id, "name": a.name, "namespace": a.namespace, "grants": a.grants,
                "priority": a.priority.as_str(), "workspace": a.workspace,
            }),
            Event::TaskStarted {
                task,
                agent,
                system,
                instruction,
                started_ms,
                parent,
            } => json!({
                "task": task, "agent": agent, "system": system, "instruction": instruction,
                "started_ms": started_ms, "parent": parent,
            }),
            Event::LlmRequested {
                task,
                step,
                fingerprint,
            } => {
                json!({"task": task, "step": step, "fingerprint": format!("{fingerprint:016x}")})
            }
            Event::LlmResponded {
                task,
                step,
                content,
                tool_calls,
                usage,
            } => json!({
                "task": task, "step": step, "content": content, "tool_calls": tool_calls,
                "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            }),
            Event::SkillStarted { task, step, call }
            | Event::SkillInterrupted { task, step, call } => {
                json!({"task": task, "step": step, "call": call})
            }
            Event::SkillFinished {
                task,
                step,
                call,
                ok,
                content,
            } => {
                json!({"task": task, "step": step, "call": call, "ok": ok, "content": content})
            }
            Event::Parked { task } | Event::Unparked { task } | Event::TaskCancelled { task } => {
                json!({"task": task})
            }
            Event::TaskCompleted { task, answer } => json!({"task": task, "answer": answer}),
            Event::TaskFailed { task, error } => json!({"task": task, "error": error}),
            Event::Snapshot { compressed } => json!({"compressed_bytes": compressed.len()}),
            Event::Shutdown => json!({}),
            Event::ProgramStarted {
                task,
                agent,
                program,
                input,
                started_ms,
                parent,
            } => json!({
                "task": task, "agent": agent, "program": program, "input": input,
                "started_ms": started_ms, "parent": parent,
            }),
            Event::Effect {
                task,
                seq,
                call,
                effect,
            } => {
                let mut v = effect.to_json();
                v["task"] = (*task).into();
                v["seq"] = (*seq).into();
                v["call"] = format!("{call:016x}").into();
                v
            }
        };
        v["event"] = self.kind().into();
        v
    }
}

/// One line for `tiffany wal dump`: the kind, then the fields, long texts
/// cut to 100 characters with their length noted.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serde_json::Value::Object(fields) = self.to_json() else {
            return Ok(());
        };
        f.write_str(self.kind())?;
        for (key, value) in fields.iter().filter(|(k, _)| *k != "event") {
            match value {
                serde_json::Value::String(text) if text.chars().count() > 100 => {
                    let cut: String = text.chars().take(100).collect();
                    write!(f, " {key}={:?}... ({} chars)", cut, text.chars().count())?;
                }
                other => write!(f, " {key}={other}")?,
            }
        }
        Ok(())
    }
}

/// FNV-1a over a planner request's conversation and tool names: the
/// fingerprint journaled with [`Event::LlmRequested`], compared by audit
/// replay.
pub fn fingerprint(messages: &[Message], tools: &[String]) -> u64 {
    let mut h = Fnv::default();
    for m in messages {
        h.write(&[m.role as u8]);
        h.write(m.content.as_bytes());
        for c in &m.tool_calls {
            h.write(c.id.as_bytes());
            h.write(c.name.as_bytes());
            h.write(c.arguments.as_bytes());
        }
        if let Some(id) = &m.tool_call_id {
            h.write(id.as_bytes());
        }
        h.write(&[0xff]);
    }
    for t in tools {
        h.write(t.as_bytes());
    }
    h.0
}

/// FNV-1a, 64 bits: cheap, stable across builds and platforms.
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Event> {
        vec![
            Event::AgentCreated(AgentSpec {
                id: 7,
                name: "a".into(),
                namespace: "ns".into(),
                grants: vec!["fs.*".into(), "shell".into()],
                priority: Priority::Background,
                workspace: "/w".into(),
            }),
            Event::TaskStarted {
                task: 1,
                agent: 7,
                system: "sys".into(),
                instruction: "do it".into(),
                started_ms: 1_700_000_000_000,
                parent: Some(3),
            },
            Event::LlmRequested {
                task: 1,
                step: 0,
                fingerprint: u64::MAX,
            },
            Event::LlmResponded {
                task: 1,
                step: 0,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "shell".into(),
                    arguments: "{}".into(),
                }],
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: 3,
                },
            },
            Event::SkillStarted {
                task: 1,
                step: 0,
                call: 0,
            },
            Event::SkillFinished {
                task: 1,
                step: 0,
                call: 0,
                ok: false,
                content: "boom".into(),
            },
            Event::SkillInterrupted {
                task: 1,
                step: 2,
                call: 3,
            },
            Event::Parked { task: 1 },
            Event::Unparked { task: 1 },
            Event::TaskCompleted {
                task: 1,
                answer: "done".into(),
            },
            Event::TaskFailed {
                task: 2,
                error: "budget".into(),
            },
            Event::TaskCancelled { task: 3 },
            Event::Snapshot {
                compressed: vec![1, 2, 3],
            },
            Event::Shutdown,
            Event::ProgramStarted {
                task: 4,
                agent: 7,
                program: "orchestrate".into(),
                input: "42".into(),
                started_ms: 5,
                parent: None,
            },
        ]
        .into_iter()
        .chain(
            effects()
                .into_iter()
                .enumerate()
                .map(|(seq, effect)| Event::Effect {
                    task: 4,
                    seq: seq as u32,
                    call: 0x0123_4567_89ab_cdef,
                    effect,
                }),
        )
        .collect()
    }

    fn effects() -> Vec<Effect> {
        vec![
            Effect::Began(WaitOn::Skill),
            Effect::Began(WaitOn::Join),
            Effect::Answered {
                content: "a".into(),
                tool_calls: vec![],
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                },
            },
            Effect::Ran {
                ok: true,
                content: "out".into(),
            },
            Effect::Interrupted,
            Effect::Timer { until_ms: 99 },
            Effect::Clock { ms: 98 },
            Effect::Spawned(Box::new(Event::TaskStarted {
                task: 5,
                agent: 7,
                system: "s".into(),
                instruction: "i".into(),
                started_ms: 1,
                parent: Some(4),
            })),
            Effect::Joined {
                child: 5,
                status: TaskStatus::Failed,
                outcome: "no".into(),
            },
        ]
    }

    #[test]
    fn every_event_round_trips() {
        for event in samples() {
            assert_eq!(Event::decode(&event.encode()).unwrap(), event);
        }
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_an_error() {
        for event in samples() {
            let bytes = event.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Event::decode(&bytes[..cut]).is_err(),
                    "{event:?} cut at {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Event::decode(&longer).is_err());
        }
    }

    #[test]
    fn events_render_as_json_and_one_line() {
        let e = Event::SkillFinished {
            task: 1,
            step: 2,
            call: 0,
            ok: true,
            content: "x".repeat(150),
        };
        assert_eq!(e.to_json()["event"], "skill_finished");
        assert_eq!(e.to_json()["content"].as_str().unwrap().len(), 150);
        let line = e.to_string();
        assert!(line.starts_with("skill_finished "), "{line}");
        assert!(
            line.contains("... (150 chars)") && line.contains("call=0"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_spawn_holds_only_a_task_start() {
        let mut bytes = Event::Effect {
            task: 1,
            seq: 0,
            call: 0,
            effect: Effect::Spawned(Box::new(Event::Shutdown)),
        }
        .encode();
        assert!(matches!(
            Event::decode(&bytes),
            Err(JournalError::Malformed { .. })
        ));
        bytes.truncate(2);
        assert!(Event::decode(&bytes).is_err());
    }

    #[test]
    fn effects_render_with_their_call() {
        let line = Event::Effect {
            task: 3,
            seq: 2,
            call: 255,
            effect: Effect::Timer { until_ms: 7 },
        }
        .to_string();
        assert!(line.starts_with("effect "), "{line}");
        for part in [
            "task=3",
            "seq=2",
            "call=\"00000000000000ff\"",
            "effect=\"timer\"",
            "until_ms=7",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }

    #[test]
    fn unknown_versions_and_kinds_are_typed() {
        assert_eq!(
            Event::decode(&[9, 1]),
            Err(JournalError::UnsupportedVersion(9))
        );
        assert_eq!(
            Event::decode(&[SCHEMA_VERSION, 200]),
            Err(JournalError::UnknownKind(200))
        );
    }

    #[test]
    fn bit_flips_never_panic() {
        for event in samples() {
            let bytes = event.encode();
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut b = bytes.clone();
                    b[i] ^= 1 << bit;
                    let _ = Event::decode(&b);
                }
            }
        }
    }
}
