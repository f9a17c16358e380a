//! The node's state as the journal defines it: agents and tasks, rebuilt by
//! applying events in LSN order.
//!
//! # Invariants
//! - [`Table::apply`] is the only way state changes, live or in recovery, so
//!   a recovered table equals the live one at the same LSN. The node holds
//!   the table lock while it appends an event and applies it, so LSN order
//!   and apply order are the same.
//! - A task's conversation is its system prompt, its instruction, then for
//!   each step the assistant message followed by the tool results in the
//!   order they finished. [`TaskState::next`] derives what to do next from
//!   it, which is how a recovered task continues at its next step.
//! - A snapshot keeps the full state of unfinished tasks and a summary of
//!   finished ones (their conversation is dropped: it can never be needed
//!   to run them again).
//!
//! # Snapshot encoding (version 2)
//! A snapshot is the version byte, a varint count of chunks, then each
//! chunk as a varint of its encoded length, a varint of its compressed
//! length and that many bytes of one LZ4 block. The first chunk holds the
//! agents (a count, then each as its `agent_created` event); every later
//! chunk holds a count of tasks and then the tasks, in id order, about
//! 256 KiB of them per chunk. Chunks decode independently, so a
//! boot decodes them on every core, each thread reusing one buffer for the
//! decompressed bytes. Decoding is total: a damaged or foreign snapshot is
//! a [`JournalError`], never a panic, and no count or length is trusted
//! before it is checked against the bytes that must hold it.

use std::collections::BTreeMap;

use tiffany_llm::{Message, Role, ToolCall, Usage};

use crate::codec::{Decoder, Encoder};
use crate::journal::{AgentSpec, Effect, Event, JournalError};

/// What a waiting task waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOn {
    /// The planner.
    Llm,
    /// One or more skills.
    Skill,
    /// A timer.
    Timer,
    /// Another task.
    Join,
}

/// A task's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// Ready to run (also: recovered and about to continue).
    Ready,
    /// Being polled or between steps.
    Running,
    /// Waiting on something outside.
    Waiting(WaitOn),
    /// Parked by overload control.
    Parked,
    /// Concluded with a final answer.
    Completed,
    /// Failed (budget, planner error, ...).
    Failed,
    /// Cancelled.
    Cancelled,
}

