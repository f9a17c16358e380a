//! The parts of the `sched` workloads that do not depend on whose runtime
//! runs them: sizes, the generic task bodies, the external waker thread of
//! the priority workload, and the resident-memory probe.
//!
//! Invariants:
//! - every contender runs the very same task bodies where the body does not
//!   touch a runtime API (`yield_loop`, `background`, `record_wakes`,
//!   `idle_task`); only spawning, yielding and channels differ per contender;
//! - the external waker's gaps come from a seeded generator, so every
//!   contender and every sample sees the same sequence of gaps;
//! - [`idle_growth`] reads the resident set after every idle task has been
//!   polled once, i.e. has reached its first `await` and is parked there.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tokio::sync::mpsc;

use crate::os::page_size;
use crate::sample::percentile;
use crate::seeded::SplitMix64;

/// `sched.yield_1000tasks_ns`: `tasks` tasks spread evenly over `groups`
/// task groups (agents), each yielding `yields_per_task` times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct YieldMany {
    pub(crate) tasks: usize,
    pub(crate) yields_per_task: u64,
    pub(crate) groups: usize,
}

impl YieldMany {
    /// Every reschedule the workload performs.
    pub(crate) fn total_yields(&self) -> u64 {
        self.tasks as u64 * self.yields_per_task
    }
}

/// `sched.spawn_run_ns`: `total` empty tasks, spawned `batch` at a time from
/// inside a task, each batch awaited before the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpawnRun {
    pub(crate) batch: usize,
    pub(crate) total: usize,
}

impl SpawnRun {
    /// How many batches make up `total` (the last one may be short).
    pub(crate) fn batch_sizes(&self) -> impl Iterator<Item = usize> {
        let (batch, total) = (self.batch.max(1), self.total);
        (0..total.div_ceil(batch)).map(move |i| batch.min(total - i * batch))
    }
}

/// `sched.priority_latency_us`: a critical task woken `wakes` times from
/// another thread while `background_tasks` tasks spin `spin` per poll.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PriorityPlan {
    pub(crate) wakes: usize,
    pub(crate) background_tasks: usize,
    pub(crate) spin: Duration,
    pub(crate) min_gap_us: u64,
    pub(crate) max_gap_us: u64,
    pub(crate) seed: u64,
}

/// Yields `n` times through `yield_now`.
pub(crate) async fn yield_loop<F: Future<Output = ()>>(n: u64, yield_now: impl Fn() -> F) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// Busy-waits for `d` of wall time, like a task doing CPU work.
pub(crate) fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A background task of the priority workload: spins `spin`, yields, and
/// again, until `stop` is set.
pub(crate) async fn background<F: Future<Output = ()>>(
    stop: Arc<AtomicBool>,
    spin: Duration,
    yield_now: impl Fn() -> F,
) {
    while !stop.load(Ordering::Relaxed) {
        spin_for(spin);
        yield_now().await;
    }
}

/// The OS thread that wakes the critical task: it sends `Instant::now()`
/// every 200-1000 us (seeded) once the critical task says it is ready.
#[derive(Debug)]
pub(crate) struct ExternalWaker {
    ready: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

/// How long the waker waits for the critical task's first poll before it
/// gives up (and so closes the channel, ending the workload).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

impl ExternalWaker {
    /// Starts the thread; the returned receiver goes to [`record_wakes`].
    pub(crate) fn start(plan: &PriorityPlan) -> Result<(Self, mpsc::UnboundedReceiver<Instant>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let ready = Arc::new(AtomicBool::new(false));
        let plan = *plan;
        let thread = thread::Builder::new()
            .name("bench-waker".into())
            .spawn({
                let ready = Arc::clone(&ready);
                move || send_wakes(&plan, &ready, &tx)
            })
            .context("cannot start the waker thread")?;
        Ok((ExternalWaker { ready, thread }, rx))
    }

    /// The flag [`record_wakes`] raises on its first poll.
    pub(crate) fn ready(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    /// Waits for the thread to finish.
    // Blocking on purpose: called by the harness after the runtime returned.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn join(self) -> Result<()> {
        match self.thread.join() {
            Ok(()) => Ok(()),
            Err(_) => bail!("the waker thread panicked"),
        }
    }
}

/// The waker thread's body: waits (at most [`READY_TIMEOUT`]) for the
/// critical task's first poll, then sends `plan.wakes` timestamps with seeded
/// gaps, and returns, which closes the channel.
// Sleeping on purpose: this is a dedicated OS thread, never a worker.
#[allow(clippy::disallowed_methods)]
fn send_wakes(plan: &PriorityPlan, ready: &AtomicBool, tx: &mpsc::UnboundedSender<Instant>) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready.load(Ordering::Acquire) {
        if Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_micros(100));
    }
    let mut rng = SplitMix64(plan.seed);
    let span = plan.max_gap_us - plan.min_gap_us + 1;
    for _ in 0..plan.wakes {
        thread::sleep(Duration::from_micros(plan.min_gap_us + rng.next() % span));
        if tx.send(Instant::now()).is_err() {
            return;
        }
    }
}

