//! Feedback: what each agent and each worker is doing, readable at any time
//! from any thread.
//!
//! Invariants:
//! - Every statistic has exactly one writer, the worker that owns the agent,
//!   so updates are plain relaxed load-and-store pairs (no locked
//!   instructions on the hot path). Readers see each value atomically but a
//!   snapshot is not a single consistent cut; counters only grow, so deltas
//!   between two snapshots are always meaningful.
//! - Durations are nanoseconds measured by the runtime's clock, read once
//!   per timing window of polls (see `worker`): waits are exact to within a
//!   window (about 2 us); an agent's busy time and poll-time histogram
//!   charge each poll the recent average poll time, except polls timed
//!   alone or flagged by the watchdog, which are exact; a worker's busy
//!   time is exact.
//! - Histograms have [`BUCKETS`] power-of-two buckets: bucket 0 holds
//!   values below 64 ns, bucket `i` values in `[2^(i+5), 2^(i+6))` ns, the
//!   last everything above.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tiffany_core::{AgentId, TaskId};

use crate::Priority;

/// Number of histogram buckets.
pub const BUCKETS: usize = 32;
const FIRST_BUCKET_SHIFT: u32 = 6;

/// A counter or gauge with a single writer.
#[derive(Default)]
pub(crate) struct Stat(AtomicU64);

impl Stat {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn max(&self, n: u64) {
        if n > self.0.load(Ordering::Relaxed) {
            self.0.store(n, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A log-scale histogram of nanosecond durations with a single writer.
pub(crate) struct Histogram {
    buckets: [Stat; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| Stat::default()),
        }
    }
}

/// The bucket a duration of `nanos` falls in.
#[inline]
pub(crate) fn bucket_of(nanos: u64) -> usize {
    let log = 63 - (nanos | 1).leading_zeros();
    (log.saturating_sub(FIRST_BUCKET_SHIFT - 1) as usize).min(BUCKETS - 1)
}

/// The smallest value (ns) that falls in bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1u64 << (i as u32 + FIRST_BUCKET_SHIFT - 1)
    }
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&self, nanos: u64) {
        if let Some(bucket) = self.buckets.get(bucket_of(nanos)) {
            bucket.add(1);
        }
    }

    /// Counts one value in bucket `bucket`.
    #[inline]
    pub(crate) fn record_in(&self, bucket: usize) {
        if let Some(b) = self.buckets.get(bucket) {
            b.add(1);
        }
    }

    /// Moves one count from bucket `from` to bucket `to` (a value recorded
    /// as an estimate, corrected once measured).
    pub(crate) fn move_one(&self, from: usize, to: usize) {
        if let (Some(a), Some(b)) = (self.buckets.get(from), self.buckets.get(to)) {
            a.sub(1);
            b.add(1);
        }
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.buckets.get(i).map_or(0, Stat::get)),
        }
    }
}

/// A copy of a histogram's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Counts per bucket (see the module docs for the bounds).
    pub counts: [u64; BUCKETS],
}

impl Default for HistogramSnapshot {
    fn default() -> HistogramSnapshot {
        HistogramSnapshot {
            counts: [0; BUCKETS],
        }
    }
}

impl HistogramSnapshot {
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Lower bound (ns) of bucket `i`; bucket `i` holds values from this bound
    /// up to the next bucket's.
    pub fn bucket_floor_nanos(i: usize) -> u64 {
        bucket_floor(i)
    }

    /// An upper estimate of the `q` quantile (0.0 ..= 1.0): the upper bound
    /// of the bucket holding it. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_floor(i + 1).max(1)));
            }
        }
        None
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// The counts recorded since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| {
                let now = self.counts.get(i).copied().unwrap_or(0);
                now.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0))
            }),
        }
    }
}

/// Live statistics of one agent (task group), written by its worker.
///
/// Laid out for the poll path: the eight fields every poll or wake touches
/// share the first cache line; histograms follow, each poll touching one
/// bucket of two of them.
#[derive(Default)]
#[repr(C, align(64))]
pub(crate) struct GroupStats {
    pub(crate) polls: Stat,
    pub(crate) busy_nanos: Stat,
    /// Tasks in a run queue or being polled.
    pub(crate) ready: Stat,
    /// When the agent last went from no ready task to some, or last got a
    /// poll (clock ns); meaningful while `ready > 0`.
    pub(crate) ready_since: Stat,
    pub(crate) ready_wait_max: Stat,
    /// Tasks waiting for a wake (not ready, not running, not parked).
    pub(crate) waiting: Stat,
    /// Of the waiting tasks, those waiting on a timer of the runtime.
    pub(crate) waiting_timer: Stat,
    /// Ready tasks held back by parking.
    pub(crate) parked: Stat,
    pub(crate) spawned: Stat,
    pub(crate) completed: Stat,
    pub(crate) panicked: Stat,
    pub(crate) cancelled: Stat,
    pub(crate) long_polls: Stat,
    /// Time from ready to polled (starvation).
    pub(crate) ready_wait: Histogram,
    /// Poll durations.
    pub(crate) poll_time: Histogram,
    /// Wait durations of tasks woken from another thread (I/O, other agents).
    pub(crate) io_wait: Histogram,
    /// Wait durations of tasks woken by a timer.
    pub(crate) timer_wait: Histogram,
}