impl TaskStatus {
    /// The lowercase name used by the CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ready => "ready",
            TaskStatus::Running => "running",
            TaskStatus::Waiting(_) => "waiting",
            TaskStatus::Parked => "parked",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// What a waiting task waits on, lowercase.
    pub fn waiting_on(self) -> Option<&'static str> {
        match self {
            TaskStatus::Waiting(WaitOn::Llm) => Some("llm"),
            TaskStatus::Waiting(WaitOn::Skill) => Some("skill"),
            TaskStatus::Waiting(WaitOn::Timer) => Some("timer"),
            TaskStatus::Waiting(WaitOn::Join) => Some("join"),
            _ => None,
        }
    }

    /// Completed, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            TaskStatus::Ready => 0,
            TaskStatus::Running => 1,
            TaskStatus::Waiting(WaitOn::Llm) => 2,
            TaskStatus::Waiting(WaitOn::Skill) => 3,
            TaskStatus::Waiting(WaitOn::Timer) => 4,
            TaskStatus::Waiting(WaitOn::Join) => 5,
            TaskStatus::Parked => 6,
            TaskStatus::Completed => 7,
            TaskStatus::Failed => 8,
            TaskStatus::Cancelled => 9,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<TaskStatus> {
        Some(match code {
            0 => TaskStatus::Ready,
            1 => TaskStatus::Running,
            2 => TaskStatus::Waiting(WaitOn::Llm),
            3 => TaskStatus::Waiting(WaitOn::Skill),
            4 => TaskStatus::Waiting(WaitOn::Timer),
            5 => TaskStatus::Waiting(WaitOn::Join),
            6 => TaskStatus::Parked,
            7 => TaskStatus::Completed,
            8 => TaskStatus::Failed,
            9 => TaskStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One task as the journal knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskState {
    /// Task id.
    pub id: u64,
    /// Owning agent.
    pub agent: u64,
    /// Spawning task, if any.
    pub parent: Option<u64>,
    /// The instruction.
    pub instruction: String,
    /// Wall-clock start (ms since the Unix epoch).
    pub started_ms: u64,
    /// Current status.
    pub status: TaskStatus,
    /// Planner answers so far.
    pub steps: u32,
    /// Tokens used so far.
    pub usage: Usage,
    /// The conversation (dropped for finished tasks restored from a
    /// snapshot).
    pub conversation: Vec<Message>,
    /// Calls of the current step that started and have not finished.
    pub in_flight: Vec<u32>,
    /// The final answer or the failure.
    pub outcome: Option<String>,
    /// Non-idempotent skills that were in flight at a crash and were
    /// reported instead of re-run.
    pub interrupted: u32,
    /// The registered program a program task runs (`None`: a ReAct task).
    pub program: Option<String>,
    /// A program task's journaled [`crate::Ctx`] calls, by number: what a
    /// re-run of the program gets back instead of calling again (dropped
    /// for finished tasks restored from a snapshot).
    pub effects: Vec<EffectRecord>,
}

/// One journaled [`crate::Ctx`] call of a program task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectRecord {
    /// The fingerprint of what was asked.
    pub call: u64,
    /// The latest record of it: began, then its result.
    pub effect: Effect,
}

/// What a task does next, derived from its conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask the planner (step `step`).
    Plan {
        /// The step about to be planned.
        step: u32,
    },
    /// Run the calls of the current step that have no result yet.
    Execute {
        /// The current step.
        step: u32,
        /// (index, call, whether it was started before).
        calls: Vec<(u32, ToolCall, bool)>,
    },
    /// The planner gave a final answer: conclude with it.
    Conclude(String),
    /// Run the task's program (from its start: journaled calls return
    /// their recorded results).
    Program,
    /// Nothing: the task is finished.
    Finished,
}

impl TaskState {
    /// A task that has just started: ready, nothing journaled yet.
    fn new(id: u64, agent: u64, parent: Option<u64>, instruction: &str, started_ms: u64) -> Self {
        TaskState {
            id,
            agent,
            parent,
            instruction: instruction.to_owned(),
            started_ms,
            status: TaskStatus::Ready,
            steps: 0,
            usage: Usage::default(),
            conversation: Vec::new(),
            in_flight: Vec::new(),
            outcome: None,
            interrupted: 0,
            program: None,
            effects: Vec::new(),
        }
    }

    /// What the task does next.
    pub fn next(&self) -> Next {
        if self.status.is_terminal() {
            return Next::Finished;
        }
        if self.program.is_some() {
            return Next::Program;
        }
        let Some(pos) = self
            .conversation
            .iter()
            .rposition(|m| m.role == Role::Assistant)
        else {
            return Next::Plan { step: self.steps };
        };
        let last = &self.conversation[pos];
        if last.tool_calls.is_empty() {
            return Next::Conclude(last.content.clone());
        }
        let answered: Vec<&str> = self.conversation[pos + 1..]
            .iter()
            .filter_map(|m| m.tool_call_id.as_deref())
            .collect();
        let calls: Vec<_> = last
            .tool_calls
            .iter()
            .enumerate()
            .filter(|(_, c)| !answered.contains(&c.id.as_str()))
            .map(|(i, c)| {
                let i = i as u32;
                (i, c.clone(), self.in_flight.contains(&i))
            })
            .collect();
        let step = self.steps.saturating_sub(1);
        if calls.is_empty() {
            Next::Plan { step: self.steps }
        } else {
            Next::Execute { step, calls }
        }
    }
}

/// The node's agents and tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Agents by id.
    pub agents: BTreeMap<u64, AgentSpec>,
    /// Tasks by id.
    pub tasks: BTreeMap<u64, TaskState>,
    /// Whether the last event applied was a clean shutdown.
    pub clean_shutdown: bool,
    /// Unfinished tasks per agent, kept by `apply` (so that a task's end
    /// costs no scan of the table).
    unfinished: BTreeMap<u64, usize>,
    /// Their sum.
    unfinished_total: usize,
}