/// The critical task: signals `ready`, then records how long each message
/// took from the waker's `send` to this task running, until the channel
/// closes.
pub(crate) async fn record_wakes(
    mut rx: mpsc::UnboundedReceiver<Instant>,
    ready: Arc<AtomicBool>,
    expected: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(expected);
    ready.store(true, Ordering::Release);
    while let Some(sent) = rx.recv().await {
        latencies.push(sent.elapsed());
    }
    latencies
}

/// The p50 and p99 of one sample of wake latencies, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyStats {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

impl LatencyStats {
    /// Percentiles of `latencies`, which must hold all `expected` wakes.
    pub(crate) fn of(latencies: &[Duration], expected: usize) -> Result<Self> {
        ensure!(
            latencies.len() == expected,
            "the critical task saw {} of {expected} wakes",
            latencies.len()
        );
        let mut us: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        match (percentile(&us, 50.0), percentile(&us, 99.0)) {
            (Some(p50_us), Some(p99_us)) => Ok(LatencyStats { p50_us, p99_us }),
            _ => bail!("no wakes recorded"),
        }
    }
}

/// Idle tasks that have reached their first `await`. Only used inside a
/// child process, which runs one measurement, so a global is enough.
static IDLE_READY: AtomicUsize = AtomicUsize::new(0);

/// An idle task: counts itself as parked, then waits for `wake` (a oneshot
/// receive) and ends.
pub(crate) async fn idle_task<F: Future>(wake: F) {
    IDLE_READY.fetch_add(1, Ordering::Relaxed);
    let _ = wake.await;
}

/// Measures resident-set growth per idle task: spawns `tasks` idle tasks
/// with `spawn_waiter` (which creates a oneshot, spawns [`idle_task`] on its
/// receiver and returns the sender), yields until all are parked, and reads
/// `/proc/self/statm` before and after.
///
/// The senders are kept in a vector of `Option`s that is written in full
/// before the first reading, so the vector's own pages are not counted.
pub(crate) async fn idle_growth<Tx, Y: Future<Output = ()>>(
    tasks: usize,
    mut spawn_waiter: impl FnMut() -> Tx,
    yield_now: impl Fn() -> Y,
) -> Result<f64> {
    ensure!(tasks > 0, "no idle tasks to measure");
    let mut senders: Vec<Option<Tx>> = (0..tasks).map(|_| None).collect();
    IDLE_READY.store(0, Ordering::Relaxed);
    let before = resident_bytes()?;
    for slot in &mut senders {
        *slot = Some(spawn_waiter());
    }
    while IDLE_READY.load(Ordering::Relaxed) < tasks {
        yield_now().await;
    }
    let after = resident_bytes()?;
    drop(senders);
    Ok(after.saturating_sub(before) as f64 / tasks as f64)
}

/// This process's resident set size, from `/proc/self/statm`.
// Read inside a task on purpose: the reading must be taken on the worker,
// between spawns, and /proc/self/statm is generated by the kernel, not disk.
#[allow(clippy::disallowed_methods)]
pub(crate) fn resident_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .context("cannot read /proc/self/statm (resident-memory metrics need Linux)")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("unexpected /proc/self/statm: {statm:?}"))?;
    Ok(pages * page_size()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_spawn_batches_cover_the_total() {
        let sizes: Vec<usize> = SpawnRun {
            batch: 1000,
            total: 2500,
        }
        .batch_sizes()
        .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!(
            SpawnRun {
                batch: 10,
                total: 30
            }
            .batch_sizes()
            .sum::<usize>(),
            30
        );
    }

    #[test]
    fn workload_latency_stats_need_every_wake() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let stats = LatencyStats::of(&lat, 100).unwrap();
        assert!((stats.p50_us - 50.0).abs() < 1e-6, "{stats:?}");
        assert!((stats.p99_us - 99.0).abs() < 1e-6, "{stats:?}");
        assert!(LatencyStats::of(&lat, 101).is_err());
    }

    #[test]
    fn workload_resident_bytes_reads_statm() {
        assert!(resident_bytes().unwrap() > 0);
    }
}
