//! The runtime: worker threads, the I/O driver, groups, and node-wide control.
//!
//! Invariants:
//! - `RuntimeShared` is reachable from every worker (`WorkerLocal::runtime`)
//!   and from every [`Handle`]; it holds no reference back to a worker's
//!   local state, so there are no reference cycles.
//! - Each worker has a default group, used by [`Handle::spawn`] (round robin)
//!   and by `spawn` outside any task.
//! - Dropping the [`Runtime`] stops every worker, which drops every
//!   unfinished future on its own thread (their handles report
//!   cancellation), and only then stops the I/O driver, so futures holding
//!   I/O resources deregister while the driver still runs.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use tiffany_core::{AgentId, Clock};

use crate::feedback::{Counters, Feedback, LongPoll, WorkerFeedback};
use crate::group::{Group, GroupConfig, GroupShared};
use crate::io::IoDriver;
use crate::task::{JoinError, JoinHandle};
use crate::worker::{self, Message, WorkerShared};
use crate::{Error, Policy, Priority};

/// How many long-poll reports the runtime keeps for [`Handle::take_long_polls`].
const LONG_POLL_BACKLOG: usize = 1024;

pub(crate) struct RuntimeShared {
    pub(crate) clock: Clock,
    pub(crate) policy: Policy,
    pub(crate) long_poll: Duration,
    workers: Vec<Arc<WorkerShared>>,
    defaults: Vec<Arc<GroupShared>>,
    groups: Mutex<Vec<Weak<GroupShared>>>,
    next_agent: AtomicU64,
    next_default: AtomicUsize,
    long_polls: Mutex<VecDeque<LongPoll>>,
    node_parked: AtomicU8,
    io: Option<tokio::runtime::Handle>,
    watchdog: OnceLock<Thread>,
    watchdog_parked: AtomicBool,
    stopping: AtomicBool,
}

impl RuntimeShared {
    fn new(
        config: &Builder,
        workers: usize,
        clock: Clock,
        io: Option<tokio::runtime::Handle>,
    ) -> Arc<RuntimeShared> {
        let workers: Vec<Arc<WorkerShared>> = (0..workers)
            .map(|i| Arc::new(WorkerShared::new(i)))
            .collect();
        let next_agent = AtomicU64::new(0);
        let defaults: Vec<Arc<GroupShared>> = workers
            .iter()
            .map(|w| {
                let id = AgentId(next_agent.fetch_add(1, Ordering::Relaxed));
                let config = GroupConfig::new(format!("default-{}", w.index));
                Arc::new(GroupShared::new(id, config, Arc::clone(w), clock.clone()))
            })
            .collect();
        let groups = defaults.iter().map(Arc::downgrade).collect();
        Arc::new(RuntimeShared {
            clock,
            policy: config.policy,
            long_poll: config.long_poll,
            workers,
            defaults,
            groups: Mutex::new(groups),
            next_agent,
            next_default: AtomicUsize::new(0),
            long_polls: Mutex::new(VecDeque::new()),
            node_parked: AtomicU8::new(0),
            io,
            watchdog: OnceLock::new(),
            watchdog_parked: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    pub(crate) fn default_group(&self, worker: usize) -> Arc<GroupShared> {
        let i = worker % self.defaults.len().max(1);
        match self.defaults.get(i) {
            Some(g) => Arc::clone(g),
            None => unreachable!("a runtime has at least one worker"),
        }
    }

    /// Called by a worker that just woke up: a watchdog parked because every
    /// worker slept must watch again.
    pub(crate) fn wake_watchdog(&self) {
        if self.watchdog_parked.load(Ordering::SeqCst)
            && self.watchdog_parked.swap(false, Ordering::SeqCst)
        {
            if let Some(thread) = self.watchdog.get() {
                thread.unpark();
            }
        }
    }

    pub(crate) fn io_handle(&self) -> Option<&tokio::runtime::Handle> {
        self.io.as_ref()
    }

    pub(crate) fn record_long_poll(&self, report: LongPoll) {
        let mut backlog = self.long_polls.lock().unwrap_or_else(|e| e.into_inner());
        if backlog.len() == LONG_POLL_BACKLOG {
            backlog.pop_front();
        }
        backlog.push_back(report);
    }

    fn live_groups(&self) -> Vec<Arc<GroupShared>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = Vec::with_capacity(groups.len());
        groups.retain(|weak| match weak.upgrade() {
            Some(g) => {
                live.push(g);
                true
            }
            None => false,
        });
        live
    }
}

/// Builds a [`Runtime`] (threads) or a [`DeterministicRuntime`](crate::DeterministicRuntime) (tests).
///
/// Defaults: one worker per core, [`Policy::StrictPriority`], I/O driver on,
/// long-poll threshold 1 ms.
#[derive(Clone, Debug)]
pub struct Builder {
    workers: usize,
    policy: Policy,
    io: bool,
    long_poll: Duration,
    thread_name: String,
    portable_clock: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            workers: 0,
            policy: Policy::default(),
            io: true,
            long_poll: Duration::from_millis(1),
            thread_name: "tiffany-worker".to_owned(),
            portable_clock: false,
        }
    }
}

