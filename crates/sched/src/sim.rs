//! The deterministic runtime for tests: one worker driven by the calling
//! thread, a manual clock, and a seeded choice among ready tasks.
//!
//! Invariants:
//! - Nothing runs unless the test calls `run_until_idle`, `advance` or
//!   `block_on`; time moves only through `advance` (and `block_on`, which
//!   jumps to the next timer when nothing is ready).
//! - With the same seed and the same test code, every run polls the same
//!   tasks in the same order: the only sources of order are the seeded
//!   generator, the manual clock and the single thread.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tiffany_core::ManualClock;

use crate::Priority;
use crate::io::IoDriver;
use crate::runtime::Handle;
use crate::worker::WorkerLocal;

/// A single-worker runtime that runs only when told to, on the calling
/// thread, with a manual clock. Build it with [`Builder::build_deterministic`](crate::Builder::build_deterministic).
///
/// ```
/// use std::time::Duration;
/// use tiffany_sched::{Builder, sleep};
///
/// let rt = Builder::deterministic().build_deterministic(7).unwrap();
/// let h = rt.spawn(async { sleep(Duration::from_secs(60)).await; "done" });
/// rt.run_until_idle();
/// assert!(!h.is_finished());
/// rt.advance(Duration::from_secs(60));
/// assert!(h.is_finished());
/// assert_eq!(rt.block_on(h).unwrap(), "done");
/// ```
pub struct DeterministicRuntime {
    handle: Handle,
    local: Box<WorkerLocal>,
    hand: ManualClock,
    seed: u64,
    io: Option<IoDriver>,
}

impl DeterministicRuntime {
    pub(crate) fn new(
        handle: Handle,
        hand: ManualClock,
        seed: u64,
        io: Option<IoDriver>,
    ) -> DeterministicRuntime {
        let worker = handle.shared.default_group(0).worker.clone();
        let local = Box::new(WorkerLocal::new(
            worker,
            Arc::clone(&handle.shared),
            Some(seed),
        ));
        DeterministicRuntime {
            handle,
            local,
            hand,
            seed,
            io,
        }
    }

    /// The seed this runtime orders ready tasks with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The manual clock's reading: time since the runtime started.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.hand.now_nanos())
    }

    fn drive<R>(&self, f: impl FnOnce(&WorkerLocal) -> R) -> R {
        let _io = self.io.as_ref().map(|io| io.handle().enter());
        self.local.enter(|| f(&self.local))
    }

    /// Runs ready tasks until none is left, without moving the clock.
    /// Returns the number of polls.
    pub fn run_until_idle(&self) -> usize {
        self.drive(WorkerLocal::run_until_idle)
    }

    /// Moves the clock forward by `by`, stopping at each timer deadline on
    /// the way to fire it and run what it woke. Returns the number of polls.
    pub fn advance(&self, by: Duration) -> usize {
        let target = self
            .hand
            .now_nanos()
            .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
        self.drive(|local| {
            let mut polls = local.run_until_idle();
            loop {
                let next = local.next_timer();
                if next > target {
                    break;
                }
                self.hand.set(next);
                polls += local.run_until_idle();
            }
            self.hand.set(target);
            polls + local.run_until_idle()
        })
    }

    /// Runs `future` to completion on this runtime's worker, jumping the
    /// clock to the next timer whenever nothing is ready.
    ///
    /// # Panics
    /// When nothing is ready, no timer is armed, and `future` has not
    /// finished: the test would hang forever.
    pub fn block_on<F: Future + 'static>(&self, future: F) -> F::Output {
        let handle = self.drive(|local| {
            local.spawn(
                future,
                self.handle.shared.default_group(0),
                Priority::Normal,
            )
        });
        let mut handle = pin!(handle);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            self.run_until_idle();
            if let Poll::Ready(output) = handle.as_mut().poll(&mut cx) {
                return match output {
                    Ok(output) => output,
                    Err(err) => match err.try_into_panic() {
                        Ok(payload) => std::panic::resume_unwind(payload),
                        Err(err) => panic!("block_on: {err}"),
                    },
                };
            }
            let next = self.drive(|local| local.next_timer());
            assert!(
                next != u64::MAX,
                "deadlock: the future is not done, no task is ready and no timer is armed (seed {})",
                self.seed
            );
            self.advance(Duration::from_nanos(
                next.saturating_sub(self.hand.now_nanos()),
            ));
        }
    }

    /// Number of armed timers.
    pub fn timers(&self) -> usize {
        self.local.timer_count()
    }
}

impl Deref for DeterministicRuntime {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for DeterministicRuntime {
    fn drop(&mut self) {
        self.drive(WorkerLocal::shutdown);
    }
}

impl fmt::Debug for DeterministicRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeterministicRuntime")
            .field("seed", &self.seed)
            .field("now", &self.now())
            .finish()
    }
}
