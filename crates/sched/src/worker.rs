//! One worker: a single-threaded executor that owns a set of task groups.
//!
//! Invariants:
//! - [`WorkerLocal`] lives on its worker thread (or, in the deterministic
//!   mode, on the thread driving it) and is reachable only through the
//!   thread-local `CONTEXT` while that thread runs it.
//! - No `RefCell` of `WorkerLocal` is borrowed while user code runs (polling
//!   a future, dropping one, waking a waker); every borrow is a short,
//!   self-contained step. A violation panics rather than corrupting state.
//! - A task is in exactly one of these places: a run queue (`QUEUED`), its
//!   group's parked list (`PARKED`), being polled (`RUNNING`), waiting (no
//!   flag), or done (`DONE`, off every list). The `ready`, `parked` and
//!   `waiting` gauges of its group follow these moves.
//! - Cross-thread wakes, spawns and control messages arrive through the
//!   inbox. `attention` is set after a message is pushed and is checked
//!   after every poll, so a message waits at most one poll. A worker about to
//!   sleep sets `sleeping` and re-checks `attention` (both `SeqCst`); a sender
//!   sets `attention` and then reads `sleeping` (both `SeqCst`), so one of the
//!   two always sees the other and no wake-up is lost.
//! - An explicit yield touches only this thread's memory: no lock, no
//!   atomic read-modify-write, no system call.
//! - Time is read once per *window* of polls, not per poll: a window closes
//!   after `window_len` polls (adapted so a window lasts about
//!   [`WINDOW_TARGET_NANOS`], between 1 and [`MAX_WINDOW`] polls), before
//!   the worker sleeps, or when the watchdog flags the running poll. The
//!   worker's busy time is the exact sum of its windows; each poll is
//!   charged the previous window's average (`poll_estimate`) in its agent's
//!   busy time and poll histogram. Reading the TSC costs about as much as
//!   the rest of a yield, so this halves the cost of a yield; with polls
//!   longer than the target a window holds one poll and every poll is
//!   timed exactly.
//! - Long polls: a poll that was running at two consecutive watchdog checks
//!   (half a threshold apart) is flagged; the worker then closes the window
//!   right after it, so a poll of at least the threshold is always reported,
//!   with a duration that may include the short polls before it in the same
//!   window.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use crate::feedback::{LongPoll, Stat, bucket_of};
use crate::group::GroupShared;
use crate::queue::RunQueue;
use crate::rng::SplitMix64;
use crate::runtime::RuntimeShared;
use crate::task::state::{CANCELLED, COMPLETE, REMOTE_NOTIFIED};
use crate::task::waker::WakerRef;
use crate::task::{self, JoinHandle, NewTask, PollOutcome, TaskPtr, TaskRef, local};
use crate::timer::{TimerKey, Timers};
use crate::{CLASSES, Priority};

/// A message to a worker from another thread.
pub(crate) enum Message {
    /// Wake this task (it holds a reference for the trip).
    Wake(TaskRef),
    /// Run this new task.
    Spawn(TaskRef),
    /// Park (`park` true) or unpark the classes in `mask`, for one group
    /// (worker-local index) or, with `None`, for every group of the worker.
    Park {
        group: Option<u32>,
        mask: u8,
        park: bool,
    },
    /// Stop: cancel every task and exit.
    Shutdown,
}

#[derive(Default)]
struct Inbox {
    messages: Vec<Message>,
    closed: bool,
}

/// The part of a worker other threads can reach.
pub(crate) struct WorkerShared {
    pub(crate) index: usize,
    /// Unique among all workers of all runtimes of this process.
    uid: u64,
    /// [`INBOX`] and [`SUSPECT`] bits: something for the worker to look at.
    attention: AtomicU8,
    pub(crate) sleeping: AtomicBool,
    /// Sequence number of the current (or last) poll, for the watchdog.
    pub(crate) poll_seq: AtomicU64,
    /// The poll sequence number the watchdog flagged as running too long.
    suspect: AtomicU64,
    inbox: Mutex<Inbox>,
    thread: OnceLock<Thread>,
    groups: AtomicU32,
    remote_sequence: AtomicU64,
    pub(crate) idle_nanos: Stat,
    /// Time spent polling: the exact sum of the worker's timing windows.
    pub(crate) busy_nanos: Stat,
    pub(crate) started_at: AtomicU64,
}