impl Table {
    /// The next free agent id (ids start at 1: stream 0 is the node's).
    pub fn next_agent_id(&self) -> u64 {
        self.agents.keys().next_back().map_or(1, |id| id + 1)
    }

    /// The next free task id.
    pub fn next_task_id(&self) -> u64 {
        self.tasks.keys().next_back().map_or(1, |id| id + 1)
    }

    /// Unfinished tasks of the node.
    pub fn unfinished(&self) -> usize {
        self.unfinished_total
    }

    /// Tokens `agent`'s tasks used, all tasks the table knows (a scan).
    pub fn usage_of(&self, agent: u64) -> Usage {
        self.tasks
            .values()
            .filter(|t| t.agent == agent)
            .fold(Usage::default(), |sum, t| Usage {
                prompt_tokens: sum.prompt_tokens + t.usage.prompt_tokens,
                completion_tokens: sum.completion_tokens + t.usage.completion_tokens,
            })
    }

    /// Unfinished tasks of `agent`.
    pub fn unfinished_of(&self, agent: u64) -> usize {
        self.unfinished.get(&agent).copied().unwrap_or(0)
    }

    fn count_unfinished(&mut self, agent: u64, delta: isize) {
        let count = self.unfinished.entry(agent).or_default();
        *count = count.saturating_add_signed(delta);
        self.unfinished_total = self.unfinished_total.saturating_add_signed(delta);
    }