impl GroupStats {
    /// A copy of the statistics as of clock reading `now`.
    pub(crate) fn snapshot(&self, now: u64) -> Counters {
        let ready = self.ready.get();
        let starving = if ready > 0 {
            Duration::from_nanos(now.saturating_sub(self.ready_since.get()))
        } else {
            Duration::ZERO
        };
        Counters {
            spawned: self.spawned.get(),
            completed: self.completed.get(),
            panicked: self.panicked.get(),
            cancelled: self.cancelled.get(),
            polls: self.polls.get(),
            busy: Duration::from_nanos(self.busy_nanos.get()),
            long_polls: self.long_polls.get(),
            ready,
            starving,
            waiting: self.waiting.get(),
            waiting_on_timer: self.waiting_timer.get(),
            parked: self.parked.get(),
            ready_wait_max: Duration::from_nanos(self.ready_wait_max.get()).max(starving),
            ready_wait: self.ready_wait.snapshot(),
            poll_time: self.poll_time.snapshot(),
            io_wait: self.io_wait.snapshot(),
            timer_wait: self.timer_wait.snapshot(),
        }
    }
}

/// Statistics of one agent or, summed, of one worker.
///
/// Counters and histograms only grow; take two snapshots and use
/// [`Counters::since`] for rates over an interval.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Counters {
    /// Tasks spawned.
    pub spawned: u64,
    /// Tasks that finished with an output.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks that were cancelled.
    pub cancelled: u64,
    /// Polls run.
    pub polls: u64,
    /// Time spent polling.
    pub busy: Duration,
    /// Polls longer than the runtime's long-poll threshold.
    pub long_polls: u64,
    /// Run-queue depth: tasks ready to run, including one being polled (gauge).
    pub ready: u64,
    /// Live starvation: how long the agent has had ready tasks without
    /// getting a poll (zero when it has none ready). Unlike `ready_wait`,
    /// which records a wait when it ends, this shows a starvation that is
    /// still going on.
    pub starving: Duration,
    /// Tasks waiting for a wake-up (gauge).
    pub waiting: u64,
    /// Of `waiting`, those waiting on a runtime timer (gauge).
    pub waiting_on_timer: u64,
    /// Ready tasks held back by parking (gauge).
    pub parked: u64,
    /// Longest time a task waited between becoming ready and being polled,
    /// including a wait still going on (`starving`).
    pub ready_wait_max: Duration,
    /// Starvation: time from ready to polled.
    pub ready_wait: HistogramSnapshot,
    /// Poll durations.
    pub poll_time: HistogramSnapshot,
    /// I/O wait heat: how long tasks woken from other threads (I/O
    /// completions, other agents) had been waiting.
    pub io_wait: HistogramSnapshot,
    /// How long tasks woken by a runtime timer had been waiting.
    pub timer_wait: HistogramSnapshot,
}

impl Counters {
    /// Adds `other` to `self`: counters and gauges add, maxima take the max.
    pub fn merge(&mut self, other: &Counters) {
        self.spawned += other.spawned;
        self.completed += other.completed;
        self.panicked += other.panicked;
        self.cancelled += other.cancelled;
        self.polls += other.polls;
        self.busy += other.busy;
        self.long_polls += other.long_polls;
        self.ready += other.ready;
        self.starving = self.starving.max(other.starving);
        self.waiting += other.waiting;
        self.waiting_on_timer += other.waiting_on_timer;
        self.parked += other.parked;
        self.ready_wait_max = self.ready_wait_max.max(other.ready_wait_max);
        self.ready_wait.merge(&other.ready_wait);
        self.poll_time.merge(&other.poll_time);
        self.io_wait.merge(&other.io_wait);
        self.timer_wait.merge(&other.timer_wait);
    }

    /// What happened since `earlier`: counters and histograms as differences,
    /// gauges and the maximum as they are now.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            spawned: self.spawned.saturating_sub(earlier.spawned),
            completed: self.completed.saturating_sub(earlier.completed),
            panicked: self.panicked.saturating_sub(earlier.panicked),
            cancelled: self.cancelled.saturating_sub(earlier.cancelled),
            polls: self.polls.saturating_sub(earlier.polls),
            busy: self.busy.saturating_sub(earlier.busy),
            long_polls: self.long_polls.saturating_sub(earlier.long_polls),
            ready_wait: self.ready_wait.since(&earlier.ready_wait),
            poll_time: self.poll_time.since(&earlier.poll_time),
            io_wait: self.io_wait.since(&earlier.io_wait),
            timer_wait: self.timer_wait.since(&earlier.timer_wait),
            ..self.clone()
        }
    }
}

