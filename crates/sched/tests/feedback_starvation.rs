//! Feedback: starvation (ready gauge, polls, `ready_wait_max`), busy share,
//! tasks waiting on timers, I/O and timer wait histograms, long polls, and
//! worker totals.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::wait_until;
use tiffany_sched::{
    AgentFeedback, Builder, Counters, Feedback, Group, GroupConfig, HistogramSnapshot, JoinHandle,
    Priority, Runtime, sleep, spawn, yield_now,
};

/// The bucket a duration falls in (see the `feedback` module docs).
fn bucket(d: Duration) -> usize {
    let nanos = d.as_nanos() as u64;
    (0..tiffany_sched::BUCKETS)
        .rev()
        .find(|&i| HistogramSnapshot::bucket_floor_nanos(i) <= nanos)
        .unwrap()
}

/// The counts of a histogram as (bucket, count) pairs, empty buckets left out.
fn nonzero(h: &HistogramSnapshot) -> Vec<(usize, u64)> {
    h.counts
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, c)| c > 0)
        .collect()
}

fn agent<'a>(feedback: &'a Feedback, group: &Group) -> &'a AgentFeedback {
    feedback.agent(group.id()).unwrap()
}

/// Spins for `d` without yielding (a busy poll).
fn spin(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

struct Starvation {
    rt: Runtime,
    hog: Group,
    victim: Group,
    stop: Arc<AtomicBool>,
    hogs: Vec<JoinHandle<()>>,
    victims: Vec<JoinHandle<()>>,
    /// Taken while the hog runs and the victim is starved.
    before: Feedback,
    after: Feedback,
}

/// One worker: a Critical hog agent with two always-ready busy tasks, and a
/// Normal victim agent with three ready tasks that never get polled while
/// the hog runs. Two snapshots are taken 2,000 hog polls apart.
fn starve() -> Starvation {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let hog = rt.group(GroupConfig::new("hog").priority(Priority::Critical));
    let victim = rt.group(GroupConfig::new("victim"));
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            hog.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    spin(Duration::from_micros(20));
                    yield_now().await;
                }
            })
        })
        .collect();
    wait_until("the hog runs", || hog.feedback().counters.polls > 100);
    let victims: Vec<_> = (0..3)
        .map(|_| {
            victim.spawn(async {
                for _ in 0..5 {
                    yield_now().await;
                }
            })
        })
        .collect();
    wait_until("the victim's tasks are queued", || {
        victim.feedback().counters.ready == 3
    });
    let before = rt.feedback();
    let hog_polls = agent(&before, &hog).counters.polls;
    wait_until("2,000 more hog polls", || {
        hog.feedback().counters.polls >= hog_polls + 2_000
    });
    let after = rt.feedback();
    Starvation {
        rt,
        hog,
        victim,
        stop,
        hogs,
        victims,
        before,
        after,
    }
}

impl Starvation {
    fn release(self) -> (Runtime, Group, Feedback) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.hogs.into_iter().chain(self.victims) {
            self.rt.block_on(h).unwrap();
        }
        let end = self.rt.feedback();
        (self.rt, self.victim, end)
    }
}

#[test]
fn feedback_shows_a_starved_agent() {
    let s = starve();
    let (v0, v1) = (
        &agent(&s.before, &s.victim).counters,
        &agent(&s.after, &s.victim).counters,
    );
    assert_eq!((v0.ready, v1.ready), (3, 3), "the victim's run-queue depth");
    assert_eq!((v0.polls, v1.polls), (0, 0), "the victim was never polled");
    let hog_share = s.after.agent_busy_share(&s.before, s.hog.id()).unwrap();
    let victim_share = s.after.agent_busy_share(&s.before, s.victim.id()).unwrap();
    assert!(hog_share > 0.5, "hog busy share {hog_share:.3}");
    assert_eq!(victim_share, 0.0);
    let worker = &s.after.workers[0];
    assert!(worker.busy_share() > 0.0 && worker.busy_share() <= 1.0);

    let starved_for = s.after.at - s.before.at;
    let (_, _, end) = s.release();
    let v = &end.agent_named("victim").unwrap().counters;
    assert_eq!((v.completed, v.ready, v.polls), (3, 0, 18));
    assert!(
        v.ready_wait_max >= starved_for,
        "ready_wait_max {:?} < time starved between the snapshots {starved_for:?}",
        v.ready_wait_max
    );
    assert!(v.ready_wait.quantile(1.0).unwrap() >= starved_for);
}

/// Starvation should be visible while it happens: a monitor reading
/// feedback during the starvation must see the victim's wait grow.
#[test]
fn feedback_ready_wait_max_grows_while_an_agent_is_starved() {
    let s = starve();
    let starved_for = s.after.at - s.before.at;
    let max_after = agent(&s.after, &s.victim).counters.ready_wait_max;
    // (On failure, dropping `s` drops the runtime, which cancels the hog.)
    assert!(
        max_after >= starved_for,
        "victim ready_wait_max {max_after:?} while starved for at least {starved_for:?}"
    );
    s.release();
}