    /// Recomputes the unfinished counts from the tasks.
    fn recount(&mut self) {
        self.unfinished.clear();
        self.unfinished_total = 0;
        let agents: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| !t.status.is_terminal())
            .map(|t| t.agent)
            .collect();
        for agent in agents {
            self.count_unfinished(agent, 1);
        }
    }

    /// Applies one event. Events for unknown tasks are ignored (they cannot
    /// be produced by a node, and recovery reports the count).
    pub fn apply(&mut self, event: &Event) -> Result<(), JournalError> {
        self.clean_shutdown = false;
        match event {
            Event::AgentCreated(spec) => {
                self.agents.insert(spec.id, spec.clone());
            }
            Event::TaskStarted {
                task,
                agent,
                system,
                instruction,
                started_ms,
                parent,
            } => {
                let mut state = TaskState::new(*task, *agent, *parent, instruction, *started_ms);
                state.conversation = vec![
                    Message::system(system.clone()),
                    Message::user(instruction.clone()),
                ];
                self.insert_task(state);
            }
            Event::ProgramStarted {
                task,
                agent,
                program,
                input,
                started_ms,
                parent,
            } => {
                let mut state = TaskState::new(*task, *agent, *parent, input, *started_ms);
                state.program = Some(program.clone());
                self.insert_task(state);
            }
            Event::Effect {
                effect: Effect::Spawned(child),
                ..
            } => {
                self.apply(child)?;
                self.apply_task_event(event);
            }
            Event::Snapshot { compressed } => {
                self.merge_snapshot(Table::from_snapshot(compressed)?)
            }
            Event::Shutdown => self.clean_shutdown = true,
            other => self.apply_task_event(other),
        }
        Ok(())
    }

    fn insert_task(&mut self, state: TaskState) {
        self.count_unfinished(state.agent, 1);
        self.tasks.insert(state.id, state);
    }

    fn apply_task_event(&mut self, event: &Event) {
        let Some(id) = event.task() else {
            return;
        };
        if let Some(task) = self.tasks.get_mut(&id) {
            let was_finished = task.status.is_terminal();
            apply_to_task(task, event);
            if !was_finished && task.status.is_terminal() {
                let agent = task.agent;
                self.count_unfinished(agent, -1);
            }
        }
    }

    /// Takes a snapshot's state. A snapshot holds every agent and task of
    /// its time, so it replaces the table; but when the table was built
    /// from earlier events too (a full replay for `inspect`), a finished
    /// task keeps the conversation (or program calls) the snapshot
    /// compacted away.
    fn merge_snapshot(&mut self, snapshot: Table) {
        let mut earlier = std::mem::replace(self, snapshot);
        for (id, task) in &mut self.tasks {
            if let Some(old) = earlier.tasks.remove(id) {
                if task.status.is_terminal() {
                    if task.conversation.is_empty() {
                        task.conversation = old.conversation;
                    }
                    if task.effects.is_empty() {
                        task.effects = old.effects;
                    }
                }
            }
        }
        self.recount();
    }

    /// Encodes the table as a compressed snapshot (see the module docs).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut agents = Encoder::default();
        agents.varint(self.agents.len() as u64);
        for spec in self.agents.values() {
            Event::AgentCreated(spec.clone()).encode_into(&mut agents);
        }
        let mut chunks = vec![agents.buf];
        let mut tasks = Encoder::default();
        let mut count = 0u64;
        for t in self.tasks.values() {
            encode_task(&mut tasks, t);
            count += 1;
            if tasks.buf.len() >= CHUNK_BYTES {
                chunks.push(counted(count, &tasks.buf));
                tasks.buf.clear();
                count = 0;
            }
        }
        if count > 0 {
            chunks.push(counted(count, &tasks.buf));
        }
        let mut e = Encoder::default();
        e.u8(SNAPSHOT_VERSION);
        e.varint(chunks.len() as u64);
        for raw in &chunks {
            e.varint(raw.len() as u64);
            e.bytes(&lz4_flex::block::compress(raw));
        }
        e.buf
    }

    /// Decodes a snapshot written by [`Table::snapshot`].
    pub fn from_snapshot(snapshot: &[u8]) -> Result<Table, JournalError> {
        let mut d = Decoder::new(snapshot);
        let version = d.u8()?;
        if version != SNAPSHOT_VERSION {
            return Err(JournalError::Malformed {
                offset: 0,
                what: "a snapshot of a supported version",
            });
        }
        let mut chunks = Vec::with_capacity(d.count()?);
        for _ in 0..chunks.capacity() {
            let raw_len = d.varint()?;
            let compressed = d.bytes()?;
            // An LZ4 block expands at most 255 times (plus its last literals).
            if raw_len > compressed.len() as u64 * 255 + 16 {
                return Err(d.malformed("a chunk length within LZ4's expansion"));
            }
            chunks.push(Chunk {
                raw_len: raw_len as usize,
                compressed,
            });
        }
        let Some((agents, task_chunks)) = chunks.split_first() else {
            return Err(d.malformed("the agents' chunk"));
        };
        d.finish()?;
        let mut buf = Vec::new();
        let mut table = Table {
            agents: decode_agents(agents.decompress(&mut buf)?)?,
            ..Table::default()
        };
        table.tasks = decode_task_chunks(task_chunks, buf)?
            .into_iter()
            .flatten()
            .map(|t| (t.id, t))
            .collect();
        table.recount();
        Ok(table)
    }
}

/// The version byte a snapshot starts with. Version 1 was one LZ4 block
/// of everything behind its length; it is not read any more.
const SNAPSHOT_VERSION: u8 = 2;

/// Encoded task bytes per snapshot chunk: a chunk ends with the first task
/// that takes it past this.
const CHUNK_BYTES: usize = 256 << 10;

/// A chunk's task count followed by its tasks.
fn counted(count: u64, tasks: &[u8]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.varint(count);
    e.buf.extend_from_slice(tasks);
    e.buf
}

/// One chunk of a snapshot, still compressed.
struct Chunk<'a> {
    raw_len: usize,
    compressed: &'a [u8],
}

impl Chunk<'_> {
    /// The chunk's bytes, decompressed into `buf` (reused across chunks).
    fn decompress<'b>(&self, buf: &'b mut Vec<u8>) -> Result<&'b [u8], JournalError> {
        buf.resize(self.raw_len, 0);
        match lz4_flex::block::decompress_into(self.compressed, buf) {
            Ok(n) if n == self.raw_len => Ok(buf.as_slice()),
            _ => Err(JournalError::Malformed {
                offset: 0,
                what: "an LZ4 snapshot chunk of its stated length",
            }),
        }
    }
}

