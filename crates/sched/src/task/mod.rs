//! Task memory: one heap allocation per task holding a [`Header`] followed by
//! the future (or, once finished, its output).
//!
//! Invariants:
//! - A task's memory lives until its reference count (in [`State`]) reaches
//!   zero. The owning worker keeps one reference (its slab entry) until the
//!   task completes, so a non-owning [`TaskPtr`] in a run queue or parked list
//!   always points at live memory: such pointers exist only for incomplete
//!   tasks, and a task only completes when the worker has taken it off every
//!   queue.
//! - The stage (future, then output) and every `Cell` in the header are
//!   touched only by the owning worker thread while the task is incomplete.
//!   The future is always dropped on that thread, which is what makes
//!   `!Send` futures sound. After `COMPLETE` the output belongs to the join
//!   side, which only exists on another thread when the output is `Send`.
//! - The task allocation never moves, so the future is pinned.

mod join;
pub(crate) mod state;
pub(crate) mod waker;

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tiffany_core::TaskId;

pub use join::{JoinError, JoinHandle};
use state::State;

use crate::Priority;
use crate::group::GroupShared;

/// Owner-thread flags kept in [`Header::local`].
pub(crate) mod local {
    /// In a run queue.
    pub(crate) const QUEUED: u8 = 1 << 0;
    /// Being polled right now.
    pub(crate) const RUNNING: u8 = 1 << 1;
    /// Woken while running: requeue when the poll returns `Pending`.
    pub(crate) const NOTIFIED: u8 = 1 << 2;
    /// Held back in its group's parked list.
    pub(crate) const PARKED: u8 = 1 << 3;
    /// Waiting on a timer of this worker.
    pub(crate) const TIMER_WAIT: u8 = 1 << 4;
    /// Finished: off every list, waiting only for its references to go.
    pub(crate) const DONE: u8 = 1 << 5;
}

/// The fixed-size part of every task.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) state: State,
    vtable: &'static Vtable,
    /// One strong count of the task's group, released when the memory is freed.
    group: NonNull<GroupShared>,
    pub(crate) id: u64,
    /// Owner thread: when the task became ready (queued) or started waiting.
    pub(crate) stamp: Cell<u64>,
    /// Owner thread: index of the task in the worker's slab.
    pub(crate) slot: Cell<u32>,
    /// Owner thread: [`local`] flags.
    pub(crate) local: Cell<u8>,
    pub(crate) priority: Priority,
    /// Written by the join side (see `state` for the protocol).
    join_waker: UnsafeCell<Option<Waker>>,
}

impl Header {
    /// The task's group.
    #[inline]
    pub(crate) fn group(&self) -> &GroupShared {
        // SAFETY: the header owns a strong count of its group (taken in
        // `allocate`, released in `dealloc`), so the group outlives it.
        unsafe { self.group.as_ref() }
    }

    /// A new strong reference to the task's group.
    pub(crate) fn group_arc(&self) -> Arc<GroupShared> {
        let ptr = self.group.as_ptr().cast_const();
        // SAFETY: the header owns a strong count (see `group`), so the count
        // is at least one while we add ours.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }

    pub(crate) fn task_id(&self) -> TaskId {
        TaskId(self.id)
    }
}

// The header is one cache line and a join error two words; keep them so
// (idle tasks are counted by the million, see docs/design.md).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<Header>() == 64);
    assert!(std::mem::size_of::<JoinError>() == 16);
};

/// Type-erased operations on a task, one table per future type.
struct Vtable {
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> PollOutcome,
    cancel: unsafe fn(NonNull<Header>),
    read_output: unsafe fn(NonNull<Header>, *mut ()),
    drop_output: unsafe fn(NonNull<Header>),
    dealloc: unsafe fn(NonNull<Header>),
}

#[repr(C)]
struct TaskCell<F: Future> {
    header: Header,
    stage: UnsafeCell<Stage<F>>,
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

/// A non-owning pointer to a live, incomplete task (see the module invariants).
pub(crate) type TaskPtr = NonNull<Header>;

/// An owning reference to a task: dropping it releases one reference.
pub(crate) struct TaskRef(TaskPtr);

// SAFETY: a `TaskRef` only touches the atomic reference count from foreign
// threads; everything else goes through the owner worker (module invariants).
unsafe impl Send for TaskRef {}

impl TaskRef {
    /// Takes over one reference already counted in the task's state.
    ///
    /// # Safety
    /// `ptr` must point at a live task and the caller must own one of its
    /// references.
    pub(crate) unsafe fn from_counted(ptr: TaskPtr) -> TaskRef {
        TaskRef(ptr)
    }

