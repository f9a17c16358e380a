//! The node: one scheduler, one journal, the skills and the planner, and
//! every agent and task they run.
//!
//! # Invariants
//! - Every state change is an [`Event`] appended to the WAL and applied to
//!   the [`Table`] under the table lock, in that order, so the table is
//!   always what replaying the journal up to `wal.last_lsn()` gives.
//! - A snapshot is encoded and appended under the same lock, then the WAL
//!   is checkpointed just before it: recovery reads the snapshot and applies
//!   only what follows.
//! - With [`SyncMode::Data`], a task waits for durability before it runs a
//!   skill (so a skill that ran is always known to have started) and before
//!   it reports completion or failure. Other events ride along with the
//!   next sync: losing them in a crash only repeats work that was never
//!   acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tiffany_llm::{LlmProvider, ToolSpec};
use tiffany_sched::{Group, GroupConfig, Handle, JoinHandle, Runtime};
use tiffany_skills::{Grants, Registry};
use tiffany_wal::{Lsn, SyncMode, Wal, WalConfig};

use crate::ctx::Programs;
use crate::journal::{AgentSpec, Event, JournalError, NODE_STREAM, Priority};
use crate::pal::{Activity, ActivityKind, Pal};
use crate::state::{Table, TaskState, TaskStatus};
use crate::stats::CycleStats;

/// Limits on one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Planner answers per task (default 32).
    pub max_steps: u32,
    /// Prompt plus completion tokens per task (default 1,000,000).
    pub max_tokens: u64,
    /// Wall time from the task's start, across restarts (default 1 hour).
    pub max_wall: Duration,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            max_steps: 32,
            max_tokens: 1_000_000,
            max_wall: Duration::from_secs(3600),
        }
    }
}

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the journal (`wal/`) and the agents' workspaces
    /// (`workspaces/<agent>/`) live.
    pub data_dir: PathBuf,
    /// Scheduler worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Durability of journal events (default [`SyncMode::Data`]: a step is
    /// journaled with an `fdatasync` before its skill runs).
    pub sync: SyncMode,
    /// The WAL's own settings.
    pub wal: WalConfig,
    /// Per-task limits.
    pub budgets: Budgets,
    /// Longest a skill call may take (default 60 s).
    pub skill_timeout: Duration,
    /// Journal bytes between snapshots (default 32 MiB): bounds replay at
    /// boot.
    pub snapshot_every_bytes: u64,
    /// Journal records between snapshots (default 100,000): bounds replay
    /// at boot when records are small (most are a few bytes).
    pub snapshot_every_records: u64,
    /// Most tasks running their loops at once (default: no limit). The
    /// rest wait, `ready`, in submission order. Tasks that mostly wait on a
    /// remote LLM are cheap to keep active; tasks whose skills start
    /// processes only lengthen every cycle past a few per core.
    pub max_active_tasks: Option<usize>,
    /// Events the activity bus keeps for slow subscribers (default 4,096).
    pub pal_capacity: usize,
    /// The system prompt every task starts with.
    pub system_prompt: String,
}

impl NodeConfig {
    /// Defaults, with the data under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            workers: None,
            sync: SyncMode::Data,
            wal: WalConfig::default(),
            budgets: Budgets::default(),
            skill_timeout: Duration::from_secs(60),
            snapshot_every_bytes: 32 << 20,
            snapshot_every_records: 100_000,
            max_active_tasks: None,
            pal_capacity: 4096,
            system_prompt:
                "You are an agent of a Tiffany node. Use the tools you are given to carry out \
                            the instruction, then answer with a short summary."
                    .to_owned(),
        }
    }

    /// The journal's directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// The directory of an agent's workspace.
    pub fn workspace_of(&self, agent: &str) -> PathBuf {
        self.data_dir.join("workspaces").join(agent)
    }
}

/// What an agent is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentOptions {
    /// Node-unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Memory namespace (default: the name).
    pub namespace: Option<String>,
    /// Granted skills (default `*`: all).
    pub grants: Vec<String>,
    /// Scheduling class of its tasks.
    pub priority: Priority,
}

impl AgentOptions {
    /// An agent with all skills at normal priority.
    pub fn new(name: impl Into<String>) -> AgentOptions {
        AgentOptions {
            name: name.into(),
            namespace: None,
            grants: vec!["*".to_owned()],
            priority: Priority::Normal,
        }
    }
}