fn decode_agents(raw: &[u8]) -> Result<BTreeMap<u64, AgentSpec>, JournalError> {
    let mut d = Decoder::new(raw);
    let mut agents = BTreeMap::new();
    for _ in 0..d.count()? {
        match Event::decode_from(&mut d)? {
            Event::AgentCreated(spec) => {
                agents.insert(spec.id, spec);
            }
            _ => return Err(d.malformed("an agent in the snapshot")),
        }
    }
    d.finish()?;
    Ok(agents)
}

/// Decodes the task chunks, in order: on as many threads as there are
/// cores (and chunks), each taking a run of consecutive chunks. `buf` is
/// this thread's buffer for decompressed bytes.
fn decode_task_chunks(
    chunks: &[Chunk<'_>],
    mut buf: Vec<u8>,
) -> Result<Vec<Vec<TaskState>>, JournalError> {
    let decode_run = |run: &[Chunk<'_>], buf: &mut Vec<u8>| {
        run.iter()
            .map(|chunk| decode_tasks(chunk.decompress(buf)?))
            .collect::<Result<Vec<_>, _>>()
    };
    let threads = match chunks.len() {
        0 | 1 => 1,
        n => std::thread::available_parallelism().map_or(1, |p| p.get().min(n)),
    };
    if threads == 1 {
        return decode_run(chunks, &mut buf);
    }
    let per_thread = chunks.len().div_ceil(threads);
    let mut runs = chunks.chunks(per_thread);
    let mine = runs.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = runs
            .map(|run| scope.spawn(move || decode_run(run, &mut Vec::new())))
            .collect();
        let mut decoded = decode_run(mine, &mut buf)?;
        for other in others {
            let tasks = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            decoded.extend(tasks);
        }
        Ok(decoded)
    })
}

fn decode_tasks(raw: &[u8]) -> Result<Vec<TaskState>, JournalError> {
    let mut d = Decoder::new(raw);
    let count = d.count_of(MIN_TASK_BYTES)?;
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        tasks.push(decode_task(&mut d)?);
    }
    d.finish()?;
    Ok(tasks)
}

/// The fewest bytes an encoded task takes (every field at its shortest).
const MIN_TASK_BYTES: usize = 14;

fn encode_task(e: &mut Encoder, t: &TaskState) {
    e.varint(t.id);
    e.varint(t.agent);
    e.opt_varint(t.parent);
    e.str(&t.instruction);
    e.varint(t.started_ms);
    e.u8(t.status.code());
    e.varint(u64::from(t.steps));
    e.varint(t.usage.prompt_tokens);
    e.varint(t.usage.completion_tokens);
    e.str(t.outcome.as_deref().unwrap_or(""));
    e.varint(u64::from(t.interrupted));
    let keep = !t.status.is_terminal();
    let conversation: &[Message] = if keep { &t.conversation } else { &[] };
    e.varint(conversation.len() as u64);
    for m in conversation {
        encode_message(e, m);
    }
    e.varint(t.in_flight.len() as u64);
    for c in &t.in_flight {
        e.varint(u64::from(*c));
    }
    e.str(t.program.as_deref().unwrap_or(""));
    let effects: &[EffectRecord] = if keep { &t.effects } else { &[] };
    e.varint(effects.len() as u64);
    for record in effects {
        e.u64_fixed(record.call);
        record.effect.encode_into(e);
    }
}