/// Feedback for one agent (task group).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AgentFeedback {
    /// The agent's id.
    pub id: AgentId,
    /// The agent's name.
    pub name: String,
    /// The worker the agent runs on.
    pub worker: usize,
    /// Priority classes parked for this agent alone.
    pub parked_classes: Vec<Priority>,
    /// The agent's statistics.
    pub counters: Counters,
}

/// Feedback for one worker thread: the sum over its agents plus its own time.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkerFeedback {
    /// Worker index.
    pub index: usize,
    /// Time since the worker started.
    pub uptime: Duration,
    /// Time the worker spent asleep with nothing to run.
    pub idle: Duration,
    /// Number of agents on the worker.
    pub agents: usize,
    /// The agents' statistics summed (maxima: the largest), except `busy`,
    /// which is the worker's own exact polling time (each agent's `busy`
    /// charges its polls the recent average poll time, so the agents' sum
    /// may differ slightly).
    pub counters: Counters,
}

impl WorkerFeedback {
    /// Share of the worker's time spent polling tasks, 0.0 ..= 1.0 (the
    /// overcommit risk: near 1.0 the worker has no slack).
    pub fn busy_share(&self) -> f64 {
        share(self.counters.busy, self.uptime)
    }
}

/// A node-wide feedback snapshot. See [`Handle::feedback`](crate::Handle::feedback).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Feedback {
    /// Time since the runtime started, by its clock.
    pub at: Duration,
    /// Per worker.
    pub workers: Vec<WorkerFeedback>,
    /// Per agent.
    pub agents: Vec<AgentFeedback>,
}

impl Feedback {
    /// The agent with this id, if any.
    pub fn agent(&self, id: AgentId) -> Option<&AgentFeedback> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// The agent with this name, if any.
    pub fn agent_named(&self, name: &str) -> Option<&AgentFeedback> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// Share of its worker's time that `agent` used between `earlier` and
    /// this snapshot (0.0 ..= 1.0).
    pub fn agent_busy_share(&self, earlier: &Feedback, agent: AgentId) -> Option<f64> {
        let now = self.agent(agent)?;
        let before = earlier
            .agent(agent)
            .map(|a| a.counters.busy)
            .unwrap_or_default();
        Some(share(
            now.counters.busy.saturating_sub(before),
            self.at.saturating_sub(earlier.at),
        ))
    }
}

fn share(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        0.0
    } else {
        (part.as_secs_f64() / whole.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// A poll that took longer than the runtime's long-poll threshold: the task
/// blocked its worker (and every agent on it) for `duration`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LongPoll {
    /// The task.
    pub task: TaskId,
    /// The task's agent.
    pub agent: AgentId,
    /// The agent's name.
    pub agent_name: String,
    /// The worker it ran on.
    pub worker: usize,
    /// How long the poll took.
    pub duration: Duration,
    /// When the poll ended, by the runtime's clock.
    pub at: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 1);
        assert_eq!(bucket_of(127), 1);
        assert_eq!(bucket_of(128), 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for i in 1..BUCKETS {
            assert_eq!(bucket_of(bucket_floor(i)), i, "floor of bucket {i}");
        }
    }

    #[test]
    fn histogram_quantile_is_an_upper_bound() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.record(100);
        }
        h.record(1_000_000);
        let snap = h.snapshot();
        assert_eq!(snap.count(), 100);
        let p50 = snap.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_nanos(100) && p50 <= Duration::from_nanos(128));
        let p100 = snap.quantile(1.0).unwrap();
        assert!(p100 >= Duration::from_millis(1) && p100 <= Duration::from_nanos(2 * 1_048_576));
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn counters_since_subtracts_counters_and_keeps_gauges() {
        let stats = GroupStats::default();
        stats.polls.add(3);
        stats.ready.add(2);
        stats.ready_since.set(1_000);
        let before = stats.snapshot(1_500);
        assert_eq!(before.starving, Duration::from_nanos(500));
        assert_eq!(
            before.ready_wait_max,
            Duration::from_nanos(500),
            "a live wait counts as the max"
        );
        stats.polls.add(4);
        stats.poll_time.record(500);
        let delta = stats.snapshot(2_000).since(&before);
        assert_eq!(delta.polls, 4);
        assert_eq!(delta.ready, 2);
        assert_eq!(delta.starving, Duration::from_nanos(1_000));
        assert_eq!(delta.poll_time.count(), 1);
    }
}