impl WorkerShared {
    pub(crate) fn new(index: usize) -> WorkerShared {
        static NEXT_UID: AtomicU64 = AtomicU64::new(0);
        WorkerShared {
            index,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            attention: AtomicU8::new(0),
            sleeping: AtomicBool::new(false),
            poll_seq: AtomicU64::new(0),
            suspect: AtomicU64::new(u64::MAX),
            inbox: Mutex::new(Inbox::default()),
            thread: OnceLock::new(),
            groups: AtomicU32::new(0),
            remote_sequence: AtomicU64::new(0),
            idle_nanos: Stat::default(),
            busy_nanos: Stat::default(),
            started_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn next_group_index(&self) -> u32 {
        self.groups.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn group_count(&self) -> usize {
        self.groups.load(Ordering::Relaxed) as usize
    }

    /// Delivers `message`; hands it back when the worker has shut down.
    pub(crate) fn send(&self, message: Message) -> Result<(), Message> {
        {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            if inbox.closed {
                return Err(message);
            }
            inbox.messages.push(message);
        }
        self.attention.fetch_or(INBOX, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
        Ok(())
    }

    /// Called by the watchdog: poll `seq` has been running for at least half
    /// the long-poll threshold.
    pub(crate) fn flag_suspect(&self, seq: u64) {
        self.suspect.store(seq, Ordering::Relaxed);
        self.attention.fetch_or(SUSPECT, Ordering::Release);
    }

    /// A task id for a task spawned from another thread.
    fn remote_task_id(&self) -> u64 {
        let seq = self.remote_sequence.fetch_add(1, Ordering::Relaxed);
        task_id(self.index, (1 << 47) | seq)
    }
}

/// `attention` bit: the inbox has messages.
const INBOX: u8 = 1 << 0;
/// `attention` bit: the watchdog flagged the running poll.
const SUSPECT: u8 = 1 << 1;

/// A timing window aims to last this long.
const WINDOW_TARGET_NANOS: u64 = 2_000;
/// Most polls in one timing window.
const MAX_WINDOW: usize = 64;

/// Task ids: worker index + 1 in the high 16 bits, then a sequence number
/// (bit 47 set for tasks spawned from other threads).
fn task_id(worker: usize, seq: u64) -> u64 {
    ((worker as u64 + 1) << 48) | (seq & ((1 << 48) - 1))
}

/// Where the wake being processed came from, for the wait histograms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WakeSource {
    Local,
    Timer,
    Remote,
}

/// Per-group state only the worker touches.
#[derive(Default)]
struct GroupLocal {
    parked_mask: u8,
    parked: Vec<TaskPtr>,
}

/// Owner-only slab of the worker's incomplete tasks; each entry is the
/// worker's reference to the task.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<TaskRef>>,
    free: Vec<u32>,
}

impl Slab {
    fn insert(&mut self, task: TaskRef) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.entries.get_mut(slot as usize) {
                    *entry = Some(task);
                }
                slot
            }
            None => {
                self.entries.push(Some(task));
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn remove(&mut self, slot: u32) -> Option<TaskRef> {
        let task = self.entries.get_mut(slot as usize)?.take();
        if task.is_some() {
            self.free.push(slot);
        }
        task
    }

    fn take_all(&mut self) -> Vec<TaskRef> {
        self.free.clear();
        self.entries.drain(..).flatten().collect()
    }
}

thread_local! {
    static CONTEXT: Cell<*const WorkerLocal> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with the worker driven by this thread.
///
/// # Panics
/// When this thread is not running a tiffany-sched worker.
pub(crate) fn with_current<R>(f: impl FnOnce(&WorkerLocal) -> R) -> R {
    try_with_current(f)
        .unwrap_or_else(|| panic!("must be called from a task running on a tiffany-sched runtime"))
}

/// Runs `f` with the worker driven by this thread, if any.
pub(crate) fn try_with_current<R>(f: impl FnOnce(&WorkerLocal) -> R) -> Option<R> {
    let local = CONTEXT.with(Cell::get);
    // SAFETY: CONTEXT is non-null only while `enter` keeps the worker alive
    // on this thread.
    unsafe { local.as_ref() }.map(f)
}

/// The yield fast path: when `waker` belongs to the task running on this
/// thread, marks it to run again and returns true (no call through the
/// waker's vtable). Any other waker must be woken the ordinary way.
#[inline(always)]
pub(crate) fn notify_running(waker: &Waker) -> bool {
    let local = CONTEXT.with(Cell::get);
    // SAFETY: as in `try_with_current`.
    let Some(local) = (unsafe { local.as_ref() }) else {
        return false;
    };
    match local.current.get() {
        Some(ptr)
            if ptr::eq(waker.data(), ptr.as_ptr().cast_const().cast())
                && task::waker::is_task_waker(waker) =>
        {
            // SAFETY: the running task is live.
            let header = unsafe { ptr.as_ref() };
            header.local.set(header.local.get() | local::NOTIFIED);
            true
        }
        _ => false,
    }
}

/// Wakes a live task from any thread.
#[inline]
pub(crate) fn wake_task(ptr: TaskPtr) {
    // SAFETY: callers hold or borrow a reference.
    let header = unsafe { ptr.as_ref() };
    let owner: *const WorkerShared = Arc::as_ptr(&header.group().worker);
    let local = CONTEXT.with(Cell::get);
    // SAFETY: as in `try_with_current`.
    if let Some(local) = unsafe { local.as_ref() } {
        if ptr::eq(Arc::as_ptr(&local.shared), owner) {
            local.wake_local(ptr);
            return;
        }
    }
    let prev = header.state.fetch_or(REMOTE_NOTIFIED);
    if prev & (REMOTE_NOTIFIED | COMPLETE) != 0 {
        return;
    }
    // SAFETY: the task is live; the inbox entry owns the new reference.
    let task = unsafe { TaskRef::clone_from_ptr(ptr) };
    // A worker that has shut down has cancelled its tasks: drop the wake.
    let _ = header.group().worker.send(Message::Wake(task));
}

/// Spawns a `Send` future in `group` from any thread.
pub(crate) fn spawn_in_group<F>(
    group: &Arc<GroupShared>,
    priority: Priority,
    future: F,
) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // SAFETY: the future is `Send`.
    unsafe { submit(group, priority, future) }
}

/// Spawns the future built by `make` in `group`, from any thread. `make`
/// runs on the group's worker at the task's first poll, so the future may
/// be `!Send`.
pub(crate) fn spawn_pinned_in_group<C, F>(
    group: &Arc<GroupShared>,
    priority: Priority,
    make: C,
) -> JoinHandle<F::Output>
where
    C: FnOnce() -> F + Send + 'static,
    F: Future + 'static,
    F::Output: Send + 'static,
{
    // SAFETY: until its first poll, on the worker, a `Pinned` holds only the
    // `Send` closure; the `!Send` future is created, polled and dropped on
    // the worker (see `task` for why the stage never leaves its owner).
    unsafe { submit(group, priority, Pinned::Make(Some(make))) }
}

/// Hands `future` to `group`'s worker: a local spawn on that worker's own
/// thread, otherwise a trip through its inbox as a task pointer. When the
/// worker has shut down, the future is dropped here and the handle reports
/// cancellation.
///
/// # Safety
/// `future` may be moved to the worker's thread and may be dropped on the
/// calling thread before it was ever polled.
unsafe fn submit<F>(
    group: &Arc<GroupShared>,
    priority: Priority,
    future: F,
) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: Send + 'static,
{
    let owner: *const WorkerShared = Arc::as_ptr(&group.worker);
    let local = CONTEXT.with(Cell::get);
    // SAFETY: as in `try_with_current`.
    if let Some(local) = unsafe { local.as_ref() } {
        if ptr::eq(Arc::as_ptr(&local.shared), owner) {
            return local.spawn(future, Arc::clone(group), priority);
        }
    }
    let id = group.worker.remote_task_id();
    let NewTask { owner, join } = task::allocate(future, Arc::clone(group), priority, id);
    if let Err(Message::Spawn(task)) = group.worker.send(Message::Spawn(owner)) {
        // SAFETY: no worker accepted the task, so we hold its only owner
        // reference; dropping its unpolled future here is allowed by the
        // caller's contract.
        unsafe {
            task::cancel(task.ptr());
            task::complete(task.ptr());
        }
    }
    join
}

/// A future built on first poll by a closure.
enum Pinned<C, F> {
    Make(Option<C>),
    Run(F),
}

impl<C, F> Future for Pinned<C, F>
where
    C: FnOnce() -> F,
    F: Future,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> std::task::Poll<F::Output> {
        // SAFETY: `Run(F)` is structurally pinned: once built, the future is
        // never moved out or replaced until `self` is dropped.
        let this = unsafe { self.get_unchecked_mut() };
        if let Pinned::Make(make) = this {
            match make.take() {
                Some(make) => *this = Pinned::Run(make()),
                None => unreachable!("Pinned::Make without a closure"),
            }
        }
        match this {
            // SAFETY: see above.
            Pinned::Run(future) => unsafe { std::pin::Pin::new_unchecked(future) }.poll(cx),
            Pinned::Make(_) => unreachable!("built above"),
        }
    }
}

/// Spawns on the current worker, in the current task's group, inheriting
/// its priority unless `priority` is given.
pub(crate) fn spawn_local<F>(priority: Option<Priority>, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    with_current(|local| {
        let (group, inherited) = local.current_group();
        local.spawn(future, group, priority.unwrap_or(inherited))
    })
}

/// A worker's executor state.
pub(crate) struct WorkerLocal {
    shared: Arc<WorkerShared>,
    runtime: Arc<RuntimeShared>,
    now: Cell<u64>,
    current: Cell<Option<TaskPtr>>,
    wake_source: Cell<WakeSource>,
    queue: RefCell<RunQueue>,
    slab: RefCell<Slab>,
    timers: RefCell<Timers>,
    next_deadline: Cell<u64>,
    groups: RefCell<Vec<GroupLocal>>,
    node_parked: Cell<u8>,
    park_active: Cell<bool>,
    sequence: Cell<u64>,
    rng: Option<RefCell<SplitMix64>>,
    scratch: RefCell<Vec<Message>>,
    shutting_down: Cell<bool>,
    long_poll_nanos: u64,
    /// Clock reading that opened the current timing window.
    window_start: Cell<u64>,
    /// Polls in the current window so far.
    window_count: Cell<usize>,
    /// Polls after which the current window closes (1 ..= MAX_WINDOW).
    window_len: Cell<usize>,
    /// Whether windows adapt (false: one poll per window, for manual clocks).
    window_adapts: bool,
    /// Estimated duration of one poll (ns): the last window's average.
    poll_estimate: Cell<u64>,
    /// Histogram bucket of `poll_estimate`.
    estimate_bucket: Cell<usize>,
    poll_seq: Cell<u64>,
}

impl WorkerLocal {
    pub(crate) fn new(
        shared: Arc<WorkerShared>,
        runtime: Arc<RuntimeShared>,
        seed: Option<u64>,
    ) -> WorkerLocal {
        let now = runtime.clock.now_nanos();
        let manual = runtime.clock.is_manual();
        shared.started_at.store(now, Ordering::Relaxed);
        WorkerLocal {
            queue: RefCell::new(RunQueue::new(runtime.policy)),
            long_poll_nanos: u64::try_from(runtime.long_poll.as_nanos()).unwrap_or(u64::MAX),
            shared,
            runtime,
            now: Cell::new(now),
            current: Cell::new(None),
            wake_source: Cell::new(WakeSource::Local),
            slab: RefCell::default(),
            timers: RefCell::default(),
            next_deadline: Cell::new(u64::MAX),
            groups: RefCell::default(),
            node_parked: Cell::new(0),
            park_active: Cell::new(false),
            sequence: Cell::new(0),
            rng: seed.map(|s| RefCell::new(SplitMix64::new(s))),
            scratch: RefCell::default(),
            shutting_down: Cell::new(false),
            window_start: Cell::new(now),
            window_count: Cell::new(0),
            window_len: Cell::new(1),
            window_adapts: !manual,
            poll_estimate: Cell::new(0),
            estimate_bucket: Cell::new(0),
            poll_seq: Cell::new(0),
        }
    }

