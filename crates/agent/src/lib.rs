//! Tiffany's durable agents: a [`Node`] hosts agents whose tasks run ReAct
//! loops on the cooperative scheduler, journaled to the write-ahead log so
//! that a node killed at any instant resumes every task at its next step.
//!
//! # Overview
//! - [`Node::open`] opens the journal under a data directory, rebuilds the
//!   [`Table`] of agents and tasks (from the newest snapshot, then every
//!   later event) and continues every unfinished task (the `resume`
//!   recovery mode). [`inspect`] does the same read-only and runs nothing;
//!   [`audit`] (the `replay` mode) re-asks a planner every journaled step
//!   and reports where it diverges from the journal.
//! - [`Node::create_agent`] and [`Node::submit`] add agents and tasks. A
//!   task is a ReAct loop: ask the planner ([`tiffany_llm::LlmProvider`]),
//!   run its tool calls as skills ([`tiffany_skills::Registry`]) in
//!   parallel, journal the results, repeat until a final answer or a
//!   [`Budgets`] limit.
//! - Every effect of a task goes through its [`Ctx`]. A ReAct task's planner
//!   and skill calls are keyed by step; a *program* task (a registered
//!   async function, see [`Programs`] and [`Node::submit_program`]) calls
//!   [`Ctx::llm`], [`Ctx::skill`], [`Ctx::sleep`], [`Ctx::now`],
//!   [`Ctx::spawn`] and [`Ctx::join`], each journaled under its number, and
//!   is re-run from its start after a restart with every journaled call
//!   answered from the journal.
//! - Every step is an [`Event`] in the journal; the conversation is
//!   journaled as deltas (an instruction, then each answer and each result
//!   once), so the journal grows linearly with steps.
//! - [`Pal`] is the live activity stream; [`NodeStats`] the counters.
//!
//! # Guarantees
//! - A planner answer or skill result that reached the journal is never
//!   asked for again after a restart.
//! - With [`tiffany_wal::SyncMode::Data`] (the default), a skill runs only
//!   after its start is durable. A non-idempotent skill found started but
//!   unfinished after a crash is not re-run: the planner sees an error
//!   observation for it, PAL reports `SkillInterrupted`, and the task state
//!   counts it ([`TaskState::interrupted`]). An idempotent one runs again.
//! - Snapshots every [`NodeConfig::snapshot_every_records`] or
//!   [`NodeConfig::snapshot_every_bytes`] bound replay at
//!   boot.

mod audit;
mod codec;
mod ctx;
mod journal;
mod node;
mod pal;
mod react;
mod state;
mod stats;

pub use audit::{Audit, Divergence, audit};
pub use ctx::{
    ChildOutcome, Ctx, CtxError, DELEGATE, MAX_DELEGATION_DEPTH, ProgramFuture, Programs,
};
pub use journal::{
    AgentSpec, Effect, Event, JournalError, NODE_STREAM, Priority, SCHEMA_VERSION, fingerprint,
};
pub use node::{AgentOptions, Budgets, Node, NodeConfig, NodeError, NodeStats, Recovery, inspect};
pub use pal::{Activity, ActivityKind, Filter, Pal, Received, Subscription, write_json_lines};
pub use state::{
    EffectRecord, Next, Table, TaskState, TaskStatus, WaitOn, interrupted_observation,
};