/// On the manual clock: gauges of waiting tasks and exact wait histograms.
/// Three tasks sleep on runtime timers and two wait on a tokio oneshot fed
/// from the test thread (a cross-thread wake, as I/O completions are).
#[test]
fn feedback_waiting_gauges_and_wait_histograms() {
    let rt = Builder::deterministic().build_deterministic(5).unwrap();
    let group = rt.group(GroupConfig::new("waiter"));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        senders.push(tx);
        receivers.push(rx);
    }
    let parent = group.spawn(async move {
        let sleepers: Vec<_> = (0..3)
            .map(|_| spawn(async { sleep(Duration::from_secs(1)).await }))
            .collect();
        let waiters: Vec<_> = receivers
            .into_iter()
            .map(|rx| spawn(async move { rx.await.unwrap() }))
            .collect();
        for s in sleepers {
            s.await.unwrap();
        }
        let mut sum = 0;
        for w in waiters {
            sum += w.await.unwrap();
        }
        sum
    });
    rt.run_until_idle();
    let c = group.feedback().counters;
    // The parent waits on a join handle, three children on timers, two on the oneshots.
    assert_eq!((c.waiting, c.waiting_on_timer, c.ready), (6, 3, 0));
    assert_eq!(rt.feedback().workers[0].counters.waiting_on_timer, 3);

    rt.advance(Duration::from_secs(1));
    let c = group.feedback().counters;
    assert_eq!((c.waiting, c.waiting_on_timer), (3, 0));
    assert_eq!(
        nonzero(&c.timer_wait),
        vec![(bucket(Duration::from_secs(1)), 3)]
    );
    assert_eq!(c.io_wait.count(), 0);

    rt.advance(Duration::from_secs(1));
    for (i, tx) in senders.into_iter().enumerate() {
        tx.send(10 + i as u32).unwrap();
    }
    rt.run_until_idle();
    assert_eq!(rt.block_on(parent).unwrap(), 21);
    let c = group.feedback().counters;
    assert_eq!((c.waiting, c.waiting_on_timer, c.ready), (0, 0, 0));
    // Each waiter had waited 2 s when the cross-thread wake arrived.
    assert_eq!(
        nonzero(&c.io_wait),
        vec![(bucket(Duration::from_secs(2)), 2)]
    );
    assert_eq!(c.timer_wait.count(), 3);
    assert_eq!((c.spawned, c.completed), (6, 6));
}

/// On real threads: a task woken from a plain thread through a tokio
/// channel is counted in `io_wait`, with the time it waited.
#[test]
#[allow(clippy::disallowed_methods)] // the feeder is a plain thread, not a task
fn feedback_io_wait_records_wakes_from_another_thread() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let group = rt.group(GroupConfig::new("reader"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let reader = group.spawn(async move { rx.recv().await.unwrap() });
    wait_until("the reader waits", || {
        group.feedback().counters.waiting == 1
    });
    let feeder = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        tx.send(42).unwrap();
    });
    assert_eq!(rt.block_on(reader).unwrap(), 42);
    feeder.join().unwrap();
    let c = group.feedback().counters;
    assert_eq!(c.io_wait.count(), 1);
    assert_eq!(c.timer_wait.count(), 0);
    let (b, _) = nonzero(&c.io_wait)[0];
    assert!(
        HistogramSnapshot::bucket_floor_nanos(b + 1) > 10_000_000,
        "recorded wait (bucket {b}) is shorter than the 10 ms the feeder slept"
    );
}

/// The longest long-poll report for task `id`. (On a loaded machine a short
/// poll preempted by the OS for over the threshold is reported too, so a
/// task may have more than one.)
fn long_poll_of(rt: &Runtime, id: tiffany_sched::TaskId) -> tiffany_sched::LongPoll {
    let reports = rt.take_long_polls();
    let report = reports
        .iter()
        .filter(|r| r.task == id)
        .max_by_key(|r| r.duration)
        .cloned();
    report.unwrap_or_else(|| panic!("no long poll for {id} in {reports:?}"))
}

