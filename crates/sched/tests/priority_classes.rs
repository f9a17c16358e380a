//! Strict priority: the most urgent ready class always runs first, and a
//! task of a more urgent class that becomes ready runs at the very next
//! scheduling point.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::wait_until;
use tiffany_sched::sync::oneshot;
use tiffany_sched::{
    Builder, GroupConfig, Instant, Policy, Priority, Runtime, sleep_until, spawn_with_priority,
    yield_now,
};

/// Critical, Normal and Background tasks all ready (spawned interleaved):
/// every Critical poll comes before every Normal poll, and Background last.
/// Holds for every seed of the deterministic runtime.
#[test]
fn priority_strict_runs_critical_first_and_background_last() {
    for seed in 0..8 {
        let rt = Builder::deterministic().build_deterministic(seed).unwrap();
        let agent = rt.group(GroupConfig::new("mixed"));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for _ in 0..4 {
            for priority in [Priority::Background, Priority::Normal, Priority::Critical] {
                let log = Arc::clone(&log);
                handles.push(agent.spawn_with_priority(priority, async move {
                    for _ in 0..3 {
                        log.lock().unwrap().push(priority);
                        yield_now().await;
                    }
                    log.lock().unwrap().push(priority);
                }));
            }
        }
        rt.run_until_idle();
        assert!(handles.iter().all(|h| h.is_finished()));
        let log = log.lock().unwrap();
        let expected: Vec<Priority> = Priority::ALL
            .into_iter()
            .flat_map(|p| std::iter::repeat_n(p, 16))
            .collect();
        assert_eq!(*log, expected, "seed {seed}");
    }
}

/// Background tasks keep yielding; one of them wakes a Critical task
/// through a oneshot. The Critical task's poll is the very next one.
#[test]
fn priority_critical_woken_by_background_task_runs_next() {
    for seed in 0..8 {
        let rt = Builder::deterministic().build_deterministic(seed).unwrap();
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let in_tasks = Rc::clone(&log);
        rt.block_on(async move {
            let (tx, rx) = oneshot::<()>();
            let log = Rc::clone(&in_tasks);
            let critical = spawn_with_priority(Priority::Critical, async move {
                rx.await.unwrap();
                log.borrow_mut().push("critical".to_owned());
            });
            let mut tx = Some(tx);
            let mut background = Vec::new();
            for b in 0..3 {
                let log = Rc::clone(&in_tasks);
                let tx = if b == 0 { tx.take() } else { None };
                background.push(spawn_with_priority(Priority::Background, async move {
                    let mut tx = tx;
                    for i in 0..40 {
                        log.borrow_mut().push(format!("bg{b}:{i}"));
                        if i == 10 {
                            if let Some(tx) = tx.take() {
                                tx.send(()).unwrap();
                                log.borrow_mut().push("sent".to_owned());
                            }
                        }
                        yield_now().await;
                    }
                }));
            }
            critical.await.unwrap();
            for h in background {
                h.await.unwrap();
            }
        });
        let log = log.borrow();
        let sent = log
            .iter()
            .position(|e| e == "sent")
            .expect("the wake was sent");
        assert_eq!(
            log[sent + 1],
            "critical",
            "seed {seed}: log around the wake: {:?}",
            &log[sent.saturating_sub(3)..]
        );
        assert!(log[sent + 2..].iter().all(|e| e.starts_with("bg")));
    }
}