/// Most workers a runtime may have (task ids keep the worker in 16 bits).
const MAX_WORKERS: usize = u16::MAX as usize - 1;

impl Builder {
    /// Number of worker threads (default: one per core; 0 means default).
    pub fn workers(mut self, workers: usize) -> Builder {
        self.workers = workers;
        self
    }

    /// The scheduling policy (default [`Policy::StrictPriority`]).
    pub fn policy(mut self, policy: Policy) -> Builder {
        self.policy = policy;
        self
    }

    /// Whether to run a tokio I/O driver so tokio-based clients (sockets,
    /// processes, HTTP) work inside tasks (default true). The driver runs on
    /// its own thread; explicit yields never touch it.
    pub fn io(mut self, io: bool) -> Builder {
        self.io = io;
        self
    }

    /// Polls at least this long are reported as [`LongPoll`]s and logged
    /// (default 1 ms).
    pub fn long_poll_threshold(mut self, threshold: Duration) -> Builder {
        self.long_poll = threshold;
        self
    }

    /// Prefix of worker thread names (default `tiffany-worker`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.thread_name = name.into();
        self
    }

    /// Use `Instant` rather than the CPU's time-stamp counter for the clock
    /// (slower per poll; for comparison and for CPUs with an unreliable TSC).
    pub fn portable_clock(mut self, portable: bool) -> Builder {
        self.portable_clock = portable;
        self
    }

    fn worker_count(&self) -> Result<usize, Error> {
        let workers = match self.workers {
            0 => thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if workers > MAX_WORKERS {
            return Err(Error::TooManyWorkers {
                requested: workers,
                max: MAX_WORKERS,
            });
        }
        Ok(workers)
    }

    fn io_driver(&self) -> Result<Option<IoDriver>, Error> {
        if !self.io {
            return Ok(None);
        }
        IoDriver::start(&self.thread_name).map(Some)
    }

    /// Starts the worker threads (and the I/O driver).
    pub fn build(self) -> Result<Runtime, Error> {
        let workers = self.worker_count()?;
        // The I/O driver is built inside the clock's calibration window
        // rather than after it: a cold start saves the half millisecond.
        let (clock, io) = if self.portable_clock {
            (Clock::system_portable(), self.io_driver())
        } else {
            Clock::system_while(|| self.io_driver())
        };
        let io = io?;
        let shared = RuntimeShared::new(
            &self,
            workers,
            clock,
            io.as_ref().map(|io| io.handle().clone()),
        );
        let mut runtime = Runtime {
            handle: Handle {
                shared: Arc::clone(&shared),
            },
            threads: Vec::with_capacity(workers),
            watchdog: None,
            io,
        };
        for worker in &shared.workers {
            let worker = Arc::clone(worker);
            let index = worker.index;
            let runtime_shared = Arc::clone(&shared);
            let thread = thread::Builder::new()
                .name(format!("{}-{index}", self.thread_name))
                .spawn(move || worker::worker_main(worker, runtime_shared))
                .map_err(|source| Error::WorkerThread { index, source })?;
            runtime.threads.push(thread);
        }
        let watched = Arc::clone(&shared);
        let watchdog = thread::Builder::new()
            .name(format!("{}-watchdog", self.thread_name))
            .spawn(move || watchdog_main(watched))
            .map_err(Error::Watchdog)?;
        runtime.watchdog = Some(watchdog);
        Ok(runtime)
    }

    /// Builds the deterministic single-worker runtime: a manual clock, no
    /// threads, and ready tasks picked in an order drawn from `seed`.
    ///
    /// The I/O driver is off unless [`Builder::io`] was set explicitly to
    /// true after this builder was created with [`Builder::deterministic`].
    pub fn build_deterministic(self, seed: u64) -> Result<crate::DeterministicRuntime, Error> {
        let io = self.io_driver()?;
        let (clock, hand) = Clock::manual();
        let shared = RuntimeShared::new(&self, 1, clock, io.as_ref().map(|io| io.handle().clone()));
        Ok(crate::DeterministicRuntime::new(
            Handle { shared },
            hand,
            seed,
            io,
        ))
    }

    /// A builder for the deterministic runtime: as [`Builder::default`] but
    /// with the I/O driver off.
    pub fn deterministic() -> Builder {
        Builder::default().io(false)
    }
}