/// Errors of the node API.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The journal failed (I/O, corruption, a poisoned log).
    #[error(transparent)]
    Wal(#[from] tiffany_wal::Error),
    /// A journal record does not decode.
    #[error("journal record {lsn} (stream {stream}) is unreadable: {source}")]
    Journal {
        /// Its LSN.
        lsn: Lsn,
        /// Its stream.
        stream: u64,
        /// Why.
        source: JournalError,
    },
    /// The scheduler did not start.
    #[error("cannot start the scheduler: {0}")]
    Sched(#[from] tiffany_sched::Error),
    /// A file-system operation outside the journal failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No agent has this id or name.
    #[error("no agent `{0}`")]
    UnknownAgent(String),
    /// An agent with this name exists.
    #[error("an agent named `{0}` already exists")]
    DuplicateAgent(String),
    /// The agent name is not usable as a directory name.
    #[error(
        "invalid agent name `{0}`: use letters, digits, `-`, `_` and `.` (not starting with `.`)"
    )]
    InvalidAgentName(String),
    /// The node was opened read-only.
    #[error("the node was opened for inspection only")]
    ReadOnly,
    /// No program of this name is registered (see [`Programs`]).
    #[error("no program `{0}` is registered")]
    UnknownProgram(String),
}

/// What [`Node::open`] found in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Journal records applied (after the snapshot, if any).
    pub records: u64,
    /// The LSN of the snapshot recovery started from.
    pub snapshot: Option<Lsn>,
    /// Whether the previous run shut down cleanly.
    pub clean_shutdown: bool,
    /// Agents known.
    pub agents: usize,
    /// Tasks already finished.
    pub finished: usize,
    /// Unfinished tasks continued (or, when inspecting, that would be).
    pub resumed: usize,
    /// Unfinished program tasks left waiting because their program is not
    /// registered in this node (they continue when a node that has it
    /// opens the journal).
    pub missing_programs: usize,
}

/// Counters a node keeps while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Tasks by status name.
    pub by_status: Vec<(&'static str, usize)>,
    /// Planner answers journaled, all tasks.
    pub steps: u64,
    /// Plan -> execute -> observe cycles measured in this run.
    pub cycles: u64,
    /// Cycle time percentiles (microseconds): p50, p99.
    pub cycle_p50_us: u64,
    /// See `cycle_p50_us`.
    pub cycle_p99_us: u64,
    /// Snapshots written in this run.
    pub snapshots: u64,
}

pub(crate) struct NodeInner {
    pub(crate) config: NodeConfig,
    pub(crate) wal: Wal,
    pub(crate) table: Mutex<Table>,
    /// Signalled whenever a task finishes.
    pub(crate) finished: Condvar,
    pub(crate) llm: Arc<dyn LlmProvider>,
    pub(crate) skills: Arc<Registry>,
    pub(crate) programs: Programs,
    /// Woken whenever a task finishes (for [`crate::Ctx::join`]).
    pub(crate) task_ended: tokio::sync::Notify,
    /// Where tasks run.
    sched: Handle,
    pub(crate) pal: Pal,
    pub(crate) cycles: CycleStats,
    /// Permits for [`NodeConfig::max_active_tasks`].
    pub(crate) admission: Option<Arc<tokio::sync::Semaphore>>,
    /// The tool list offered for each set of grants (`react::tools_for`).
    pub(crate) tools: Mutex<HashMap<Grants, Arc<[ToolSpec]>>>,
    groups: Mutex<HashMap<u64, Group>>,
    handles: Mutex<HashMap<u64, JoinHandle<()>>>,
    bytes_since_snapshot: AtomicU64,
    records_since_snapshot: AtomicU64,
    /// Set by the append that crosses `snapshot_every_bytes`; the first
    /// journaling call to clear it writes the snapshot, outside the lock.
    snapshot_due: AtomicBool,
    snapshots: AtomicU64,
    /// Set when the runtime is dropped: no task starts after it.
    stopped: AtomicBool,
}