/// On a real worker, Background tasks yield in a tight loop while a Critical
/// task sleeps until a deadline. The timer fires after the first poll that
/// ends at or past the deadline, so no Background poll may *start* at or
/// after the deadline before the Critical task has run.
#[test]
fn priority_critical_woken_by_timer_runs_at_next_scheduling_point() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    let critical_ran = Arc::new(AtomicBool::new(false));
    let late_polls = Arc::new(AtomicU64::new(0));
    let early_polls = Arc::new(AtomicU64::new(0));
    let (d, ran, late, early) = (
        deadline.clone(),
        critical_ran.clone(),
        late_polls.clone(),
        early_polls.clone(),
    );
    let woke_at = rt.block_on(async move {
        let mut background = Vec::new();
        for _ in 0..3 {
            let (d, ran, late, early) = (d.clone(), ran.clone(), late.clone(), early.clone());
            background.push(spawn_with_priority(Priority::Background, async move {
                while !ran.load(Ordering::SeqCst) {
                    let now = Instant::now().since_start().as_nanos() as u64;
                    if now >= d.load(Ordering::SeqCst) {
                        late.fetch_add(1, Ordering::SeqCst);
                    } else {
                        early.fetch_add(1, Ordering::SeqCst);
                    }
                    yield_now().await;
                }
            }));
        }
        let critical = spawn_with_priority(Priority::Critical, async move {
            let at = Instant::now() + Duration::from_millis(20);
            d.store(at.since_start().as_nanos() as u64, Ordering::SeqCst);
            sleep_until(at).await;
            let woke = Instant::now();
            ran.store(true, Ordering::SeqCst);
            (at, woke)
        });
        let out = critical.await.unwrap();
        for h in background {
            h.await.unwrap();
        }
        out
    });
    let (at, woke) = woke_at;
    assert!(woke >= at, "woke at {woke:?}, before the deadline {at:?}");
    assert!(
        early_polls.load(Ordering::SeqCst) > 0,
        "background tasks ran while the timer was pending"
    );
    assert_eq!(
        late_polls.load(Ordering::SeqCst),
        0,
        "background polls started after the deadline, before the critical task"
    );
}

/// A Critical task woken from a plain thread (a tokio oneshot) while
/// Background tasks keep yielding: the wake arrives through the worker's
/// inbox, which is checked after every poll. The sender raises `sent` right
/// after the wake is delivered, so at most one Background poll can see
/// `sent` before the Critical task runs.
#[test]
fn priority_critical_woken_from_another_thread_runs_at_next_scheduling_point() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let critical_agent = rt.group(
        GroupConfig::new("critical")
            .worker(0)
            .priority(Priority::Critical),
    );
    let background_agent = rt.group(
        GroupConfig::new("background")
            .worker(0)
            .priority(Priority::Background),
    );
    let sent = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicBool::new(false));
    let seen_after_send = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let r = ran.clone();
    let critical = critical_agent.spawn(async move {
        rx.await.unwrap();
        r.store(true, Ordering::SeqCst);
    });
    let background: Vec<_> = (0..3)
        .map(|_| {
            let (sent, ran, seen, polls) = (
                sent.clone(),
                ran.clone(),
                seen_after_send.clone(),
                polls.clone(),
            );
            background_agent.spawn(async move {
                while !ran.load(Ordering::SeqCst) {
                    if sent.load(Ordering::SeqCst) {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    polls.fetch_add(1, Ordering::SeqCst);
                    yield_now().await;
                }
            })
        })
        .collect();
    wait_until("the critical task waits and background tasks spin", || {
        critical_agent.feedback().counters.waiting == 1 && polls.load(Ordering::SeqCst) > 1_000
    });
    tx.send(()).unwrap();
    sent.store(true, Ordering::SeqCst);
    rt.block_on(critical).unwrap();
    for h in background {
        rt.block_on(h).unwrap();
    }
    let seen = seen_after_send.load(Ordering::SeqCst);
    assert!(
        seen <= 1,
        "{seen} background polls ran after the wake was delivered"
    );
}

/// The group's configured priority is what `Group::spawn` uses.
#[test]
fn priority_group_default_priority_applies_to_its_spawns() {
    let rt = Builder::deterministic()
        .policy(Policy::StrictPriority)
        .build_deterministic(3)
        .unwrap();
    let urgent = rt.group(GroupConfig::new("urgent").priority(Priority::Critical));
    let lazy = rt.group(GroupConfig::new("lazy").priority(Priority::Background));
    let plain = rt.group(GroupConfig::new("plain"));
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for group in [&lazy, &plain, &urgent] {
        let log = Arc::clone(&log);
        let name = group.name().to_owned();
        handles.push(group.spawn(async move {
            for _ in 0..3 {
                log.lock().unwrap().push(name.clone());
                yield_now().await;
            }
        }));
    }
    rt.run_until_idle();
    let expected: Vec<String> = ["urgent", "plain", "lazy"]
        .into_iter()
        .flat_map(|n| std::iter::repeat_n(n.to_owned(), 3))
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
}