    /// Adds a reference to a live task.
    ///
    /// # Safety
    /// `ptr` must point at a live task.
    pub(crate) unsafe fn clone_from_ptr(ptr: TaskPtr) -> TaskRef {
        // SAFETY: live per the contract.
        unsafe { ptr.as_ref() }.state.ref_inc();
        TaskRef(ptr)
    }

    #[inline]
    pub(crate) fn ptr(&self) -> TaskPtr {
        self.0
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we own a reference, so the task is live.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: we own a reference, released exactly once here.
        unsafe { release(self.0) }
    }
}

/// Releases one reference, freeing the task when it was the last.
///
/// # Safety
/// The caller owns one reference of the live task at `ptr`.
pub(crate) unsafe fn release(ptr: TaskPtr) {
    // SAFETY: live per the contract.
    let header = unsafe { ptr.as_ref() };
    if header.state.ref_dec() {
        // SAFETY: that was the last reference; nobody else can reach the task.
        unsafe { (header.vtable.dealloc)(ptr) }
    }
}

/// What `allocate` returns: the worker's reference and the join handle.
pub(crate) struct NewTask<T> {
    pub(crate) owner: TaskRef,
    pub(crate) join: JoinHandle<T>,
}

/// Allocates a task for `future` in `group` with two references: `owner`,
/// which the worker keeps in its slab until the task completes, and the join
/// handle's.
pub(crate) fn allocate<F>(
    future: F,
    group: Arc<GroupShared>,
    priority: Priority,
    id: u64,
) -> NewTask<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    // The strong count moves into the header; `dealloc_impl` releases it.
    let group = Arc::into_raw(group).cast_mut();
    // SAFETY: `Arc::into_raw` never returns null.
    let group = unsafe { NonNull::new_unchecked(group) };
    let cell = Box::new(TaskCell {
        header: Header {
            state: State::new(2, state::JOIN_INTEREST),
            vtable: &VtableFor::<F>::VTABLE,
            group,
            id,
            stamp: Cell::new(0),
            slot: Cell::new(u32::MAX),
            local: Cell::new(0),
            priority,
            join_waker: UnsafeCell::new(None),
        },
        stage: UnsafeCell::new(Stage::Running(future)),
    });
    let ptr = NonNull::from(Box::leak(cell)).cast::<Header>();
    NewTask {
        // SAFETY: the state starts with two references: this one and the
        // join handle's.
        owner: unsafe { TaskRef::from_counted(ptr) },
        join: JoinHandle::new(ptr),
    }
}

/// What one poll of a task did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PollOutcome {
    /// The future is not done.
    Pending,
    /// The future returned its output, now in the stage.
    Ready,
    /// The future panicked; the panic is in the stage as a `JoinError`.
    Panicked,
}

/// Polls the task's future.
///
/// # Safety
/// Owner thread only; the task is live and incomplete.
pub(crate) unsafe fn poll(ptr: TaskPtr, cx: &mut Context<'_>) -> PollOutcome {
    // SAFETY: live per the contract.
    unsafe { (ptr.as_ref().vtable.poll)(ptr, cx) }
}

/// Drops the task's future and stores a cancellation error as its output.
///
/// # Safety
/// Owner thread only (or the spawning thread for a task no worker ever
/// accepted); the task is live and incomplete.
pub(crate) unsafe fn cancel(ptr: TaskPtr) {
    // SAFETY: live per the contract.
    unsafe { (ptr.as_ref().vtable.cancel)(ptr) }
}

/// Marks the task complete and hands its output to the join side, waking it.
/// Returns nothing; the caller still owns its references.
///
/// # Safety
/// Owner thread only, once, after `poll` returned true or after `cancel`.
pub(crate) unsafe fn complete(ptr: TaskPtr) {
    // SAFETY: live per the contract.
    let header = unsafe { ptr.as_ref() };
    let prev = header.state.fetch_or(state::COMPLETE);
    if prev & state::JOIN_INTEREST == 0 {
        // Nobody will read the output: drop it here, on the owner thread.
        // SAFETY: without join interest the stage is ours.
        unsafe { (header.vtable.drop_output)(ptr) };
    } else if prev & state::JOIN_WAKER != 0 {
        // SAFETY: with JOIN_WAKER set before COMPLETE, the join side no
        // longer writes the slot (see `state`).
        if let Some(waker) = unsafe { &*header.join_waker.get() } {
            waker.wake_by_ref();
        }
    }
}