/// A running node.
pub struct Node {
    inner: Arc<NodeInner>,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How much of the journal recovery reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum History {
    /// The newest snapshot and what follows: all a resume needs.
    FromSnapshot,
    /// Everything the WAL still holds, so that finished tasks keep their
    /// conversations (which snapshots compact away) where they can.
    All,
}

/// The scheduler group of an agent's tasks.
fn group_config(spec: &AgentSpec) -> GroupConfig {
    let priority = match spec.priority {
        Priority::Critical => tiffany_sched::Priority::Critical,
        Priority::Normal => tiffany_sched::Priority::Normal,
        Priority::Background => tiffany_sched::Priority::Background,
    };
    GroupConfig::new(spec.name.clone()).priority(priority)
}

/// Reads the journal into a table: from the newest snapshot (or the oldest
/// record held), then every later event.
fn recover_table(wal: &Wal, history: History) -> Result<(Table, Recovery), NodeError> {
    let from = match (history, wal.latest_checkpoint()?) {
        (History::FromSnapshot, Some(checkpoint)) => Lsn(checkpoint.lsn.0 + 1),
        _ => wal.first_lsn()?,
    };
    let mut table = Table::default();
    let mut recovery = Recovery::default();
    let records = if from > wal.last_lsn() {
        None
    } else {
        Some(wal.replay(from..)?)
    };
    for record in records.into_iter().flatten() {
        let record = record?;
        if record.is_checkpoint() {
            continue;
        }
        let event = Event::decode(record.payload()).map_err(|source| NodeError::Journal {
            lsn: record.lsn(),
            stream: record.stream(),
            source,
        })?;
        if matches!(event, Event::Snapshot { .. }) {
            recovery.snapshot = Some(record.lsn());
        }
        table.apply(&event).map_err(|source| NodeError::Journal {
            lsn: record.lsn(),
            stream: record.stream(),
            source,
        })?;
        recovery.records += 1;
    }
    recovery.clean_shutdown = table.clean_shutdown;
    recovery.agents = table.agents.len();
    recovery.finished = table
        .tasks
        .values()
        .filter(|t| t.status.is_terminal())
        .count();
    recovery.resumed = table.tasks.len() - recovery.finished;
    Ok((table, recovery))
}

/// Reads a node's journal without running anything (the `inspect` recovery
/// mode): the table as the journal leaves it (replayed from the oldest
/// record held, so finished tasks keep their conversations while the WAL
/// holds them), and what a resume would do.
pub fn inspect(data_dir: &Path) -> Result<(Table, Recovery), NodeError> {
    let config = NodeConfig::new(data_dir);
    let (wal, _) = Wal::open_read_only(config.wal_dir(), config.wal.clone())?;
    recover_table(&wal, History::All)
}

impl Node {
    /// Opens (or creates) the node under `config.data_dir`, replays its
    /// journal and continues every unfinished task (the `resume` mode).
    pub fn open(
        config: NodeConfig,
        llm: Arc<dyn LlmProvider>,
        skills: Arc<Registry>,
    ) -> Result<(Node, Recovery), NodeError> {
        Node::open_with(config, llm, skills, Programs::default())
    }

