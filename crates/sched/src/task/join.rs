//! The join side of a task: [`JoinHandle`] and [`JoinError`].
//!
//! Invariants: see `state` for the join waker protocol. The handle owns one
//! task reference and `JOIN_INTEREST` until it is dropped; once it has read
//! the output it never touches the stage again.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use tiffany_core::TaskId;

use super::state::{CANCELLED, COMPLETE, JOIN_INTEREST, JOIN_WAKER};
use super::{Header, TaskPtr, release, waker};

/// An owned permission to wait for a task's output.
///
/// Awaiting it yields `Ok(output)`, or a [`JoinError`] when the task was
/// cancelled or panicked. Dropping it detaches the task, which keeps running.
/// A handle can be awaited from any thread (when the output is `Send`).
///
/// ```
/// use tiffany_sched::Runtime;
///
/// let rt = Runtime::builder().workers(1).build().unwrap();
/// let handle = rt.spawn(async { 6 * 7 });
/// assert_eq!(rt.block_on(handle).unwrap(), 42);
/// ```
#[must_use = "dropping a JoinHandle detaches the task; await it or drop it explicitly"]
pub struct JoinHandle<T> {
    raw: TaskPtr,
    /// The output has been taken (the stage is `Consumed`).
    consumed: bool,
    _output: PhantomData<T>,
}

// SAFETY: the handle reads the output, which crosses threads only when `T` is
// `Send`; everything else it touches is atomic.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only allows `abort`, `id` and `is_finished`, which are atomic.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    pub(super) fn new(raw: TaskPtr) -> JoinHandle<T> {
        JoinHandle {
            raw,
            consumed: false,
            _output: PhantomData,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the handle owns a reference.
        unsafe { self.raw.as_ref() }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.header().task_id()
    }

    /// Whether the task has finished (completed, failed or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.header().state.load() & COMPLETE != 0
    }

    /// Cancels the task. Its future is dropped at its next scheduling point
    /// (promptly if it is waiting), and awaiting the handle then yields a
    /// cancelled [`JoinError`]. A task that already finished is unaffected.
    pub fn abort(&self) {
        let prev = self.header().state.fetch_or(CANCELLED);
        if prev & (COMPLETE | CANCELLED) == 0 {
            waker::wake_task(self.raw);
        }
    }

    /// Reads the output after `COMPLETE`.
    fn take_output(&mut self) -> Poll<Result<T, JoinError>> {
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: COMPLETE is set and we hold join interest, so the stage is
        // ours; `out` has the task's output type.
        unsafe { (self.header().vtable.read_output)(self.raw, (&raw mut out).cast()) };
        if out.is_pending() {
            // Polled again after the output was taken.
            panic!("JoinHandle polled after it returned Ready");
        }
        self.consumed = true;
        out
    }

    /// Stores `waker` in the join slot and publishes it. Returns false when
    /// the task completed meanwhile (the slot is then left to `dealloc`).
    fn set_join_waker(&self, waker: &Waker) -> bool {
        let header = self.header();
        // SAFETY: JOIN_WAKER is clear and COMPLETE was clear when we looked,
        // so the join side owns the slot (see `state`).
        unsafe { *header.join_waker.get() = Some(waker.clone()) };
        let mut current = header.state.load();
        loop {
            if current & COMPLETE != 0 {
                return false;
            }
            match header.state.compare_exchange(current, current | JOIN_WAKER) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Clears JOIN_WAKER so the slot can be rewritten. Returns false when the
    /// task completed meanwhile.
    fn unset_join_waker(&self) -> bool {
        let state = &self.header().state;
        let mut current = state.load();
        loop {
            if current & COMPLETE != 0 {
                return false;
            }
            match state.compare_exchange(current, current & !JOIN_WAKER) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.header().state.load();
        if state & COMPLETE != 0 {
            return self.take_output();
        }
        if state & JOIN_WAKER != 0 {
            // SAFETY: JOIN_WAKER is set, so the worker may read the slot but
            // nobody writes it; reading concurrently is fine.
            let same = unsafe { &*self.header().join_waker.get() }
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()));
            if same || !self.unset_join_waker() {
                return if self.is_finished() {
                    self.take_output()
                } else {
                    Poll::Pending
                };
            }
        }
        if self.set_join_waker(cx.waker()) {
            Poll::Pending
        } else {
            self.take_output()
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let header = self.header();
        let mut current = header.state.load();
        if current & COMPLETE != 0 {
            // The usual case: after COMPLETE nobody looks at JOIN_INTEREST,
            // and the stage is ours (usually already consumed).
            if !self.consumed {
                // SAFETY: COMPLETE is set and we still hold join interest.
                unsafe { (header.vtable.drop_output)(self.raw) };
            }
            // SAFETY: the handle owns one reference, released once here.
            unsafe { release(self.raw) };
            return;
        }
        loop {
            match header
                .state
                .compare_exchange(current, current & !JOIN_INTEREST)
            {
                Ok(prev) => {
                    if prev & COMPLETE != 0 {
                        // The output is ours and nobody will read it.
                        // SAFETY: COMPLETE was set while we held join interest.
                        unsafe { (header.vtable.drop_output)(self.raw) };
                    }
                    break;
                }
                Err(actual) => current = actual,
            }
        }
        // SAFETY: the handle owns one reference, released once here.
        unsafe { release(self.raw) }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task produced no output: it was cancelled, or it panicked.
pub struct JoinError {
    id: TaskId,
    repr: Repr,
}

enum Repr {
    Cancelled,
    // The mutex makes the payload `Sync`; boxed so a `JoinError` (and every
    // task's output slot) stays two words.
    Panic(Box<Mutex<Box<dyn Any + Send + 'static>>>),
}

impl JoinError {
    pub(crate) fn cancelled(id: TaskId) -> JoinError {
        JoinError {
            id,
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn panic(id: TaskId, payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            id,
            repr: Repr::Panic(Box::new(Mutex::new(payload))),
        }
    }

    /// The id of the task that failed.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Whether the task was cancelled (by [`JoinHandle::abort`] or at runtime
    /// shutdown).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The panic payload, for `std::panic::resume_unwind`; `Err(self)` when
    /// the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(payload) => Ok(payload.into_inner().unwrap_or_else(|e| e.into_inner())),
            Repr::Cancelled => Err(self),
        }
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<String> {
        let Repr::Panic(payload) = &self.repr else {
            return None;
        };
        let payload = payload.lock().unwrap_or_else(|e| e.into_inner());
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => write!(f, "{} was cancelled", self.id),
            Repr::Panic(_) => match self.panic_message() {
                Some(msg) => write!(f, "{} panicked: {msg}", self.id),
                None => write!(f, "{} panicked", self.id),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => write!(f, "JoinError::Cancelled({})", self.id),
            Repr::Panic(_) => write!(
                f,
                "JoinError::Panic({}, {:?})",
                self.id,
                self.panic_message()
            ),
        }
    }
}

impl std::error::Error for JoinError {}