/// A cheap, cloneable reference to a runtime, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<RuntimeShared>,
}

impl Handle {
    /// The runtime of the calling task.
    ///
    /// # Panics
    /// Outside a task of a tiffany-sched runtime.
    pub fn current() -> Handle {
        Handle::try_current()
            .unwrap_or_else(|| panic!("Handle::current called outside a tiffany-sched task"))
    }

    /// The runtime of the calling task, if any.
    pub fn try_current() -> Option<Handle> {
        worker::try_with_current(|local| Handle {
            shared: Arc::clone(local.runtime()),
        })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Time since the runtime started, by its clock.
    pub fn elapsed(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Creates a task group (an agent), placed on the worker with the
    /// fewest groups unless the config names one.
    pub fn group(&self, config: GroupConfig) -> Group {
        let workers = &self.shared.workers;
        let index = match config.worker {
            Some(i) => i % workers.len(),
            None => workers
                .iter()
                .min_by_key(|w| w.group_count())
                .map_or(0, |w| w.index),
        };
        let worker = match workers.get(index) {
            Some(w) => Arc::clone(w),
            None => unreachable!("index taken modulo the worker count"),
        };
        let id = AgentId(self.shared.next_agent.fetch_add(1, Ordering::Relaxed));
        let group = Arc::new(GroupShared::new(
            id,
            config,
            worker,
            self.shared.clock.clone(),
        ));
        self.shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&group));
        Group { shared: group }
    }