/// Marks the task complete, wakes the join side, and releases the worker's
/// reference. When no join waker is registered this is one atomic
/// operation.
///
/// # Safety
/// Owner thread only, once, after `poll` returned a final outcome or after
/// `cancel`; `owner` is the worker's reference.
pub(crate) unsafe fn complete_and_release(owner: TaskRef) {
    let ptr = owner.ptr();
    let header = owner.header();
    let mut current = header.state.load();
    while current & (state::JOIN_WAKER | state::COMPLETE) == 0
        && current & state::JOIN_INTEREST != 0
    {
        // COMPLETE set and our reference dropped in one step; the join side
        // holds a reference, so this is never the last one.
        match header
            .state
            .compare_exchange(current, (current | state::COMPLETE) - state::REF_ONE)
        {
            Ok(_) => {
                std::mem::forget(owner);
                return;
            }
            Err(actual) => current = actual,
        }
    }
    // SAFETY: per the contract.
    unsafe { complete(ptr) };
    drop(owner);
}

struct VtableFor<F>(F);

impl<F: Future + 'static> VtableFor<F> {
    const VTABLE: Vtable = Vtable {
        poll: poll_impl::<F>,
        cancel: cancel_impl::<F>,
        read_output: read_output_impl::<F>,
        drop_output: drop_output_impl::<F>,
        dealloc: dealloc_impl::<F>,
    };
}

/// # Safety
/// `ptr` is a live `TaskCell<F>` and the caller has exclusive access to its stage.
unsafe fn stage<'a, F: Future>(ptr: TaskPtr) -> &'a mut Stage<F> {
    // SAFETY: per the contract; `TaskCell` is `repr(C)` with the header first.
    unsafe { &mut *ptr.cast::<TaskCell<F>>().as_ref().stage.get() }
}

/// Replaces the stage, dropping the old one. A panic while dropping (a
/// future's destructor) is caught and returned.
#[inline]
fn replace_stage<F: Future>(stage: &mut Stage<F>, new: Stage<F>) -> Option<Box<dyn Any + Send>> {
    let old = mem::replace(stage, new);
    if !mem::needs_drop::<Stage<F>>() {
        return None;
    }
    catch_unwind(AssertUnwindSafe(move || drop(old))).err()
}

unsafe fn poll_impl<F: Future>(ptr: TaskPtr, cx: &mut Context<'_>) -> PollOutcome {
    // SAFETY: owner thread, task incomplete (caller contract).
    let stage = unsafe { stage::<F>(ptr) };
    let Stage::Running(future) = stage else {
        debug_assert!(false, "polled a finished task");
        return PollOutcome::Pending;
    };
    // SAFETY: the task allocation never moves (module invariants).
    let future = unsafe { Pin::new_unchecked(future) };
    // SAFETY: live per the contract.
    let id = TaskId(unsafe { ptr.as_ref() }.id);
    let output = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Pending) => return PollOutcome::Pending,
        Ok(Poll::Ready(value)) => Ok(value),
        Err(payload) => Err(JoinError::panic(id, payload)),
    };
    if finish(stage, id, output) {
        PollOutcome::Ready
    } else {
        PollOutcome::Panicked
    }
}

/// Stores `output`, dropping the future first; a panic in the future's
/// destructor turns a successful output into a panic error. Returns whether
/// the stored output is `Ok`.
fn finish<F: Future>(
    stage: &mut Stage<F>,
    id: TaskId,
    output: Result<F::Output, JoinError>,
) -> bool {
    let output = match replace_stage(stage, Stage::Consumed) {
        Some(payload) if output.is_ok() => Err(JoinError::panic(id, payload)),
        _ => output,
    };
    let ok = output.is_ok();
    *stage = Stage::Finished(output);
    ok
}

unsafe fn cancel_impl<F: Future>(ptr: TaskPtr) {
    // SAFETY: owner thread, task incomplete (caller contract).
    let stage = unsafe { stage::<F>(ptr) };
    // SAFETY: live per the contract.
    let id = TaskId(unsafe { ptr.as_ref() }.id);
    finish(stage, id, Err(JoinError::cancelled(id)));
}

unsafe fn read_output_impl<F: Future>(ptr: TaskPtr, dst: *mut ()) {
    // SAFETY: the join side owns the stage after COMPLETE (caller contract).
    let stage = unsafe { stage::<F>(ptr) };
    let dst = dst.cast::<Poll<Result<F::Output, JoinError>>>();
    if let Stage::Finished(output) = mem::replace(stage, Stage::Consumed) {
        // SAFETY: `dst` is the `Poll<Result<T, JoinError>>` of the join handle
        // of this task, whose `T` is `F::Output`.
        unsafe { *dst = Poll::Ready(output) };
    }
}

