//! Timers: `sleep`, `sleep_until`, `timeout`, and the per-worker timer heap.
//!
//! Invariants:
//! - Each worker owns a [`Timers`]; a [`Sleep`] registers on the worker that
//!   polls it and remembers that worker's unique id. Polled or dropped on
//!   another worker (a future moved between workers), it leaves the old
//!   entry to fire harmlessly (a spurious wake) and registers anew, so a
//!   key is only ever used with the `Timers` that issued it.
//! - An entry is live from `register` until it fires or its `Sleep` is
//!   dropped; heap items whose generation no longer matches a live entry
//!   are stale and skipped.
//! - Timers fire in deadline order (ties in registration order), which the
//!   deterministic mode relies on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::worker;

/// A point in time on the runtime's clock (nanoseconds since it started).
///
/// In the deterministic mode this is the manual clock, so tests can reason
/// about exact instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub(crate) u64);

impl Instant {
    /// The current time of the runtime the calling task runs on.
    ///
    /// # Panics
    /// Outside a task of a tiffany-sched runtime.
    pub fn now() -> Instant {
        worker::with_current(|local| Instant(local.now()))
    }

    /// Time since the runtime started.
    pub fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, rhs: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// Waits until `duration` has passed on the runtime's clock.
///
/// The wait yields the task; the worker runs other tasks meanwhile and sleeps
/// (without spinning) when nothing else is ready.
///
/// # Panics
/// When polled outside a task of a tiffany-sched runtime.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Deadline::After(duration),
        entry: None,
    }
}

/// Waits until `deadline` on the runtime's clock.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Deadline::At(deadline.0),
        entry: None,
    }
}

/// Runs `future` for at most `duration`; `Err(Elapsed)` when time ran out
/// first (the future is then dropped with the `Timeout`).
///
/// Join with a timeout is `timeout(d, join_handle)`.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Future returned by [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Deadline,
    /// The registered timer and the unique id of the worker holding it.
    entry: Option<(TimerKey, u64)>,
}

#[derive(Clone, Copy)]
enum Deadline {
    /// Relative to the first poll.
    After(Duration),
    At(u64),
}

impl Sleep {
    fn deadline_nanos(&mut self, now: u64) -> u64 {
        let at = match self.deadline {
            Deadline::After(d) => (Instant(now) + d).0,
            Deadline::At(at) => at,
        };
        self.deadline = Deadline::At(at);
        at
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        worker::with_current(|local| {
            let deadline = this.deadline_nanos(local.now());
            let here = local.uid();
            if local.now() >= deadline {
                if let Some((key, _)) = this.entry.take().filter(|(_, uid)| *uid == here) {
                    local.cancel_timer(key);
                }
                return Poll::Ready(());
            }
            match this.entry {
                Some((key, uid)) if uid == here => local.update_timer(key, cx.waker()),
                _ => this.entry = Some((local.register_timer(deadline, cx.waker().clone()), here)),
            }
            local.note_timer_wait();
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((key, uid)) = self.entry.take() {
            worker::try_with_current(|local| {
                if local.uid() == uid {
                    local.cancel_timer(key);
                }
            });
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("registered", &self.entry.is_some())
            .finish()
    }
}

/// Future returned by [`timeout`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned (never moved out of the
        // pinned `Timeout`); `sleep` is `Unpin`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(out) = future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error of a [`timeout`] whose time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Identifies a timer entry: index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

struct Entry {
    generation: u32,
    waker: Option<Waker>,
}

/// One worker's timers.
#[derive(Default)]
pub(crate) struct Timers {
    /// (deadline, registration sequence, index, generation), min-first.
    heap: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    sequence: u64,
    live: usize,
}

impl Timers {
    pub(crate) fn register(&mut self, deadline: u64, waker: Waker) -> TimerKey {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    waker: None,
                });
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = match self.entries.get_mut(index as usize) {
            Some(entry) => {
                entry.generation = entry.generation.wrapping_add(1);
                entry.waker = Some(waker);
                entry.generation
            }
            None => 0,
        };
        self.sequence += 1;
        self.heap
            .push(Reverse((deadline, self.sequence, index, generation)));
        self.live += 1;
        TimerKey { index, generation }
    }

    fn entry_mut(&mut self, key: TimerKey) -> Option<&mut Entry> {
        self.entries
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation && e.waker.is_some())
    }

    /// Replaces the waker of a live entry.
    pub(crate) fn update(&mut self, key: TimerKey, waker: &Waker) {
        if let Some(entry) = self.entry_mut(key) {
            match &entry.waker {
                Some(current) if current.will_wake(waker) => {}
                _ => entry.waker = Some(waker.clone()),
            }
        }
    }

    /// Removes a live entry; returns its waker so the caller drops it
    /// outside any borrow.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<Waker> {
        let waker = self.entry_mut(key)?.waker.take();
        self.free.push(key.index);
        self.live -= 1;
        waker
    }

    /// The earliest live deadline, dropping stale heap items on the way;
    /// `u64::MAX` when there is none.
    pub(crate) fn next_deadline(&mut self) -> u64 {
        while let Some(Reverse((deadline, _, index, generation))) = self.heap.peek().copied() {
            let live = self
                .entries
                .get(index as usize)
                .is_some_and(|e| e.generation == generation && e.waker.is_some());
            if live {
                return deadline;
            }
            self.heap.pop();
        }
        u64::MAX
    }

    /// Removes and returns the waker of the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Waker> {
        loop {
            if self.next_deadline() > now {
                return None;
            }
            let Reverse((_, _, index, generation)) = self.heap.pop()?;
            if let Some(waker) = self.cancel(TimerKey { index, generation }) {
                return Some(waker);
            }
        }
    }

    /// Number of live timers.
    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn timers_fire_in_deadline_order_and_skip_cancelled() {
        let mut timers = Timers::default();
        let (_, w) = counting_waker();
        let late = timers.register(300, w.clone());
        let early = timers.register(100, w.clone());
        let cancelled = timers.register(200, w.clone());
        assert!(timers.cancel(cancelled).is_some());
        assert!(timers.cancel(cancelled).is_none(), "cancel is idempotent");
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next_deadline(), 100);
        assert!(timers.pop_due(99).is_none());
        assert!(timers.pop_due(100).is_some());
        assert_eq!(timers.next_deadline(), 300, "the cancelled 200 is skipped");
        assert!(timers.cancel(early).is_none(), "a fired timer is gone");
        assert!(timers.pop_due(1_000).is_some());
        assert!(timers.pop_due(1_000).is_none());
        assert!(timers.cancel(late).is_none());
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_deadline(), u64::MAX);
    }

    #[test]
    fn timers_reuse_slots_without_confusing_generations() {
        let mut timers = Timers::default();
        let (_, w) = counting_waker();
        let first = timers.register(10, w.clone());
        timers.cancel(first);
        let second = timers.register(20, w.clone());
        assert_eq!(first.index, second.index);
        assert_ne!(first.generation, second.generation);
        assert!(
            timers.cancel(first).is_none(),
            "an old key does not cancel the new entry"
        );
        assert_eq!(timers.next_deadline(), 20);
    }
}
