//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic;
use std::pin::pin;
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use tiffany_sched::{DeterministicRuntime, JoinHandle};

/// Marker carried by the message of every panic a test provokes on purpose;
/// the hook installed by [`quiet_expected_panics`] keeps those quiet.
pub(crate) const EXPECTED: &str = "[expected test panic]";

/// How long a threaded test waits for a condition before failing. A guard
/// against hangs only: no test asserts how fast anything happens.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(30);

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Further substrings that mark a panic message as expected (for panics
/// raised by code we do not control, on threads we do not control).
static EXPECTED_TEXTS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Treats panics whose message contains `text` as expected (see
/// [`quiet_expected_panics`]), from now on, on every thread.
pub(crate) fn expect_panics_containing(text: &'static str) {
    quiet_expected_panics();
    EXPECTED_TEXTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(text);
}

/// Installs, once per process, a panic hook that stays silent for expected
/// panics (message containing [`EXPECTED`] or a text registered with
/// [`expect_panics_containing`], or raised on a thread inside [`quietly`])
/// and hands every other panic to the previous hook.
///
/// The hook is process-global and tests of one binary may run in parallel
/// (`cargo test`), so it is never restored: restoring would race with other
/// tests. It only filters expected panics, so leaving it installed is safe.
pub(crate) fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let expected = payload_text(info.payload()).is_some_and(|m| {
                m.contains(EXPECTED)
                    || EXPECTED_TEXTS
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .any(|t| m.contains(t))
            });
            if !expected && !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with panics on this thread kept quiet; returns its result or the
/// panic payload.
pub(crate) fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    quiet_expected_panics();
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

/// The text of a panic payload, when it is a string.
pub(crate) fn payload_text(payload: &(dyn Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// Spawns a (possibly `!Send`) future on the deterministic runtime's worker
/// with [`tiffany_sched::spawn`] and runs until idle, so the task has had its
/// first poll when this returns.
#[allow(clippy::async_yields_async)] // handing the join handle out is the point
pub(crate) fn spawn_local<F>(rt: &DeterministicRuntime, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    rt.block_on(async move { tiffany_sched::spawn(future) })
}

/// Polls `cond` until it holds; fails the test after [`HANG_GUARD`].
#[allow(clippy::disallowed_methods)] // a plain test thread, never a task
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + HANG_GUARD;
    while !cond() {
        assert!(
            Instant::now() < give_up,
            "hang guard: gave up waiting for {what}"
        );
        thread::sleep(Duration::from_micros(200));
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `future` on the calling plain thread (no runtime), parking between
/// polls; fails the test after [`HANG_GUARD`]. Not for use inside a task.
#[allow(clippy::disallowed_methods)] // a plain test thread, never a task
pub(crate) fn poll_on_this_thread<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let give_up = Instant::now() + HANG_GUARD;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        assert!(Instant::now() < give_up, "hang guard: future not ready");
        thread::park_timeout(Duration::from_millis(100));
    }
}

/// Polls `future` once with a no-op waker.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Records whether, and on which thread, it was dropped.
#[derive(Clone, Default)]
pub(crate) struct DropProbe {
    dropped_on: Arc<Mutex<Option<String>>>,
}

impl DropProbe {
    pub(crate) fn new() -> DropProbe {
        DropProbe::default()
    }

    /// A guard to move into a future; dropping it records the thread.
    pub(crate) fn guard(&self) -> DropGuard {
        DropGuard {
            probe: self.clone(),
        }
    }

    /// The name of the thread the guard was dropped on (`<unnamed>` for an
    /// unnamed thread), or `None` while it is alive.
    pub(crate) fn dropped_on(&self) -> Option<String> {
        self.dropped_on.lock().unwrap().clone()
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped_on().is_some()
    }
}

/// See [`DropProbe::guard`].
pub(crate) struct DropGuard {
    probe: DropProbe,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        let name = thread::current().name().unwrap_or("<unnamed>").to_owned();
        *self.probe.dropped_on.lock().unwrap() = Some(name);
    }
}

/// A guard whose destructor panics (with the [`EXPECTED`] marker).
pub(crate) struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{EXPECTED} PanicOnDrop");
    }
}