unsafe fn drop_output_impl<F: Future>(ptr: TaskPtr) {
    // SAFETY: the caller owns the stage (see `complete` and the join handle).
    let stage = unsafe { stage::<F>(ptr) };
    // A panic in the output's destructor has nobody to report to.
    let _ = replace_stage(stage, Stage::Consumed);
}

unsafe fn dealloc_impl<F: Future>(ptr: TaskPtr) {
    // SAFETY: the last reference is gone; the box was leaked in `allocate`.
    let cell = unsafe { Box::from_raw(ptr.cast::<TaskCell<F>>().as_ptr()) };
    let group = cell.header.group;
    drop(cell);
    // SAFETY: releases the strong count leaked in `allocate`.
    drop(unsafe { Arc::from_raw(group.as_ptr().cast_const()) });
}

/// Exercises the unsafe task machinery across threads; run under Miri by
/// CI (`cargo +nightly miri test -p tiffany-sched --lib`).
#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

    use crate::{Builder, Runtime, yield_now};

    fn runtime() -> Runtime {
        Runtime::builder()
            .workers(2)
            .io(false)
            .build()
            .expect("runtime")
    }

    /// Counts drops, to check every future and output is dropped once.
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn task_output_crosses_threads_and_drops_once() {
        let rt = runtime();
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        let handle = rt.spawn(async move {
            yield_now().await;
            Tracked(d)
        });
        let output = rt.block_on(handle).expect("joined");
        drop(output);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // Detached: the output is dropped by the worker.
        let output = Tracked(drops.clone());
        drop(rt.spawn(async move {
            yield_now().await;
            output
        }));
        drop(rt);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            2,
            "detached output or future dropped once"
        );
    }

    #[test]
    fn task_woken_from_a_foreign_thread() {
        let rt = runtime();
        let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
        let fired = Arc::new(AtomicUsize::new(0));
        let (s, f) = (slot.clone(), fired.clone());
        let handle = rt.spawn(poll_fn(move |cx| {
            if f.load(Ordering::SeqCst) > 0 {
                return Poll::Ready(7);
            }
            *s.lock().expect("lock") = Some(cx.waker().clone());
            Poll::Pending
        }));
        let waker = loop {
            if let Some(w) = slot.lock().expect("lock").take() {
                break w;
            }
            std::thread::yield_now();
        };
        let thread = std::thread::spawn(move || {
            fired.store(1, Ordering::SeqCst);
            waker.wake_by_ref();
            waker.wake();
        });
        assert_eq!(rt.block_on(handle).expect("joined"), 7);
        #[allow(clippy::disallowed_methods)]
        thread.join().expect("waker thread");
    }

    #[test]
    fn task_abort_drops_the_future_on_the_worker() {
        let rt = runtime();
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = Tracked(drops.clone());
        let handle = rt.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        handle.abort();
        let err = rt.block_on(handle).expect_err("aborted");
        assert!(err.is_cancelled());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn task_panic_is_contained() {
        let rt = runtime();
        let handle = rt.spawn(async {
            yield_now().await;
            panic!("boom");
        });
        let other = rt.spawn(async { 1 });
        let err = rt.block_on(handle).expect_err("panicked");
        assert!(err.is_panic());
        assert_eq!(err.panic_message().as_deref(), Some("boom"));
        assert_eq!(rt.block_on(other).expect("other task"), 1);
    }

    #[test]
    fn task_unfinished_at_shutdown_is_cancelled() {
        let rt = runtime();
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = Tracked(drops.clone());
        let handle = rt.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        drop(rt);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let waker = Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut handle = handle;
        match std::pin::Pin::new(&mut handle).poll(&mut cx) {
            Poll::Ready(Err(err)) => assert!(err.is_cancelled()),
            other => panic!("expected cancellation, got {other:?}"),
        }
    }

    #[test]
    fn task_deterministic_runtime_runs_local_futures() {
        let rt = Builder::deterministic()
            .build_deterministic(3)
            .expect("runtime");
        let out = rt.block_on(async {
            let shared = std::rc::Rc::new(std::cell::Cell::new(0));
            let mut children = Vec::new();
            for _ in 0..4 {
                let s = shared.clone();
                children.push(crate::spawn(async move {
                    yield_now().await;
                    s.set(s.get() + 1);
                }));
            }
            for child in children {
                child.await.expect("child");
            }
            shared.get()
        });
        assert_eq!(out, 4);
    }
}