    pub(crate) fn runtime(&self) -> &Arc<RuntimeShared> {
        &self.runtime
    }

    /// Makes this worker the current one of this thread while `f` runs.
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Reset(*const WorkerLocal);
        impl Drop for Reset {
            fn drop(&mut self) {
                CONTEXT.with(|c| c.set(self.0));
            }
        }
        let previous = CONTEXT.with(|c| c.replace(self));
        let _reset = Reset(previous);
        f()
    }

    /// The unique id of this worker.
    pub(crate) fn uid(&self) -> u64 {
        self.shared.uid
    }

    /// The time at the start of the current poll (ns on the runtime clock).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.now.get()
    }

    fn refresh_now(&self) -> u64 {
        let now = self.runtime.clock.now_nanos();
        self.now.set(now);
        now
    }

    /// The group and priority of the running task, or the worker's default
    /// group when no task is running.
    fn current_group(&self) -> (Arc<GroupShared>, Priority) {
        match self.current.get() {
            Some(ptr) => {
                // SAFETY: the running task is live.
                let header = unsafe { ptr.as_ref() };
                (header.group_arc(), header.priority)
            }
            None => (
                self.runtime.default_group(self.shared.index),
                Priority::Normal,
            ),
        }
    }

    pub(crate) fn current_task(&self) -> Option<TaskPtr> {
        self.current.get()
    }

    pub(crate) fn spawn<F>(
        &self,
        future: F,
        group: Arc<GroupShared>,
        priority: Priority,
    ) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let seq = self.sequence.get();
        self.sequence.set(seq + 1);
        let NewTask { owner, join } =
            task::allocate(future, group, priority, task_id(self.shared.index, seq));
        self.accept(owner);
        join
    }

    /// Takes ownership of a new task and queues it.
    fn accept(&self, task: TaskRef) {
        let ptr = task.ptr();
        let header = task.header();
        let stats = &header.group().stats;
        stats.spawned.add(1);
        if self.shutting_down.get() {
            // SAFETY: we own the new task and it was never polled.
            unsafe {
                task::cancel(ptr);
                task::complete(ptr);
            }
            stats.cancelled.add(1);
            return;
        }
        self.mark_ready(header);
        let slot = self.slab.borrow_mut().insert(task);
        // SAFETY: the slab keeps the task live.
        unsafe { ptr.as_ref() }.slot.set(slot);
        self.queue.borrow_mut().push(ptr);
    }

    /// A wake on the owner thread.
    #[inline(always)]
    pub(crate) fn wake_local(&self, ptr: TaskPtr) {
        // SAFETY: wakers hold or borrow a reference.
        let header = unsafe { ptr.as_ref() };
        let flags = header.local.get();
        if flags & (local::QUEUED | local::PARKED | local::DONE) != 0 {
            if flags & local::PARKED != 0 && header.state.load() & CANCELLED != 0 {
                // Aborted while parked: cancel it now, not at unpark.
                self.release_cancelled(ptr);
            }
            return;
        }
        if flags & local::RUNNING != 0 {
            header.local.set(flags | local::NOTIFIED);
            return;
        }
        let stats = &header.group().stats;
        let now = self.now.get();
        let waited = now.saturating_sub(header.stamp.get());
        match self.wake_source.get() {
            WakeSource::Local => {}
            WakeSource::Timer => stats.timer_wait.record(waited),
            WakeSource::Remote => stats.io_wait.record(waited),
        }
        stats.waiting.sub(1);
        if flags & local::TIMER_WAIT != 0 {
            stats.waiting_timer.sub(1);
        }
        self.mark_ready(header);
        self.queue.borrow_mut().push(ptr);
    }

    /// Marks the running task as waiting on a timer (called by `Sleep`).
    pub(crate) fn note_timer_wait(&self) {
        if let Some(ptr) = self.current.get() {
            // SAFETY: the running task is live.
            let header = unsafe { ptr.as_ref() };
            header.local.set(header.local.get() | local::TIMER_WAIT);
        }
    }

    pub(crate) fn register_timer(&self, deadline: u64, waker: Waker) -> TimerKey {
        let key = self.timers.borrow_mut().register(deadline, waker);
        if deadline < self.next_deadline.get() {
            self.next_deadline.set(deadline);
        }
        key
    }

    pub(crate) fn update_timer(&self, key: TimerKey, waker: &Waker) {
        self.timers.borrow_mut().update(key, waker);
    }

    pub(crate) fn cancel_timer(&self, key: TimerKey) {
        let waker = self.timers.borrow_mut().cancel(key);
        drop(waker);
    }

    /// Number of armed timers.
    pub(crate) fn timer_count(&self) -> usize {
        self.timers.borrow().len()
    }

    /// The earliest armed timer's deadline, `u64::MAX` when none.
    pub(crate) fn next_timer(&self) -> u64 {
        self.timers.borrow_mut().next_deadline()
    }

    fn pop(&self) -> Option<TaskPtr> {
        loop {
            let task = {
                let mut queue = self.queue.borrow_mut();
                match &self.rng {
                    Some(rng) => queue.pop_seeded(&mut rng.borrow_mut()),
                    None => queue.pop(),
                }
            }?;
            if !self.park_active.get() || !self.is_parked(task) {
                return Some(task);
            }
            self.park_task(task);
        }
    }

    /// Moves an aborted task from its group's parked list back to the run
    /// queue, where `pop` lets it through (cancelled tasks are never parked)
    /// to be cancelled.
    fn release_cancelled(&self, ptr: TaskPtr) {
        // SAFETY: parked tasks are live.
        let header = unsafe { ptr.as_ref() };
        let index = header.group().local_index as usize;
        let found = {
            let mut groups = self.groups.borrow_mut();
            groups.get_mut(index).and_then(|g| {
                let at = g.parked.iter().position(|&p| p == ptr)?;
                Some(g.parked.swap_remove(at))
            })
        };
        if found.is_some() {
            let stats = &header.group().stats;
            stats.parked.sub(1);
            self.mark_ready(header);
            self.queue.borrow_mut().push(ptr);
        }
    }

    /// Flags a task as queued and counts it ready, noting when its group
    /// went from no ready task to some (for live starvation).
    #[inline]
    fn mark_ready(&self, header: &task::Header) {
        let now = self.now.get();
        header.local.set(local::QUEUED);
        header.stamp.set(now);
        let stats = &header.group().stats;
        if stats.ready.get() == 0 {
            stats.ready_since.set(now);
        }
        stats.ready.add(1);
    }

    fn is_parked(&self, ptr: TaskPtr) -> bool {
        // SAFETY: queued tasks are live.
        let header = unsafe { ptr.as_ref() };
        if header.state.load() & CANCELLED != 0 {
            return false;
        }
        let bit = header.priority.bit();
        if self.node_parked.get() & bit != 0 {
            return true;
        }
        let index = header.group().local_index as usize;
        self.groups
            .borrow()
            .get(index)
            .is_some_and(|g| g.parked_mask & bit != 0)
    }

    fn park_task(&self, ptr: TaskPtr) {
        // SAFETY: queued tasks are live.
        let header = unsafe { ptr.as_ref() };
        header.local.set(local::PARKED);
        let stats = &header.group().stats;
        stats.ready.sub(1);
        stats.parked.add(1);
        let index = header.group().local_index as usize;
        let mut groups = self.groups.borrow_mut();
        if groups.len() <= index {
            groups.resize_with(index + 1, GroupLocal::default);
        }
        if let Some(group) = groups.get_mut(index) {
            group.parked.push(ptr);
        }
    }

    fn apply_park(&self, group: Option<u32>, mask: u8, park: bool) {
        let apply = |current: u8| {
            if park {
                current | mask
            } else {
                current & !mask
            }
        };
        let mut released = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            match group {
                None => {
                    self.node_parked.set(apply(self.node_parked.get()));
                    for g in groups.iter_mut() {
                        release_parked(g, self.node_parked.get(), &mut released);
                    }
                }
                Some(index) => {
                    let index = index as usize;
                    if groups.len() <= index {
                        groups.resize_with(index + 1, GroupLocal::default);
                    }
                    if let Some(g) = groups.get_mut(index) {
                        g.parked_mask = apply(g.parked_mask);
                        release_parked(g, self.node_parked.get(), &mut released);
                    }
                }
            }
            let any = self.node_parked.get() != 0 || groups.iter().any(|g| g.parked_mask != 0);
            self.park_active.set(any);
        }
        let mut queue = self.queue.borrow_mut();
        for ptr in released {
            // SAFETY: parked tasks are live.
            let header = unsafe { ptr.as_ref() };
            header.group().stats.parked.sub(1);
            self.mark_ready(header);
            queue.push(ptr);
        }
    }

    /// Polls the next ready task. False when nothing is ready.
    #[inline]
    pub(crate) fn tick(&self) -> bool {
        let Some(ptr) = self.pop() else {
            return false;
        };
        self.poll_task(ptr);
        if self.shared.attention.load(Ordering::Relaxed) != 0
            || self.now.get() >= self.next_deadline.get()
        {
            self.maintenance();
        }
        true
    }

    fn poll_task(&self, ptr: TaskPtr) {
        // SAFETY: queued tasks are live; the slab holds a reference until we
        // complete the task below.
        let header = unsafe { ptr.as_ref() };
        let group = header.group();
        let stats = &group.stats;
        let start = self.now.get();
        let waited = start.saturating_sub(header.stamp.get());
        stats.ready_wait.record(waited);
        stats.ready_wait_max.max(waited);
        // The agent is being served: its live starvation clock restarts.
        stats.ready_since.set(start);
        if header.state.load() & CANCELLED != 0 {
            stats.ready.sub(1);
            header.local.set(local::RUNNING);
            // SAFETY: owner thread, task incomplete.
            unsafe { task::cancel(ptr) };
            self.finish(ptr, PollOutcome::Pending);
            return;
        }
        header.local.set(local::RUNNING);
        self.current.set(Some(ptr));
        let seq = self.poll_seq.get().wrapping_add(1);
        self.poll_seq.set(seq);
        self.shared.poll_seq.store(seq, Ordering::Relaxed);
        // SAFETY: the slab's reference keeps the task live during the poll.
        let waker = unsafe { WakerRef::new(ptr) };
        let mut cx = Context::from_waker(&waker);
        // SAFETY: owner thread, task incomplete.
        let outcome = unsafe { task::poll(ptr, &mut cx) };
        self.current.set(None);
        stats.polls.add(1);
        self.note_poll(header, seq);
        if outcome != PollOutcome::Pending {
            stats.ready.sub(1);
            self.finish(ptr, outcome);
            return;
        }
        let flags = header.local.get();
        header.stamp.set(self.now.get());
        if flags & local::NOTIFIED != 0 {
            // Still ready: `ready` counts it already.
            header.local.set(local::QUEUED);
            self.queue.borrow_mut().push(ptr);
        } else {
            header.local.set(flags & local::TIMER_WAIT);
            stats.ready.sub(1);
            stats.waiting.add(1);
            if flags & local::TIMER_WAIT != 0 {
                stats.waiting_timer.add(1);
            }
        }
    }

    /// Records a finished poll: charges it the current per-poll estimate and
    /// closes the timing window when it is full or when the watchdog flagged
    /// this poll.
    #[inline(always)]
    fn note_poll(&self, header: &task::Header, seq: u64) {
        let stats = &header.group().stats;
        stats.busy_nanos.add(self.poll_estimate.get());
        stats.poll_time.record_in(self.estimate_bucket.get());
        let count = self.window_count.get() + 1;
        self.window_count.set(count);
        if self.shared.attention.load(Ordering::Relaxed) & SUSPECT != 0 {
            self.shared.attention.fetch_and(!SUSPECT, Ordering::Relaxed);
            let flagged = self.shared.suspect.load(Ordering::Relaxed) == seq;
            self.close_window(Some((header, flagged)));
        } else if count >= self.window_len.get() {
            self.close_window(Some((header, false)));
        }
    }

    /// Reads the clock, adds the window's time to the worker's busy time and
    /// derives the next per-poll estimate. `last` is the task of the window's
    /// last poll and whether the watchdog flagged it: when the window held
    /// only that poll, or it was flagged, and the window reached the
    /// long-poll threshold, that poll is charged the window's time instead of
    /// the estimate and reported.
    #[cold]
    #[inline(never)]
    fn close_window(&self, last: Option<(&task::Header, bool)>) {
        let count = self.window_count.get();
        let end = self.refresh_now();
        if count == 0 {
            self.window_start.set(end);
            return;
        }
        let took = end.saturating_sub(self.window_start.get());
        self.shared.busy_nanos.add(took);
        let blame = match last {
            Some((header, flagged)) if took >= self.long_poll_nanos && (flagged || count == 1) => {
                Some(header)
            }
            _ => None,
        };
        let mut per_poll = took / count as u64;
        if let Some(header) = blame {
            let stats = &header.group().stats;
            stats
                .busy_nanos
                .add(took.saturating_sub(self.poll_estimate.get()));
            stats
                .poll_time
                .move_one(self.estimate_bucket.get(), bucket_of(took));
            stats.long_polls.add(1);
            self.report_long_poll(header, took, end);
            // One outlier does not say how long the other polls take.
            per_poll = self.poll_estimate.get();
        }
        if self.window_adapts {
            let len = (WINDOW_TARGET_NANOS / per_poll.max(1)).clamp(1, MAX_WINDOW as u64);
            self.window_len.set(len as usize);
        }
        self.poll_estimate.set(per_poll);
        self.estimate_bucket.set(bucket_of(per_poll));
        self.window_count.set(0);
        self.window_start.set(end);
    }

    /// Completes a task whose stage holds its output (`Ready`, `Panicked`)
    /// or a cancellation (`Pending`).
    fn finish(&self, ptr: TaskPtr, outcome: PollOutcome) {
        // SAFETY: the slab still holds the task.
        let header = unsafe { ptr.as_ref() };
        header.local.set(local::DONE);
        let stats = &header.group().stats;
        match outcome {
            PollOutcome::Ready => stats.completed.add(1),
            PollOutcome::Panicked => stats.panicked.add(1),
            PollOutcome::Pending => stats.cancelled.add(1),
        }
        let owner = self.slab.borrow_mut().remove(header.slot.get());
        if let Some(owner) = owner {
            // SAFETY: owner thread, once, after the stage got its output;
            // `owner` is the worker's reference.
            unsafe { task::complete_and_release(owner) };
        }
    }

    #[cold]
    fn report_long_poll(&self, header: &task::Header, took: u64, at: u64) {
        let group = header.group();
        let report = LongPoll {
            task: header.task_id(),
            agent: group.id,
            agent_name: group.name.clone(),
            worker: self.shared.index,
            duration: Duration::from_nanos(took),
            at: Duration::from_nanos(at),
        };
        tracing::warn!(
            task = %report.task,
            agent = %report.agent,
            agent_name = %report.agent_name,
            worker = report.worker,
            duration_us = took / 1_000,
            "long poll: a task ran without yielding"
        );
        self.runtime.record_long_poll(report);
    }

    /// Drains the inbox and fires due timers.
    pub(crate) fn maintenance(&self) {
        // Only the INBOX bit: SUSPECT belongs to `note_poll`.
        if self.shared.attention.fetch_and(!INBOX, Ordering::Acquire) & INBOX != 0 {
            self.drain_inbox();
        }
        if self.now.get() >= self.next_deadline.get() {
            self.fire_timers();
        }
    }

    fn drain_inbox(&self) {
        let mut messages = std::mem::take(&mut *self.scratch.borrow_mut());
        {
            let mut inbox = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut inbox.messages, &mut messages);
        }
        self.wake_source.set(WakeSource::Remote);
        for message in messages.drain(..) {
            match message {
                Message::Wake(task) => {
                    task.header().state.fetch_and(!REMOTE_NOTIFIED);
                    self.wake_local(task.ptr());
                }
                Message::Spawn(task) => self.accept(task),
                Message::Park { group, mask, park } => self.apply_park(group, mask, park),
                Message::Shutdown => self.shutting_down.set(true),
            }
        }
        self.wake_source.set(WakeSource::Local);
        *self.scratch.borrow_mut() = messages;
    }

    fn fire_timers(&self) {
        let now = self.now.get();
        self.wake_source.set(WakeSource::Timer);
        loop {
            let due = self.timers.borrow_mut().pop_due(now);
            match due {
                Some(waker) => waker.wake(),
                None => break,
            }
        }
        self.wake_source.set(WakeSource::Local);
        self.next_deadline
            .set(self.timers.borrow_mut().next_deadline());
    }

    /// Runs ready tasks until none is left; returns the number of polls.
    /// Does not advance a manual clock.
    pub(crate) fn run_until_idle(&self) -> usize {
        let now = self.refresh_now();
        if self.window_count.get() == 0 {
            // Time between runs is not any poll's.
            self.window_start.set(now);
        }
        let mut polls = 0;
        loop {
            self.maintenance();
            while !self.shutting_down.get() && self.tick() {
                polls += 1;
            }
            self.maintenance();
            if self.shutting_down.get() || self.queue.borrow().is_empty() {
                return polls;
            }
        }
    }

    /// The worker thread's loop: run, sleep when idle, until shutdown.
    pub(crate) fn run(&self) {
        loop {
            self.run_until_idle();
            if self.shutting_down.get() {
                return;
            }
            self.sleep_until_work();
        }
    }

    // The worker's idle step: the one place a worker thread blocks.
    #[allow(clippy::disallowed_methods)]
    fn sleep_until_work(&self) {
        if self.window_count.get() != 0 {
            self.close_window(None);
        }
        self.shared.sleeping.store(true, Ordering::SeqCst);
        if self.shared.attention.load(Ordering::SeqCst) & INBOX == 0 {
            let start = self.refresh_now();
            let deadline = self.next_deadline.get();
            if deadline == u64::MAX {
                thread::park();
            } else if deadline > start {
                thread::park_timeout(Duration::from_nanos(deadline - start));
            }
            let end = self.refresh_now();
            self.shared.idle_nanos.add(end.saturating_sub(start));
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        self.runtime.wake_watchdog();
        let now = self.refresh_now();
        self.window_start.set(now);
    }

    /// Cancels every task and closes the inbox. Futures are dropped here, on
    /// the worker thread.
    pub(crate) fn shutdown(&self) {
        self.shutting_down.set(true);
        let pending = {
            let mut inbox = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
            inbox.closed = true;
            std::mem::take(&mut inbox.messages)
        };
        for message in pending {
            if let Message::Spawn(task) = message {
                self.accept(task);
            }
        }
        let queued = self.queue.borrow_mut().drain();
        drop(queued);
        let tasks = self.slab.borrow_mut().take_all();
        for task in &tasks {
            let header = task.header();
            let stats = &header.group().stats;
            let flags = header.local.get();
            if flags & local::QUEUED != 0 {
                stats.ready.sub(1);
            } else if flags & local::PARKED != 0 {
                stats.parked.sub(1);
            } else {
                stats.waiting.sub(1);
                if flags & local::TIMER_WAIT != 0 {
                    stats.waiting_timer.sub(1);
                }
            }
            header.local.set(local::DONE);
            stats.cancelled.add(1);
            // SAFETY: owner thread; the task is incomplete and off every queue.
            unsafe {
                task::cancel(task.ptr());
                task::complete(task.ptr());
            }
        }
        // Dropping futures above may have woken tasks of ours: forget those
        // queue entries before the tasks can be freed.
        let woken = self.queue.borrow_mut().drain();
        drop(woken);
        drop(tasks);
        self.groups.borrow_mut().clear();
        let timers = std::mem::take(&mut *self.timers.borrow_mut());
        drop(timers);
    }
}

fn release_parked(group: &mut GroupLocal, node_mask: u8, released: &mut Vec<TaskPtr>) {
    let mask = group.parked_mask | node_mask;
    group.parked.retain(|&ptr| {
        // SAFETY: parked tasks are live.
        let bit = unsafe { ptr.as_ref() }.priority.bit();
        if mask & bit == 0 {
            released.push(ptr);
            false
        } else {
            true
        }
    });
}

/// The body of a worker thread.
pub(crate) fn worker_main(shared: Arc<WorkerShared>, runtime: Arc<RuntimeShared>) {
    let _ = shared.thread.set(thread::current());
    let _io = runtime.io_handle().map(|h| h.enter());
    let local = WorkerLocal::new(shared, runtime, None);
    local.enter(|| {
        local.run();
        local.shutdown();
    });
}

const _: () = assert!(CLASSES <= 8, "parking masks are u8");