fn decode_task(d: &mut Decoder<'_>) -> Result<TaskState, JournalError> {
    let id = d.varint()?;
    let agent = d.varint()?;
    let parent = d.opt_varint()?;
    let instruction = d.string()?;
    let started_ms = d.varint()?;
    let status = TaskStatus::from_code(d.u8()?).ok_or_else(|| d.malformed("a task status code"))?;
    let steps = d.u32()?;
    let usage = Usage {
        prompt_tokens: d.varint()?,
        completion_tokens: d.varint()?,
    };
    let outcome = Some(d.string()?).filter(|_| status.is_terminal());
    let interrupted = d.u32()?;
    let messages = d.count_of(MIN_MESSAGE_BYTES)?;
    let mut conversation = Vec::with_capacity(messages);
    for _ in 0..messages {
        conversation.push(decode_message(d)?);
    }
    let in_flight = (0..d.count()?).map(|_| d.u32()).collect::<Result<_, _>>()?;
    let program = Some(d.string()?).filter(|name| !name.is_empty());
    let effects = (0..d.count()?)
        .map(|_| {
            Ok(EffectRecord {
                call: d.u64_fixed()?,
                effect: Effect::decode_from(d)?,
            })
        })
        .collect::<Result<_, JournalError>>()?;
    Ok(TaskState {
        id,
        agent,
        parent,
        instruction,
        started_ms,
        status,
        steps,
        usage,
        conversation,
        in_flight,
        outcome,
        interrupted,
        program,
        effects,
    })
}

fn apply_to_task(task: &mut TaskState, event: &Event) {
    match event {
        Event::LlmRequested { .. } => progress(task, TaskStatus::Waiting(WaitOn::Llm)),
        Event::LlmResponded {
            content,
            tool_calls,
            usage,
            ..
        } => {
            task.conversation
                .push(Event::assistant_message(content, tool_calls));
            task.steps += 1;
            task.usage.prompt_tokens += usage.prompt_tokens;
            task.usage.completion_tokens += usage.completion_tokens;
            task.in_flight.clear();
            progress(task, TaskStatus::Running);
        }
        Event::SkillStarted { call, .. } => {
            task.in_flight.push(*call);
            progress(task, TaskStatus::Waiting(WaitOn::Skill));
        }
        Event::SkillFinished { call, content, .. } => record_result(task, *call, content.clone()),
        Event::SkillInterrupted { call, .. } => {
            let name = current_call(task, *call)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            record_result(task, *call, interrupted_observation(&name));
            task.interrupted += 1;
        }
        Event::Parked { .. } => task.status = TaskStatus::Parked,
        Event::Unparked { .. } => task.status = TaskStatus::Ready,
        Event::TaskCompleted { answer, .. } => finish(task, TaskStatus::Completed, answer),
        Event::TaskFailed { error, .. } => finish(task, TaskStatus::Failed, error),
        Event::TaskCancelled { .. } => finish(task, TaskStatus::Cancelled, "cancelled"),
        Event::Effect {
            seq, call, effect, ..
        } => record_effect(task, *seq, *call, effect),
        Event::AgentCreated(_)
        | Event::TaskStarted { .. }
        | Event::ProgramStarted { .. }
        | Event::Snapshot { .. }
        | Event::Shutdown => {}
    }
}

/// Records a program's call `seq`: a new call, or the result of the one
/// that began. A record out of order cannot come from a node and is
/// ignored.
fn record_effect(task: &mut TaskState, seq: u32, call: u64, effect: &Effect) {
    if task.status.is_terminal() {
        return;
    }
    let record = EffectRecord {
        call,
        effect: effect.clone(),
    };
    match (seq as usize).cmp(&task.effects.len()) {
        std::cmp::Ordering::Less => task.effects[seq as usize] = record,
        std::cmp::Ordering::Equal => task.effects.push(record),
        std::cmp::Ordering::Greater => return,
    }
    match effect {
        Effect::Began(on) => progress(task, TaskStatus::Waiting(*on)),
        Effect::Timer { .. } => progress(task, TaskStatus::Waiting(WaitOn::Timer)),
        Effect::Answered { usage, .. } => {
            task.steps += 1;
            task.usage.prompt_tokens += usage.prompt_tokens;
            task.usage.completion_tokens += usage.completion_tokens;
            progress(task, TaskStatus::Running);
        }
        Effect::Interrupted => {
            task.interrupted += 1;
            progress(task, TaskStatus::Running);
        }
        Effect::Ran { .. } | Effect::Clock { .. } | Effect::Spawned(_) | Effect::Joined { .. } => {
            progress(task, TaskStatus::Running)
        }
    }
}

/// The observation the planner gets for a non-idempotent skill that was in
/// flight when the node stopped.
pub fn interrupted_observation(skill: &str) -> String {
    format!(
        "error: the node stopped while `{skill}` was running; it is not idempotent, so it was \
         not run again and its effects are unknown"
    )
}