    /// [`Node::open`], with programs that tasks can run (see
    /// [`Node::submit_program`]); unfinished program tasks continue too.
    pub fn open_with(
        config: NodeConfig,
        llm: Arc<dyn LlmProvider>,
        skills: Arc<Registry>,
        programs: Programs,
    ) -> Result<(Node, Recovery), NodeError> {
        let mut builder = Runtime::builder().thread_name("tiffany-agent");
        if let Some(workers) = config.workers {
            builder = builder.workers(workers);
        }
        // The scheduler (its threads, the I/O driver, the clock's
        // calibration) starts on a thread of its own while this one reads
        // the journal: neither needs the other, and a cold boot mostly
        // waits for the disk.
        let (runtime, recovered) = std::thread::scope(|scope| {
            let starting = std::thread::Builder::new()
                .name("tiffany-boot".to_owned())
                .spawn_scoped(scope, {
                    let builder = builder.clone();
                    move || builder.build()
                });
            let recovered = Wal::open(config.wal_dir(), config.wal.clone())
                .map_err(NodeError::from)
                .and_then(|wal| {
                    let (table, recovery) = recover_table(&wal, History::FromSnapshot)?;
                    Ok((wal, table, recovery))
                });
            let runtime = match starting {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No thread to spare: start it here.
                Err(_) => builder.build(),
            };
            (runtime, recovered)
        });
        let (wal, table, mut recovery) = recovered?;
        let runtime = runtime?;
        recovery.missing_programs = table
            .tasks
            .values()
            .filter(|t| !t.status.is_terminal())
            .filter_map(|t| t.program.as_deref())
            .filter(|name| !programs.contains(name))
            .count();
        // Every agent with an unfinished task gets its group now, from the
        // table before it is shared (no lock per task, no task running
        // yet to contend with).
        let mut groups = HashMap::new();
        let mut unfinished = Vec::with_capacity(recovery.resumed);
        let mut parked = std::collections::BTreeSet::new();
        for t in table.tasks.values().filter(|t| !t.status.is_terminal()) {
            unfinished.push((t.id, t.agent));
            if let std::collections::hash_map::Entry::Vacant(entry) = groups.entry(t.agent) {
                if let Some(spec) = table.agents.get(&t.agent) {
                    entry.insert(runtime.group(group_config(spec)));
                }
            }
            if t.status == TaskStatus::Parked {
                parked.insert(t.agent);
            }
        }
        // Agents parked before the restart stay parked.
        for group in parked.iter().filter_map(|agent| groups.get(agent)) {
            for class in tiffany_sched::Priority::ALL {
                group.park(class);
            }
        }
        let pal = Pal::new(config.pal_capacity);
        let admission = config
            .max_active_tasks
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        let inner = Arc::new(NodeInner {
            config,
            wal,
            table: Mutex::new(table),
            finished: Condvar::new(),
            llm,
            skills,
            programs,
            task_ended: tokio::sync::Notify::new(),
            sched: runtime.handle().clone(),
            pal,
            cycles: CycleStats::default(),
            admission,
            tools: Mutex::new(HashMap::new()),
            groups: Mutex::new(groups),
            handles: Mutex::new(HashMap::with_capacity(unfinished.len())),
            bytes_since_snapshot: AtomicU64::new(0),
            records_since_snapshot: AtomicU64::new(0),
            snapshot_due: AtomicBool::new(false),
            snapshots: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let node = Node {
            inner,
            runtime: Some(runtime),
        };
        for (task, agent) in unfinished {
            node.inner.start(task, agent, true);
        }
        Ok((node, recovery))
    }

    /// The activity bus.
    pub fn pal(&self) -> &Pal {
        &self.inner.pal
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Creates an agent (journaled with the next sync; see [`Node::flush`])
    /// and its workspace directory.
    pub fn create_agent(&self, options: AgentOptions) -> Result<u64, NodeError> {
        let name = options.name;
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(NodeError::InvalidAgentName(name));
        }
        let workspace = self.inner.config.workspace_of(&name);
        #[allow(
            clippy::disallowed_methods,
            reason = "called from the embedding thread, not from a task"
        )]
        std::fs::create_dir_all(&workspace).map_err(|source| NodeError::Io {
            what: "create the workspace",
            path: workspace.clone(),
            source,
        })?;
        let mut table = self.inner.table();
        if table.agents.values().any(|a| a.name == name) {
            return Err(NodeError::DuplicateAgent(name));
        }
        let spec = AgentSpec {
            id: table.next_agent_id(),
            namespace: options.namespace.unwrap_or_else(|| name.clone()),
            name,
            grants: options.grants,
            priority: options.priority,
            workspace: workspace.to_string_lossy().into_owned(),
        };
        let id = spec.id;
        self.inner
            .append_locked(&mut table, NODE_STREAM, &Event::AgentCreated(spec))?;
        Ok(id)
    }

    /// The id of the agent named `name`.
    pub fn agent_id(&self, name: &str) -> Option<u64> {
        self.inner
            .table()
            .agents
            .values()
            .find(|a| a.name == name)
            .map(|a| a.id)
    }

    /// Gives `agent` a task: journals its instruction and starts its ReAct
    /// loop. The task is durable once [`Node::flush`] returns or its first
    /// skill starts.
    pub fn submit(&self, agent: u64, instruction: &str) -> Result<u64, NodeError> {
        let task = {
            let mut table = self.inner.table();
            if !table.agents.contains_key(&agent) {
                return Err(NodeError::UnknownAgent(agent.to_string()));
            }
            let task = table.next_task_id();
            let event = Event::TaskStarted {
                task,
                agent,
                system: self.inner.config.system_prompt.clone(),
                instruction: instruction.to_owned(),
                started_ms: now_ms(),
                parent: None,
            };
            self.inner.append_locked(&mut table, agent, &event)?;
            task
        };
        self.inner.start(task, agent, false);
        Ok(task)
    }