    /// Spawns `future` at `Normal` priority in a default group; default
    /// groups are used round robin across workers.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with_priority(Priority::Normal, future)
    }

    /// Spawns `future` at `priority` in a default group.
    pub fn spawn_with_priority<F>(&self, priority: Priority, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let n = self.shared.next_default.fetch_add(1, Ordering::Relaxed);
        let group = self.shared.default_group(n);
        worker::spawn_in_group(&group, priority, future)
    }

    /// Spawns the future built by `make` at `Normal` priority in a default
    /// group. `make` runs on the worker, so the future may be `!Send`.
    pub fn spawn_pinned<C, F>(&self, make: C) -> JoinHandle<F::Output>
    where
        C: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let n = self.shared.next_default.fetch_add(1, Ordering::Relaxed);
        let group = self.shared.default_group(n);
        worker::spawn_pinned_in_group(&group, Priority::Normal, make)
    }

    /// Parks every task of class `class` on the whole node at its next
    /// yield. Parked tasks keep their state, are counted as `parked` in the
    /// feedback, and run again after [`Handle::unpark`].
    pub fn park(&self, class: Priority) {
        self.shared
            .node_parked
            .fetch_or(class.bit(), Ordering::Relaxed);
        self.broadcast_park(class, true);
    }

    /// Releases node-wide parking of `class` (agents parked individually stay parked).
    pub fn unpark(&self, class: Priority) {
        self.shared
            .node_parked
            .fetch_and(!class.bit(), Ordering::Relaxed);
        self.broadcast_park(class, false);
    }

    fn broadcast_park(&self, class: Priority, park: bool) {
        for worker in &self.shared.workers {
            let _ = worker.send(Message::Park {
                group: None,
                mask: class.bit(),
                park,
            });
        }
    }

    /// Classes parked node-wide.
    pub fn parked_classes(&self) -> Vec<Priority> {
        Priority::from_mask(self.shared.node_parked.load(Ordering::Relaxed))
    }

    /// A snapshot of every agent's and worker's feedback. Reads atomics only
    /// (no worker is interrupted); cost grows with the number of agents.
    pub fn feedback(&self) -> Feedback {
        let now = self.shared.clock.now_nanos();
        let agents: Vec<_> = self
            .shared
            .live_groups()
            .iter()
            .map(|g| g.feedback(now))
            .collect();
        let workers = self
            .shared
            .workers
            .iter()
            .map(|w| {
                let mut counters = Counters::default();
                let mut count = 0;
                for agent in agents.iter().filter(|a| a.worker == w.index) {
                    counters.merge(&agent.counters);
                    count += 1;
                }
                counters.busy = Duration::from_nanos(w.busy_nanos.get());
                WorkerFeedback {
                    index: w.index,
                    uptime: Duration::from_nanos(
                        now.saturating_sub(w.started_at.load(Ordering::Relaxed)),
                    ),
                    idle: Duration::from_nanos(w.idle_nanos.get()),
                    agents: count,
                    counters,
                }
            })
            .collect();
        Feedback {
            at: Duration::from_nanos(now),
            workers,
            agents,
        }
    }

    /// Takes the long-poll reports recorded so far (the most recent 1,024).
    pub fn take_long_polls(&self) -> Vec<LongPoll> {
        let mut backlog = self
            .shared
            .long_polls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        backlog.drain(..).collect()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.workers())
            .finish()
    }
}

/// A running node runtime: worker threads, each a single-threaded executor,
/// plus an optional I/O driver thread.
///
/// Dereferences to its [`Handle`]. Dropping it cancels every unfinished task
/// and joins the threads, so it must not be dropped from one of its own
/// tasks.
///
/// ```
/// use tiffany_sched::{GroupConfig, Priority, Runtime};
///
/// let rt = Runtime::builder().workers(2).build().unwrap();
/// let agent = rt.group(GroupConfig::new("researcher"));
/// let answer = rt.block_on(async move {
///     let h = agent.spawn_with_priority(Priority::Critical, async { 40 + 2 });
///     h.await.unwrap()
/// });
/// assert_eq!(answer, 42);
/// ```
pub struct Runtime {
    handle: Handle,
    threads: Vec<thread::JoinHandle<()>>,
    watchdog: Option<thread::JoinHandle<()>>,
    io: Option<IoDriver>,
}

impl Runtime {
    /// A runtime with the default settings (see [`Builder`]).
    pub fn new() -> Result<Runtime, Error> {
        Builder::default().build()
    }

