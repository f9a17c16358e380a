//! Task groups: one per agent, pinned to one worker.
//!
//! Invariants:
//! - A group never changes worker; every task of the group runs there.
//! - `local_index` is unique among the groups of that worker and never
//!   reused, so per-group worker-local tables can be plain vectors.
//! - `stats` has one writer, the group's worker (see `feedback`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tiffany_core::{AgentId, Clock};

use crate::feedback::{AgentFeedback, GroupStats};
use crate::task::JoinHandle;
use crate::worker::{Message, WorkerShared};
use crate::{Priority, worker};

/// How to create a task group: its name, weight and optional worker.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) worker: Option<usize>,
    pub(crate) priority: Priority,
}

impl GroupConfig {
    /// A group named `name`, weight 1, default priority `Normal`, placed on
    /// the worker with the fewest groups.
    pub fn new(name: impl Into<String>) -> GroupConfig {
        GroupConfig {
            name: name.into(),
            weight: 1,
            worker: None,
            priority: Priority::Normal,
        }
    }

    /// The group's share under [`Policy::WeightedFair`](crate::Policy::WeightedFair):
    /// polls per turn (default 1, at least 1).
    pub fn weight(mut self, weight: u32) -> GroupConfig {
        self.weight = weight.max(1);
        self
    }

    /// Pins the group to worker `index` (taken modulo the worker count).
    pub fn worker(mut self, index: usize) -> GroupConfig {
        self.worker = Some(index);
        self
    }

    /// The priority of tasks spawned with [`Group::spawn`] (default `Normal`).
    pub fn priority(mut self, priority: Priority) -> GroupConfig {
        self.priority = priority;
        self
    }
}

pub(crate) struct GroupShared {
    pub(crate) id: AgentId,
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) priority: Priority,
    pub(crate) worker: Arc<WorkerShared>,
    /// The runtime's clock, for feedback snapshots.
    clock: Clock,
    pub(crate) local_index: u32,
    pub(crate) stats: GroupStats,
    /// Classes parked for this group alone (bit = 1 << class), for reporting;
    /// the worker keeps its own copy for scheduling.
    pub(crate) parked_mask: AtomicU8,
}

impl GroupShared {
    pub(crate) fn new(
        id: AgentId,
        config: GroupConfig,
        worker: Arc<WorkerShared>,
        clock: Clock,
    ) -> GroupShared {
        let local_index = worker.next_group_index();
        GroupShared {
            id,
            name: config.name,
            weight: config.weight,
            priority: config.priority,
            worker,
            clock,
            local_index,
            stats: GroupStats::default(),
            parked_mask: AtomicU8::new(0),
        }
    }

    fn set_parked(&self, class: Priority, park: bool) {
        if park {
            self.parked_mask.fetch_or(class.bit(), Ordering::Relaxed);
        } else {
            self.parked_mask.fetch_and(!class.bit(), Ordering::Relaxed);
        }
        let _ = self.worker.send(Message::Park {
            group: Some(self.local_index),
            mask: class.bit(),
            park,
        });
    }

    pub(crate) fn feedback(&self, now: u64) -> AgentFeedback {
        AgentFeedback {
            id: self.id,
            name: self.name.clone(),
            worker: self.worker.index,
            parked_classes: Priority::from_mask(self.parked_mask.load(Ordering::Relaxed)),
            counters: self.stats.snapshot(now),
        }
    }
}

/// A task group: the tasks of one agent, all on one worker thread.
///
/// Cheap to clone; usable from any thread. Spawning from the group's own
/// worker is a local push; from elsewhere the task travels through the
/// worker's inbox.
#[derive(Clone)]
pub struct Group {
    pub(crate) shared: Arc<GroupShared>,
}

impl Group {
    /// The agent id of this group.
    pub fn id(&self) -> AgentId {
        self.shared.id
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The index of the worker the group runs on.
    pub fn worker(&self) -> usize {
        self.shared.worker.index
    }

    /// Spawns `future` in this group at the group's priority.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with_priority(self.shared.priority, future)
    }

    /// Spawns `future` in this group at `priority`.
    pub fn spawn_with_priority<F>(&self, priority: Priority, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        worker::spawn_in_group(&self.shared, priority, future)
    }

    /// Spawns the future built by `make` in this group at the group's
    /// priority. `make` runs on the group's worker, so the future may be
    /// `!Send` (hold `Rc`s, same-worker channels, ...); only the closure
    /// travels between threads.
    pub fn spawn_pinned<C, F>(&self, make: C) -> JoinHandle<F::Output>
    where
        C: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        worker::spawn_pinned_in_group(&self.shared, self.shared.priority, make)
    }

    /// Parks this agent's tasks of class `class` at their next yield; they
    /// keep their state and run again after [`Group::unpark`].
    pub fn park(&self, class: Priority) {
        self.shared.set_parked(class, true);
    }

    /// Releases this agent's parking of `class` (node-wide parking, see
    /// [`Handle::park`](crate::Handle::park), still applies).
    pub fn unpark(&self, class: Priority) {
        self.shared.set_parked(class, false);
    }

    /// This group's feedback: run-queue depth, starvation, busy time, waits.
    pub fn feedback(&self) -> AgentFeedback {
        self.shared.feedback(self.shared.clock.now_nanos())
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("worker", &self.shared.worker.index)
            .finish()
    }
}