/// A poll that blocks its worker for 5 ms is reported with its task, agent
/// and duration. The agent has a worker to itself and its task spins a
/// little before blocking, so the worker times each of its polls on its own
/// (timing windows of one poll) and the report does not depend on when the
/// watchdog thread gets to run.
#[test]
#[allow(clippy::disallowed_methods)] // the blocking poll is the point
fn feedback_long_poll_is_reported_with_task_and_agent() {
    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let group = rt.group(GroupConfig::new("blocker").worker(1));
    let h = group.spawn(async {
        for _ in 0..3 {
            spin(Duration::from_micros(50));
            yield_now().await;
        }
        thread::sleep(Duration::from_millis(5));
    });
    let id = h.id();
    rt.block_on(h).unwrap();
    let report = long_poll_of(&rt, id);
    assert_eq!(report.agent, group.id());
    assert_eq!(report.agent_name, "blocker");
    assert_eq!(report.worker, 1);
    assert!(
        report.duration >= Duration::from_millis(5),
        "{:?}",
        report.duration
    );
    assert!(report.at >= report.duration);
    assert!(group.feedback().counters.long_polls >= 1);
    assert!(
        rt.take_long_polls().iter().all(|r| r.task != id),
        "take_long_polls drains the reports"
    );
}

/// A blocking poll after many short ones (so it shares a timing window with
/// them) is caught by the watchdog. It blocks for 50 ms so that the watchdog
/// thread, which must see the poll at two checks half a threshold apart,
/// gets to run even on a loaded machine.
#[test]
#[allow(clippy::disallowed_methods)] // the blocking poll is the point
fn feedback_long_poll_after_short_polls_is_caught_by_the_watchdog() {
    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let group = rt.group(GroupConfig::new("sneaky").worker(1));
    let h = group.spawn(async {
        for _ in 0..10_000 {
            yield_now().await;
        }
        thread::sleep(Duration::from_millis(50));
    });
    let id = h.id();
    rt.block_on(h).unwrap();
    let report = long_poll_of(&rt, id);
    assert_eq!((report.agent, report.worker), (group.id(), 1));
    assert!(
        report.duration >= Duration::from_millis(50),
        "{:?}",
        report.duration
    );
    assert!(group.feedback().counters.long_polls >= 1);
}

/// Worker feedback is the sum of its agents' (one snapshot, so exact),
/// except `busy`: since 1c974de a worker's busy time is its own exact
/// measure while an agent's is charged per-poll estimates, so the two need
/// not match; the worker's busy and idle time fit in its uptime.
#[test]
fn feedback_worker_totals_sum_their_agents() {
    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let groups: Vec<_> = (0..5)
        .map(|i| rt.group(GroupConfig::new(format!("g{i}")).worker(i % 2)))
        .collect();
    let handles: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            g.spawn(async move {
                for _ in 0..(10 * (i + 1)) {
                    yield_now().await;
                }
                spawn(async { sleep(Duration::from_millis(1)).await })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for h in handles {
        rt.block_on(h).unwrap();
    }
    let feedback = rt.feedback();
    assert_eq!(feedback.workers.len(), 2);
    for worker in &feedback.workers {
        let mine: Vec<_> = feedback
            .agents
            .iter()
            .filter(|a| a.worker == worker.index)
            .collect();
        let mut sum = Counters::default();
        for a in &mine {
            sum.merge(&a.counters);
        }
        assert_eq!(worker.agents, mine.len());
        let exact_busy = worker.counters.busy;
        assert!(
            exact_busy + worker.idle <= worker.uptime,
            "worker {}: busy {exact_busy:?} + idle {:?} > uptime {:?}",
            worker.index,
            worker.idle,
            worker.uptime
        );
        assert!(exact_busy > Duration::ZERO);
        sum.busy = exact_busy;
        assert_eq!(worker.counters, sum, "worker {}", worker.index);
    }
    // Each worker has its default group plus its share of the five.
    assert_eq!(
        feedback
            .workers
            .iter()
            .map(|w| w.agents)
            .collect::<Vec<_>>(),
        vec![4, 3]
    );
    let total_spawned: u64 = feedback.workers.iter().map(|w| w.counters.spawned).sum();
    // Five agent tasks, five children, and one block_on task per join.
    assert_eq!(total_spawned, 15);
    for (i, g) in groups.iter().enumerate() {
        let c = g.feedback().counters;
        assert_eq!((c.spawned, c.completed), (2, 2), "g{i}");
        assert!(c.polls >= 10 * (i as u64 + 1));
    }
}

/// `Counters::since` gives the activity of an interval.
#[test]
fn feedback_counters_since_gives_interval_activity() {
    let rt = Builder::deterministic().build_deterministic(9).unwrap();
    let group = rt.group(GroupConfig::new("interval"));
    rt.block_on(group.spawn(async {})).unwrap();
    let before = group.feedback().counters;
    rt.block_on(group.spawn(async {
        for _ in 0..4 {
            yield_now().await;
        }
    }))
    .unwrap();
    let delta = group.feedback().counters.since(&before);
    assert_eq!((delta.spawned, delta.completed, delta.polls), (1, 1, 5));
    assert_eq!(delta.ready_wait.count(), 5);
}