    /// A builder with the default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` as a task in a default group and blocks the calling
    /// thread until it finishes. A panic in the task resumes here.
    ///
    /// # Panics
    /// When called from inside a task of any tiffany-sched runtime (it would
    /// block a worker, or wait on itself).
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.wait(self.spawn(future))
    }

    /// Like [`Runtime::block_on`] for a future that is not `Send`: `make`
    /// builds it on the worker.
    ///
    /// ```
    /// use std::rc::Rc;
    /// use tiffany_sched::{Runtime, yield_now};
    ///
    /// let rt = Runtime::builder().workers(1).build().unwrap();
    /// let n = rt.block_on_pinned(|| async {
    ///     let shared = Rc::new(20);
    ///     yield_now().await; // an Rc held across an await: !Send
    ///     *shared + 22
    /// });
    /// assert_eq!(n, 42);
    /// ```
    pub fn block_on_pinned<C, F>(&self, make: C) -> F::Output
    where
        C: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        self.wait(self.spawn_pinned(make))
    }

    fn wait<T>(&self, handle: JoinHandle<T>) -> T {
        assert!(
            worker::try_with_current(|_| ()).is_none(),
            "Runtime::block_on called from inside a tiffany-sched task"
        );
        match wait(handle) {
            Ok(output) => output,
            Err(err) => match err.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(err) => panic!("block_on: {err} (the runtime is shutting down)"),
            },
        }
    }
}

impl Deref for Runtime {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Runtime {
    // Joining the threads is the point of dropping a runtime. Dropping it
    // from one of its own tasks would deadlock; `Runtime` says so.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        for worker in &self.handle.shared.workers {
            let _ = worker.send(Message::Shutdown);
        }
        for thread in self.threads.drain(..) {
            // A worker thread only panics on a bug in this crate; the other
            // workers still need joining.
            let _ = thread.join();
        }
        let shared = &self.handle.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
        drop(self.io.take());
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers())
            .finish()
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Blocks the calling thread until `handle` resolves.
#[allow(clippy::disallowed_methods)] // blocking is what `block_on` is for
fn wait<T>(mut handle: JoinHandle<T>) -> Result<T, JoinError> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut handle).poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Checks after how many watchdog periods without a busy worker the
/// watchdog parks until a worker wakes.
const WATCHDOG_IDLE_CHECKS: u32 = 4;

/// The long-poll watchdog: flags a worker whose current poll was running at
/// two consecutive checks, half the long-poll threshold apart, so that every
/// poll at least as long as the threshold is caught while it runs (see
/// `worker` for what the worker does with the flag). It parks while every
/// worker sleeps.
#[allow(clippy::disallowed_methods)] // the watchdog's own thread sleeps between checks
fn watchdog_main(shared: Arc<RuntimeShared>) {
    let _ = shared.watchdog.set(thread::current());
    let period = (shared.long_poll / 2).max(Duration::from_micros(50));
    let mut last = vec![u64::MAX; shared.workers.len()];
    let mut flagged = vec![u64::MAX; shared.workers.len()];
    let mut idle_checks = 0;
    while !shared.stopping.load(Ordering::Acquire) {
        let mut any_busy = false;
        for ((worker, last), flagged) in shared.workers.iter().zip(&mut last).zip(&mut flagged) {
            let seq = worker.poll_seq.load(Ordering::Relaxed);
            if !worker.sleeping.load(Ordering::SeqCst) {
                any_busy = true;
                if seq == *last && seq != *flagged {
                    worker.flag_suspect(seq);
                    *flagged = seq;
                }
            }
            *last = seq;
        }
        if any_busy {
            idle_checks = 0;
        } else {
            idle_checks += 1;
        }
        if idle_checks < WATCHDOG_IDLE_CHECKS {
            thread::park_timeout(period);
            continue;
        }
        shared.watchdog_parked.store(true, Ordering::SeqCst);
        if shared
            .workers
            .iter()
            .all(|w| w.sleeping.load(Ordering::SeqCst))
            && !shared.stopping.load(Ordering::SeqCst)
        {
            thread::park();
        }
        shared.watchdog_parked.store(false, Ordering::SeqCst);
        idle_checks = 0;
    }
}
