//! Tiffany's cooperative scheduler: every agent step runs as a task here.
//!
//! # Overview
//! - [`Runtime`] starts one worker thread per core (by default). Each worker is
//!   a single-threaded executor: its tasks never migrate, so they may be
//!   `!Send`, and an explicit yield costs a few nanoseconds with no system
//!   call. A [`Handle`] reaches the runtime from any thread.
//! - A [`Group`] is one agent's task group, pinned to a worker. Its tasks get
//!   a [`Priority`] (`Critical`, `Normal`, `Background`); the runtime's
//!   [`Policy`] picks what runs next (FIFO, strict priority, or weighted fair
//!   across agents).
//! - Spawning returns a [`JoinHandle`]; awaiting it gives the output or a
//!   [`JoinError`] (cancelled or panicked). A panic fails only its own task.
//! - Inside tasks: [`yield_now`], [`sleep`], [`timeout`], [`spawn`], and the
//!   same-worker [`sync::channel`] and [`sync::oneshot`]. Tokio-based I/O
//!   (sockets, child processes, HTTP clients) works too: a tokio reactor runs
//!   on its own thread and wakes tasks through their worker's inbox.
//! - [`Handle::feedback`] returns a [`Feedback`] snapshot per agent and per
//!   worker: run-queue depth, starvation (time ready but not running),
//!   busy share (overcommit risk), tasks waiting on I/O and timers with wait
//!   histograms (I/O wait heat), poll durations and long polls
//!   ([`Handle::take_long_polls`]).
//! - Overload control parks a priority class, node-wide ([`Handle::park`]) or
//!   per agent ([`Group::park`]); parked tasks stop at their next yield and
//!   resume, state intact, when unparked.
//! - [`DeterministicRuntime`] runs one worker on the test's thread with a
//!   manual clock and a seeded order: the same seed gives the same
//!   interleaving.
//!
//! # Guarantees
//! - Cooperative: a task runs until it yields; nothing preempts a poll. A
//!   poll longer than the long-poll threshold (default 1 ms) is reported
//!   with its task, agent and duration. Blocking std calls are listed in the
//!   workspace's `clippy.toml` (`disallowed-methods`) for agent-facing code.
//! - An explicit yield ([`yield_now`]) makes no system call and takes no lock.
//! - Dropping a [`Runtime`] cancels every unfinished task: each future is
//!   dropped on its own worker thread and its [`JoinHandle`] reports
//!   cancellation.
//! - Nothing here is durable: durability is the journal's job (`tiffany-wal`).
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use tiffany_sched::{GroupConfig, Priority, Runtime, sleep, spawn, yield_now};
//!
//! let rt = Runtime::builder().workers(1).build().unwrap();
//! let agent = rt.group(GroupConfig::new("planner"));
//! let steps = rt.block_on(async move {
//!     let worker = agent.spawn(async {
//!         let mut steps = 0;
//!         for _ in 0..3 {
//!             yield_now().await;
//!             steps += 1;
//!         }
//!         // A child task on the same worker, at the parent's priority.
//!         let child = spawn(async { sleep(Duration::from_millis(1)).await; 1 });
//!         steps + child.await.unwrap()
//!     });
//!     worker.await.unwrap()
//! });
//! assert_eq!(steps, 4);
//! ```
//!
//! # Features
//! None yet; the tokio I/O driver is always compiled in and switched on or
//! off at run time with [`Builder::io`].

mod feedback;
mod group;
mod io;
mod queue;
mod rng;
mod runtime;
mod sim;
pub mod sync;
mod task;
mod timer;
mod worker;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use feedback::{
    AgentFeedback, BUCKETS, Counters, Feedback, HistogramSnapshot, LongPoll, WorkerFeedback,
};
pub use group::{Group, GroupConfig};
pub use runtime::{Builder, Handle, Runtime};
pub use sim::DeterministicRuntime;
pub use task::{JoinError, JoinHandle};
pub use tiffany_core::{AgentId, TaskId};
pub use timer::{Elapsed, Instant, Sleep, Timeout, sleep, sleep_until, timeout};

/// Number of priority classes.
pub(crate) const CLASSES: usize = 3;

/// A task's priority class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    /// Latency-critical work (user-facing replies, control).
    Critical = 0,
    /// Ordinary agent work (the default).
    #[default]
    Normal = 1,
    /// Work that can wait: parked first under overload.
    Background = 2,
}

impl Priority {
    /// All classes, most urgent first.
    pub const ALL: [Priority; CLASSES] =
        [Priority::Critical, Priority::Normal, Priority::Background];

    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }

    pub(crate) fn from_mask(mask: u8) -> Vec<Priority> {
        Priority::ALL
            .into_iter()
            .filter(|p| mask & p.bit() != 0)
            .collect()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Background => "background",
        })
    }
}

/// How a worker picks the next ready task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// One queue in readiness order; priorities are ignored.
    Fifo,
    /// Always the most urgent class first; FIFO within a class.
    #[default]
    StrictPriority,
    /// Classes in strict order; within a class, agents take turns and each
    /// agent's turn lasts as many polls as its weight (deficit round robin),
    /// so agents share the worker in proportion to their weights however
    /// many tasks each has ready.
    WeightedFair,
}

/// Errors from building a runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tokio I/O driver could not start.
    #[error("could not start the I/O driver")]
    IoDriver(#[source] std::io::Error),
    /// A worker thread could not start.
    #[error("could not start worker thread {index}")]
    WorkerThread {
        /// The worker's index.
        index: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The long-poll watchdog thread could not start.
    #[error("could not start the long-poll watchdog thread")]
    Watchdog(#[source] std::io::Error),
    /// More workers were requested than task ids can address.
    #[error("{requested} workers requested, at most {max} are supported")]
    TooManyWorkers {
        /// Workers requested.
        requested: usize,
        /// The limit.
        max: usize,
    },
}

/// Spawns `future` on the current worker, in the current task's group, at
/// the current task's priority. The future may be `!Send`.
///
/// # Panics
/// Outside a task of a tiffany-sched runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    worker::spawn_local(None, future)
}

/// Like [`spawn`], at `priority`.
pub fn spawn_with_priority<F>(priority: Priority, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    worker::spawn_local(Some(priority), future)
}

/// The id of the task being polled on this thread, if any.
pub fn current_task() -> Option<TaskId> {
    worker::try_with_current(|local| {
        // SAFETY: the running task is live while it is polled.
        local
            .current_task()
            .map(|ptr| unsafe { ptr.as_ref() }.task_id())
    })
    .flatten()
}

/// The agent (group) of the task being polled on this thread, if any.
pub fn current_agent() -> Option<AgentId> {
    worker::try_with_current(|local| {
        // SAFETY: the running task is live while it is polled.
        local
            .current_task()
            .map(|ptr| unsafe { ptr.as_ref() }.group().id)
    })
    .flatten()
}

/// Yields to the scheduler: the task goes to the back of its run queue and
/// other ready tasks run first. Costs no system call and no lock.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        if !worker::notify_running(cx.waker()) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}