    /// Gives `agent` a task that runs the registered program `program` on
    /// `input` (see [`crate::Ctx`]); durable like [`Node::submit`].
    pub fn submit_program(&self, agent: u64, program: &str, input: &str) -> Result<u64, NodeError> {
        if !self.inner.programs.contains(program) {
            return Err(NodeError::UnknownProgram(program.to_owned()));
        }
        let task = {
            let mut table = self.inner.table();
            if !table.agents.contains_key(&agent) {
                return Err(NodeError::UnknownAgent(agent.to_string()));
            }
            let task = table.next_task_id();
            let event = Event::ProgramStarted {
                task,
                agent,
                program: program.to_owned(),
                input: input.to_owned(),
                started_ms: now_ms(),
                parent: None,
            };
            self.inner.append_locked(&mut table, agent, &event)?;
            task
        };
        self.inner.start(task, agent, false);
        Ok(task)
    }

    /// Makes everything journaled so far durable.
    pub fn flush(&self) -> Result<(), NodeError> {
        Ok(self.inner.wal.flush()?)
    }

    /// A copy of one task's state.
    pub fn task(&self, task: u64) -> Option<TaskState> {
        self.inner.table().tasks.get(&task).cloned()
    }

    /// A copy of the whole table.
    pub fn table(&self) -> Table {
        self.inner.table().clone()
    }

