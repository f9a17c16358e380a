//! Parking: a parked class stops at its next yield, is reported as `parked`,
//! holds back new tasks of that class, and resumes with its state intact;
//! node-wide (`Handle::park`) and per-agent (`Group::park`) parking compose.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::wait_until;
use tiffany_sched::{
    Builder, DeterministicRuntime, Group, GroupConfig, Handle, JoinHandle, Policy, Priority,
    Runtime, yield_now,
};

/// A task that counts its polls in a local variable and publishes each count
/// to `progress`, checking that the published value continues from the
/// previous one: if the task lost its state, the check panics.
fn counter_task(
    group: &Group,
    priority: Priority,
    iterations: u64,
    progress: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<u64> {
    let (progress, stop) = (Arc::clone(progress), Arc::clone(stop));
    group.spawn_with_priority(priority, async move {
        let mut count = 0u64;
        while count < iterations && !stop.load(Ordering::Relaxed) {
            count += 1;
            let previous = progress.swap(count, Ordering::Relaxed);
            assert_eq!(previous, count - 1, "the task's state was not kept");
            yield_now().await;
        }
        count
    })
}

fn fifo(seed: u64) -> DeterministicRuntime {
    Builder::deterministic()
        .policy(Policy::Fifo)
        .build_deterministic(seed)
        .unwrap()
}

/// A controller parks Background halfway through: after the controller's
/// poll no Background poll happens, Normal tasks carry on, and feedback
/// shows the parked task. Unparked, it finishes from where it stopped.
#[test]
fn parking_stops_background_at_next_yield_and_unpark_resumes_it() {
    for seed in 0..4 {
        let rt = fifo(seed);
        let bg_agent = rt.group(GroupConfig::new("bg"));
        let fg_agent = rt.group(GroupConfig::new("fg"));
        let stop = Arc::new(AtomicBool::new(false));
        let (bg_progress, fg_progress) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let log = Arc::new(Mutex::new(Vec::new()));

        let bg = counter_task(&bg_agent, Priority::Background, 1_000, &bg_progress, &stop);
        let fg = counter_task(&fg_agent, Priority::Normal, 1_000, &fg_progress, &stop);
        let (l, bp) = (log.clone(), bg_progress.clone());
        let spy = rt.spawn_with_priority(Priority::Background, async move {
            // Records Background progress as seen from another Background task.
            loop {
                l.lock()
                    .unwrap()
                    .push(format!("bg={}", bp.load(Ordering::Relaxed)));
                yield_now().await;
            }
        });
        let (l, bp) = (log.clone(), bg_progress.clone());
        let controller = rt.spawn_with_priority(Priority::Critical, async move {
            for _ in 0..20 {
                yield_now().await;
            }
            Handle::current().park(Priority::Background);
            l.lock().unwrap().push("park".to_owned());
            bp.load(Ordering::Relaxed)
        });

        rt.run_until_idle();
        assert!(fg.is_finished(), "seed {seed}");
        assert!(!bg.is_finished() && !spy.is_finished());
        let stopped_at = bg_progress.load(Ordering::Relaxed);
        assert_eq!(
            rt.block_on(controller).unwrap(),
            stopped_at,
            "seed {seed}: Background ran after the park"
        );
        assert!(
            (1..1_000).contains(&stopped_at),
            "seed {seed}: background made {stopped_at} steps before the park"
        );
        {
            let log = log.lock().unwrap();
            let park = log.iter().position(|e| e == "park").unwrap();
            assert_eq!(
                log.len(),
                park + 1,
                "seed {seed}: a Background task ran after the park: {:?}",
                &log[park..]
            );
        }
        let feedback = rt.feedback();
        let bg_counters = &feedback.agent(bg_agent.id()).unwrap().counters;
        assert_eq!((bg_counters.parked, bg_counters.ready), (1, 0));
        assert_eq!(rt.parked_classes(), vec![Priority::Background]);
        assert_eq!(
            rt.block_on(fg).unwrap(),
            1_000,
            "Normal work was not held back"
        );

        // Still parked after more scheduling and some time.
        rt.advance(std::time::Duration::from_secs(1));
        assert_eq!(bg_progress.load(Ordering::Relaxed), stopped_at);

        rt.unpark(Priority::Background);
        spy.abort();
        rt.run_until_idle();
        assert!(rt.parked_classes().is_empty());
        assert_eq!(
            rt.block_on(bg).unwrap(),
            1_000,
            "resumed and counted on from {stopped_at}"
        );
        assert_eq!(
            rt.feedback().agent(bg_agent.id()).unwrap().counters.parked,
            0
        );
    }
}

#[test]
fn parking_holds_back_newly_spawned_tasks_of_the_class() {
    let rt = fifo(1);
    let agent = rt.group(GroupConfig::new("agent"));
    rt.park(Priority::Background);
    rt.run_until_idle();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let from_outside = agent.spawn_with_priority(Priority::Background, async move {
        s.store(true, Ordering::SeqCst);
    });
    let started_inside = Arc::new(AtomicBool::new(false));
    let s = started_inside.clone();
    let spawner = agent.spawn(async move {
        // Spawned locally from a Normal task, at Background.
        drop(tiffany_sched::spawn_with_priority(
            Priority::Background,
            async move {
                s.store(true, Ordering::SeqCst);
            },
        ));
        "normal ran"
    });
    rt.run_until_idle();
    assert_eq!(rt.block_on(spawner).unwrap(), "normal ran");
    assert!(!started.load(Ordering::SeqCst) && !started_inside.load(Ordering::SeqCst));
    assert!(!from_outside.is_finished());
    assert_eq!(agent.feedback().counters.parked, 2);

    rt.unpark(Priority::Background);
    rt.run_until_idle();
    assert!(started.load(Ordering::SeqCst) && started_inside.load(Ordering::SeqCst));
    assert!(from_outside.is_finished());
    assert_eq!(agent.feedback().counters.parked, 0);
}

#[test]
fn parking_a_group_affects_only_that_agent() {
    let rt = fifo(2);
    let x = rt.group(GroupConfig::new("x"));
    let y = rt.group(GroupConfig::new("y"));
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<_> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    x.park(Priority::Background);
    let x_bg = counter_task(&x, Priority::Background, 50, &progress[0], &stop);
    let x_fg = counter_task(&x, Priority::Normal, 50, &progress[1], &stop);
    let y_bg = counter_task(&y, Priority::Background, 50, &progress[2], &stop);
    rt.run_until_idle();

    assert_eq!(
        progress[0].load(Ordering::Relaxed),
        0,
        "x's Background work is parked"
    );
    assert!(x_fg.is_finished(), "x's Normal work is not");
    assert!(y_bg.is_finished(), "y is not parked at all");
    let feedback = rt.feedback();
    let (fx, fy) = (
        feedback.agent(x.id()).unwrap(),
        feedback.agent(y.id()).unwrap(),
    );
    assert_eq!(fx.parked_classes, vec![Priority::Background]);
    assert_eq!(fx.counters.parked, 1);
    assert!(fy.parked_classes.is_empty());
    assert_eq!(fy.counters.parked, 0);
    assert!(
        rt.parked_classes().is_empty(),
        "nothing is parked node-wide"
    );

    x.unpark(Priority::Background);
    rt.run_until_idle();
    assert_eq!(rt.block_on(x_bg).unwrap(), 50);
    assert!(
        rt.feedback()
            .agent(x.id())
            .unwrap()
            .parked_classes
            .is_empty()
    );
}

/// Releasing node-wide parking leaves agents parked on their own parked.
#[test]
fn parking_node_unpark_keeps_agent_parking() {
    let rt = fifo(3);
    let x = rt.group(GroupConfig::new("x"));
    let y = rt.group(GroupConfig::new("y"));
    let stop = Arc::new(AtomicBool::new(false));
    let (px, py) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    x.park(Priority::Background);
    rt.park(Priority::Background);
    let x_bg = counter_task(&x, Priority::Background, 10, &px, &stop);
    let y_bg = counter_task(&y, Priority::Background, 10, &py, &stop);
    rt.run_until_idle();
    assert_eq!(
        (px.load(Ordering::Relaxed), py.load(Ordering::Relaxed)),
        (0, 0)
    );

    rt.unpark(Priority::Background);
    rt.run_until_idle();
    assert!(y_bg.is_finished(), "y was parked only node-wide");
    assert_eq!(
        px.load(Ordering::Relaxed),
        0,
        "x is still parked on its own"
    );

    x.unpark(Priority::Background);
    rt.run_until_idle();
    assert!(x_bg.is_finished());
}

/// Parking one class leaves the others alone, and a class can be parked
/// node-wide while its tasks are running on real threads: parked from the
/// test thread, the Background tasks stop while Normal ones continue, and
/// resume with their state after `unpark`.
#[test]
fn parking_from_another_thread_on_a_threaded_runtime() {
    let rt = Runtime::builder()
        .workers(1)
        .policy(Policy::Fifo)
        .io(false)
        .build()
        .unwrap();
    let bg_agent = rt.group(GroupConfig::new("bg"));
    let fg_agent = rt.group(GroupConfig::new("fg"));
    let stop = Arc::new(AtomicBool::new(false));
    let bg_progress: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let fg_progress = Arc::new(AtomicU64::new(0));
    let mut bg: Vec<_> = bg_progress
        .iter()
        .map(|p| counter_task(&bg_agent, Priority::Background, u64::MAX, p, &stop))
        .collect();
    let fg = counter_task(&fg_agent, Priority::Normal, u64::MAX, &fg_progress, &stop);
    let bg_sum = || {
        bg_progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
    };

    wait_until("background tasks run", || bg_sum() > 1_000);
    rt.park(Priority::Background);
    wait_until("both background tasks are parked", || {
        bg_agent.feedback().counters.parked == 2
    });
    let stopped_at = bg_sum();
    let fg_at_park = fg_progress.load(Ordering::Relaxed);
    wait_until("normal tasks progress", || {
        fg_progress.load(Ordering::Relaxed) > fg_at_park + 10_000
    });
    assert_eq!(bg_sum(), stopped_at, "parked tasks made progress");
    assert_eq!(bg_agent.feedback().counters.parked, 2);

    rt.unpark(Priority::Background);
    wait_until("background tasks resume", || bg_sum() > stopped_at + 1_000);
    stop.store(true, Ordering::Relaxed);
    let counted: u64 = bg.drain(..).map(|h| rt.block_on(h).unwrap()).sum();
    assert!(
        counted > stopped_at,
        "the counts continued from {stopped_at}"
    );
    assert!(rt.block_on(fg).unwrap() > fg_at_park);
}