/// The call `index` of the task's current step.
fn current_call(task: &TaskState, index: u32) -> Option<&ToolCall> {
    let last = task
        .conversation
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)?;
    last.tool_calls.get(index as usize)
}

fn record_result(task: &mut TaskState, call: u32, content: String) {
    let id = current_call(task, call)
        .map(|c| c.id.clone())
        .unwrap_or_default();
    task.conversation.push(Message::tool_result(id, content));
    task.in_flight.retain(|c| *c != call);
    if task.in_flight.is_empty() {
        progress(task, TaskStatus::Running);
    }
}

/// A step's status change; a parked task stays parked (what it had in
/// flight when parked may still finish) until it is unparked.
fn progress(task: &mut TaskState, status: TaskStatus) {
    if task.status != TaskStatus::Parked {
        task.status = status;
    }
}

fn finish(task: &mut TaskState, status: TaskStatus, outcome: &str) {
    task.status = status;
    task.outcome = Some(outcome.to_owned());
    task.in_flight.clear();
}

fn encode_message(e: &mut Encoder, m: &Message) {
    e.u8(match m.role {
        Role::System => 0,
        Role::User => 1,
        Role::Assistant => 2,
        Role::Tool => 3,
    });
    e.str(&m.content);
    e.tool_calls(&m.tool_calls);
    e.str(m.tool_call_id.as_deref().unwrap_or(""));
}

/// The fewest bytes an encoded message takes.
const MIN_MESSAGE_BYTES: usize = 4;