    /// Blocks the calling thread until `task` is finished or `timeout`
    /// passes; returns its state either way.
    pub fn wait(&self, task: u64, timeout: Duration) -> Option<TaskState> {
        let table = self.inner.table();
        let (table, _) = self
            .inner
            .finished
            .wait_timeout_while(table, timeout, |t| {
                t.tasks.get(&task).is_some_and(|t| !t.status.is_terminal())
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.tasks.get(&task).cloned()
    }

    /// Blocks until no task is unfinished or `timeout` passes; returns the
    /// number still unfinished.
    pub fn wait_idle(&self, timeout: Duration) -> usize {
        let table = self.inner.table();
        let (table, _) = self
            .inner
            .finished
            .wait_timeout_while(table, timeout, |t| t.unfinished() > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.unfinished()
    }

    /// Parks every unfinished task of `agent` (overload control): each
    /// stops at its next yield, keeps its state, and shows as `parked`
    /// (also after a restart) until [`Node::unpark_agent`].
    pub fn park_agent(&self, agent: u64) -> Result<usize, NodeError> {
        let parked = self.journal_agent_tasks(
            agent,
            |task| Event::Parked { task },
            |s| s != TaskStatus::Parked,
        )?;
        if let Some(group) = self.inner.group(agent) {
            for class in tiffany_sched::Priority::ALL {
                group.park(class);
            }
        }
        for &task in &parked {
            self.inner.publish(task, agent, ActivityKind::Parked);
        }
        Ok(parked.len())
    }

    /// Resumes the tasks [`Node::park_agent`] parked.
    pub fn unpark_agent(&self, agent: u64) -> Result<usize, NodeError> {
        let unparked = self.journal_agent_tasks(
            agent,
            |task| Event::Unparked { task },
            |s| s == TaskStatus::Parked,
        )?;
        if let Some(group) = self.inner.group(agent) {
            for class in tiffany_sched::Priority::ALL {
                group.unpark(class);
            }
        }
        Ok(unparked.len())
    }

    /// Journals `event(task)` for each unfinished task of `agent` whose
    /// status passes `select`, durably; returns those tasks.
    fn journal_agent_tasks(
        &self,
        agent: u64,
        event: impl Fn(u64) -> Event,
        select: impl Fn(TaskStatus) -> bool,
    ) -> Result<Vec<u64>, NodeError> {
        let mut table = self.inner.table();
        if !table.agents.contains_key(&agent) {
            return Err(NodeError::UnknownAgent(agent.to_string()));
        }
        let tasks: Vec<u64> = table
            .tasks
            .values()
            .filter(|t| t.agent == agent && !t.status.is_terminal() && select(t.status))
            .map(|t| t.id)
            .collect();
        for &task in &tasks {
            self.inner.append_locked(&mut table, agent, &event(task))?;
        }
        drop(table);
        self.flush()?;
        Ok(tasks)
    }

    /// Cancels a task: journals it durably and drops its loop at its
    /// current await. Returns whether the task was still unfinished.
    pub fn cancel(&self, task: u64) -> Result<bool, NodeError> {
        let written = self.inner.conclude(task, &Event::TaskCancelled { task })?;
        if let Some(handle) = self.inner.handles().remove(&task) {
            handle.abort();
        }
        if written.is_some() {
            self.flush()?;
        }
        Ok(written.is_some())
    }

    /// Counters and cycle times of this run.
    pub fn stats(&self) -> NodeStats {
        let table = self.inner.table();
        let mut by_status: Vec<(&'static str, usize)> = Vec::new();
        let mut steps = 0u64;
        for t in table.tasks.values() {
            steps += u64::from(t.steps);
            let name = t.status.as_str();
            match by_status.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => by_status.push((name, 1)),
            }
        }
        drop(table);
        let (cycles, p50, p99) = self.inner.cycles.summary();
        NodeStats {
            by_status,
            steps,
            cycles,
            cycle_p50_us: p50,
            cycle_p99_us: p99,
            snapshots: self.inner.snapshots.load(Ordering::Relaxed),
        }
    }

    /// Stops every task, writes a snapshot and a clean-shutdown marker, and
    /// syncs the journal. Unfinished tasks continue when the node is opened
    /// again.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop_runtime();
        self.inner.snapshot()?;
        let mut table = self.inner.table();
        self.inner
            .append_locked(&mut table, NODE_STREAM, &Event::Shutdown)?;
        drop(table);
        self.flush()
    }

    fn stop_runtime(&mut self) {
        // Dropping the runtime cancels every loop at its current await; the
        // journal already holds everything they did.
        if let Some(runtime) = self.runtime.take() {
            self.inner.stopped.store(true, Ordering::Release);
            drop(runtime);
        }
        self.inner.handles().clear();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}

impl NodeInner {
    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The skills `agent` was granted.
    pub(crate) fn grants(&self, agent: u64) -> Grants {
        Grants::only(
            self.table()
                .agents
                .get(&agent)
                .map(|a| a.grants.clone())
                .unwrap_or_default(),
        )
    }

    /// Whether `agent` may call skill `name` and it [`waits`]: its calls
    /// then keep their start in the journal.
    ///
    /// [`waits`]: tiffany_skills::Skill::waits
    pub(crate) fn waits(&self, agent: u64, name: &str) -> bool {
        self.skills.get(name).is_some_and(|skill| skill.waits()) && self.grants(agent).allows(name)
    }

    /// Whether `agent` may call [`crate::DELEGATE`].
    pub(crate) fn delegation_granted(&self, agent: u64) -> bool {
        self.grants(agent).allows(crate::DELEGATE)
    }

    /// The agent's workspace directory and name.
    pub(crate) fn workspace_and_name(&self, agent: u64) -> (PathBuf, String) {
        let table = self.table();
        let spec = table.agents.get(&agent);
        spec.map(|a| (PathBuf::from(&a.workspace), a.name.clone()))
            .unwrap_or_default()
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, JoinHandle<()>>> {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts task `task`'s loop (or program) on its agent's group.
    pub(crate) fn start(self: &Arc<Self>, task: u64, agent: u64, resumed: bool) {
        let Some(group) = self.group(agent) else {
            return;
        };
        let inner = Arc::clone(self);
        let handle = group.spawn_pinned(move || crate::react::run(inner, task, resumed));
        self.handles().insert(task, handle);
    }

    /// Whether calling skill `name` with `arguments` again is safe (an
    /// unknown skill or unreadable arguments only ever fail, so they are).
    pub(crate) fn is_idempotent(&self, name: &str, arguments: &str) -> bool {
        self.skills.get(name).is_none_or(|skill| {
            serde_json::from_str(arguments).is_ok_and(|args| skill.idempotent_call(&args))
        })
    }

    /// The scheduler group of `agent`, created on first use; `None` once
    /// the node is stopping or for an unknown agent.
    fn group(&self, agent: u64) -> Option<Group> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(g) = groups.get(&agent) {
            return Some(g.clone());
        }
        let group = self
            .sched
            .group(group_config(self.table().agents.get(&agent)?));
        groups.insert(agent, group.clone());
        Some(group)
    }

    /// Appends `event` and applies it; the caller holds the table lock.
    /// Returns the event's LSN (durable with the next sync).
    pub(crate) fn append_locked(
        &self,
        table: &mut Table,
        stream: u64,
        event: &Event,
    ) -> Result<Lsn, NodeError> {
        let bytes = event.encode();
        let lsn = self.wal.append(stream, &bytes, SyncMode::Buffer)?;
        table.apply(event).map_err(|source| NodeError::Journal {
            lsn,
            stream,
            source,
        })?;
        let crossed = |counter: &AtomicU64, add: u64, limit: u64| {
            let before = counter.fetch_add(add, Ordering::Relaxed);
            before < limit && before + add >= limit
        };
        let bytes_due = crossed(
            &self.bytes_since_snapshot,
            bytes.len() as u64,
            self.config.snapshot_every_bytes,
        );
        let records_due = crossed(
            &self.records_since_snapshot,
            1,
            self.config.snapshot_every_records,
        );
        if bytes_due || records_due {
            self.snapshot_due.store(true, Ordering::Release);
        }
        Ok(lsn)
    }

    /// Journals a task event on its agent's stream.
    pub(crate) fn journal(&self, agent: u64, event: &Event) -> Result<Lsn, NodeError> {
        let lsn = self.append_locked(&mut self.table(), agent, event)?;
        if self.snapshot_due.swap(false, Ordering::AcqRel) {
            self.snapshot()?;
        }
        Ok(lsn)
    }

    /// Waits until `lsn` is durable, if the node journals in `Data` mode.
    pub(crate) async fn durable(&self, lsn: Lsn) -> Result<(), NodeError> {
        if self.config.sync == SyncMode::Data {
            self.wal.durable(lsn).await?;
        }
        Ok(())
    }

    /// Journals a terminal event (completed, failed, cancelled) unless the
    /// task is already finished, and wakes waiters. Returns the event's LSN
    /// if it was written; the caller makes it durable before reporting.
    pub(crate) fn conclude(&self, task: u64, event: &Event) -> Result<Option<Lsn>, NodeError> {
        let mut table = self.table();
        let Some(state) = table.tasks.get(&task) else {
            return Ok(None);
        };
        if state.status.is_terminal() {
            return Ok(None);
        }
        let agent = state.agent;
        let lsn = self.append_locked(&mut table, agent, event)?;
        drop(table);
        self.finished.notify_all();
        self.task_ended.notify_waiters();
        let kind = match event {
            Event::TaskCompleted { answer, .. } => ActivityKind::Completed {
                answer: answer.clone(),
            },
            Event::TaskFailed { error, .. } => ActivityKind::Failed {
                error: error.clone(),
            },
            _ => ActivityKind::Failed {
                error: "cancelled".to_owned(),
            },
        };
        self.publish(task, agent, kind);
        if self.table().unfinished_of(agent) == 0 {
            self.publish(task, agent, ActivityKind::Idle);
        }
        Ok(Some(lsn))
    }

    /// Writes a snapshot of the table and checkpoints the WAL just before
    /// it, so that recovery starts from the snapshot.
    pub(crate) fn snapshot(&self) -> Result<(), NodeError> {
        let lsn = {
            let table = self.table();
            let event = Event::Snapshot {
                compressed: table.snapshot(),
            };
            // Not applied: the table is what the snapshot encodes.
            let lsn = self
                .wal
                .append(NODE_STREAM, &event.encode(), SyncMode::Buffer)?;
            self.bytes_since_snapshot.store(0, Ordering::Relaxed);
            self.records_since_snapshot.store(0, Ordering::Relaxed);
            lsn
        };
        self.wal.checkpoint(Lsn(lsn.0 - 1), &lsn.0.to_le_bytes())?;
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn publish(&self, task: u64, agent: u64, kind: ActivityKind) {
        if self.pal.has_subscribers() {
            self.pal.publish(Activity {
                task,
                agent,
                at_ms: now_ms(),
                kind,
            });
        }
    }
}