fn decode_message(d: &mut Decoder<'_>) -> Result<Message, JournalError> {
    let role = match d.u8()? {
        0 => Role::System,
        1 => Role::User,
        2 => Role::Assistant,
        3 => Role::Tool,
        _ => {
            return Err(d.malformed("a message role"));
        }
    };
    let content = d.string()?;
    let tool_calls = d.tool_calls()?;
    let tool_call_id = Some(d.string()?).filter(|id| role == Role::Tool || !id.is_empty());
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "noop".into(),
            arguments: "{}".into(),
        }
    }

    fn started(table: &mut Table) {
        table
            .apply(&Event::TaskStarted {
                task: 1,
                agent: 1,
                system: "s".into(),
                instruction: "i".into(),
                started_ms: 0,
                parent: None,
            })
            .unwrap();
    }

    #[test]
    fn next_follows_the_conversation() {
        let mut t = Table::default();
        started(&mut t);
        assert_eq!(t.tasks[&1].next(), Next::Plan { step: 0 });
        t.apply(&Event::LlmResponded {
            task: 1,
            step: 0,
            content: String::new(),
            tool_calls: vec![call("a"), call("b")],
            usage: Usage::default(),
        })
        .unwrap();
        t.apply(&Event::SkillStarted {
            task: 1,
            step: 0,
            call: 1,
        })
        .unwrap();
        let Next::Execute { step: 0, calls } = t.tasks[&1].next() else {
            panic!()
        };
        assert_eq!(
            calls.iter().map(|(i, _, s)| (*i, *s)).collect::<Vec<_>>(),
            [(0, false), (1, true)]
        );
        t.apply(&Event::SkillFinished {
            task: 1,
            step: 0,
            call: 1,
            ok: true,
            content: "x".into(),
        })
        .unwrap();
        t.apply(&Event::SkillFinished {
            task: 1,
            step: 0,
            call: 0,
            ok: true,
            content: "y".into(),
        })
        .unwrap();
        assert_eq!(t.tasks[&1].next(), Next::Plan { step: 1 });
        t.apply(&Event::LlmResponded {
            task: 1,
            step: 1,
            content: "done".into(),
            tool_calls: vec![],
            usage: Usage::default(),
        })
        .unwrap();
        assert_eq!(t.tasks[&1].next(), Next::Conclude("done".into()));
        t.apply(&Event::TaskCompleted {
            task: 1,
            answer: "done".into(),
        })
        .unwrap();
        assert_eq!(t.tasks[&1].next(), Next::Finished);
    }

    #[test]
    fn snapshots_round_trip_and_compact_finished_tasks() {
        let mut t = Table::default();
        started(&mut t);
        t.apply(&Event::TaskStarted {
            task: 2,
            agent: 1,
            system: "s".into(),
            instruction: "j".into(),
            started_ms: 5,
            parent: Some(1),
        })
        .unwrap();
        t.apply(&Event::TaskFailed {
            task: 2,
            error: "e".into(),
        })
        .unwrap();
        t.apply(&Event::ProgramStarted {
            task: 3,
            agent: 1,
            program: "p".into(),
            input: "in".into(),
            started_ms: 6,
            parent: None,
        })
        .unwrap();
        t.apply(&Event::Effect {
            task: 3,
            seq: 0,
            call: 9,
            effect: Effect::Timer { until_ms: 10 },
        })
        .unwrap();
        assert_eq!(t.tasks[&3].status, TaskStatus::Waiting(WaitOn::Timer));
        assert_eq!(t.tasks[&3].next(), Next::Program);
        let back = Table::from_snapshot(&t.snapshot()).unwrap();
        assert_eq!(back.tasks[&1], t.tasks[&1]);
        assert_eq!(back.tasks[&3], t.tasks[&3]);
        assert_eq!(back.unfinished(), 2);
        assert!(back.tasks[&2].conversation.is_empty());
        assert_eq!(back.tasks[&2].outcome.as_deref(), Some("e"));
        assert!(Table::from_snapshot(&[1, 2, 3]).is_err());
    }

    /// Agents and tasks enough for several chunks of tasks, each task with
    /// a step of two calls and one result.
    fn big_table(tasks: u64) -> Table {
        let mut t = Table::default();
        for agent in 1..=3 {
            t.apply(&Event::AgentCreated(AgentSpec {
                id: agent,
                name: format!("a{agent}"),
                namespace: "ns".into(),
                grants: vec!["*".into()],
                priority: crate::journal::Priority::Normal,
                workspace: "/w".into(),
            }))
            .unwrap();
        }
        for task in 1..=tasks {
            t.apply(&Event::TaskStarted {
                task,
                agent: task % 3 + 1,
                system: "s".repeat(100),
                instruction: format!("task {task}"),
                started_ms: task,
                parent: None,
            })
            .unwrap();
            t.apply(&Event::LlmResponded {
                task,
                step: 0,
                content: String::new(),
                tool_calls: vec![call("a"), call("b")],
                usage: Usage::default(),
            })
            .unwrap();
            t.apply(&Event::SkillFinished {
                task,
                step: 0,
                call: 1,
                ok: true,
                content: format!("result {task}"),
            })
            .unwrap();
        }
        t
    }

    #[test]
    fn snapshots_of_many_chunks_round_trip() {
        let t = big_table(4_000);
        let snapshot = t.snapshot();
        let mut d = Decoder::new(&snapshot);
        assert_eq!(d.u8().unwrap(), SNAPSHOT_VERSION);
        assert!(
            d.varint().unwrap() > 3,
            "an agents' chunk and several of tasks"
        );
        let back = Table::from_snapshot(&snapshot).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.unfinished(), 4_000);
        assert_eq!(back.tasks[&7].conversation.len(), 4);
        assert_eq!(back.tasks[&7].conversation[2].tool_calls.capacity(), 2);
    }

    #[test]
    fn damaged_snapshots_are_errors_never_panics() {
        let snapshot = big_table(3).snapshot();
        for cut in 0..snapshot.len() {
            assert!(
                Table::from_snapshot(&snapshot[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = snapshot.clone();
        longer.push(0);
        assert!(Table::from_snapshot(&longer).is_err());
        for i in 0..snapshot.len() {
            for bit in 0..8 {
                let mut b = snapshot.clone();
                b[i] ^= 1 << bit;
                let _ = Table::from_snapshot(&b);
            }
        }
        let mut old_version = snapshot;
        old_version[0] = 1;
        assert!(Table::from_snapshot(&old_version).is_err());
    }
}
