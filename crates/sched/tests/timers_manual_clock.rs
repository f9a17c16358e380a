//! Timers on the deterministic runtime's manual clock: exact wake-up
//! instants, deadline order, `timeout`, join with a timeout, cancellation of
//! dropped timers, and `block_on` jumping to the next timer.
//!
//! Tasks are spawned with [`tiffany_sched::spawn`] from inside `block_on`
//! (see [`spawn_local`]) so they may hold `!Send` state such as `Rc`s, and
//! have had their first poll (registering their timers) at time zero.

mod common;

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use common::spawn_local;
use tiffany_sched::sync::oneshot;
use tiffany_sched::{
    Builder, DeterministicRuntime, Elapsed, Instant, Runtime, sleep, sleep_until, spawn, timeout,
};

fn rt(seed: u64) -> DeterministicRuntime {
    Builder::deterministic().build_deterministic(seed).unwrap()
}

const MS: Duration = Duration::from_millis(1);
const NS: Duration = Duration::from_nanos(1);

#[test]
fn timers_sleep_wakes_exactly_at_the_deadline() {
    let rt = rt(1);
    let h = spawn_local(&rt, async {
        sleep(100 * MS).await;
        Instant::now().since_start()
    });
    assert_eq!(rt.timers(), 1);
    rt.advance(100 * MS - NS);
    assert!(!h.is_finished(), "woke before the deadline");
    assert_eq!(rt.now(), 100 * MS - NS);
    rt.advance(NS);
    assert!(h.is_finished(), "did not wake at the deadline");
    assert_eq!(rt.block_on(h).unwrap(), 100 * MS);
    assert_eq!(rt.timers(), 0);
}

#[test]
fn timers_sleep_until_a_past_instant_is_ready_at_once() {
    let rt = rt(1);
    rt.advance(5 * MS);
    let h = spawn_local(&rt, async {
        sleep_until(Instant::default()).await;
        sleep(Duration::ZERO).await;
        Instant::now().since_start()
    });
    assert!(h.is_finished());
    assert_eq!(rt.timers(), 0);
    assert_eq!(rt.block_on(h).unwrap(), 5 * MS);
}

/// Five tasks registered in a seed-dependent order fire by deadline, each
/// exactly at its deadline, whatever the seed.
#[test]
fn timers_fire_in_deadline_order() {
    for seed in 0..6 {
        let rt = rt(seed);
        let log: Rc<RefCell<Vec<(u64, Duration)>>> = Rc::default();
        let in_tasks = Rc::clone(&log);
        rt.block_on(async move {
            for ms in [50u64, 10, 40, 20, 30] {
                let log = Rc::clone(&in_tasks);
                drop(spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    log.borrow_mut().push((ms, Instant::now().since_start()));
                }));
            }
        });
        assert_eq!(rt.timers(), 5);
        rt.advance(Duration::from_secs(1));
        let expected: Vec<_> = [10u64, 20, 30, 40, 50]
            .into_iter()
            .map(|ms| (ms, Duration::from_millis(ms)))
            .collect();
        assert_eq!(*log.borrow(), expected, "seed {seed}");
    }
}

/// Equal deadlines fire in registration order. Observed on a threaded
/// one-worker runtime, where woken tasks run in the order they are woken
/// (the deterministic runtime shuffles equals on purpose).
#[test]
fn timers_equal_deadlines_fire_in_registration_order() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let in_tasks = Arc::clone(&log);
    rt.block_on(async move {
        let at = Instant::now() + 30 * MS;
        let handles: Vec<_> = [3, 1, 4, 0, 2]
            .into_iter()
            .map(|i| {
                let log = Arc::clone(&in_tasks);
                spawn(async move {
                    sleep_until(at).await;
                    log.lock().unwrap().push(i);
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
    assert_eq!(*log.lock().unwrap(), vec![3, 1, 4, 0, 2]);
}

#[test]
fn timers_timeout_elapses_when_the_inner_future_is_slower() {
    let rt = rt(2);
    let h = spawn_local(&rt, async {
        let out = timeout(50 * MS, sleep(100 * MS)).await;
        (out, Instant::now().since_start())
    });
    assert_eq!(rt.timers(), 2, "the inner sleep and the timeout");
    rt.advance(50 * MS);
    assert!(h.is_finished());
    assert_eq!(
        rt.timers(),
        0,
        "the inner sleep's timer went with the dropped future"
    );
    let (out, at) = rt.block_on(h).unwrap();
    assert!(matches!(out, Err(Elapsed { .. })), "{out:?}");
    assert_eq!(out.unwrap_err().to_string(), "deadline has elapsed");
    assert_eq!(at, 50 * MS);
}

#[test]
fn timers_timeout_returns_ok_when_the_inner_future_is_faster() {
    let rt = rt(3);
    let h = spawn_local(&rt, async {
        let out = timeout(100 * MS, async {
            sleep(30 * MS).await;
            7
        })
        .await;
        (out, Instant::now().since_start())
    });
    rt.advance(30 * MS);
    assert!(h.is_finished());
    assert_eq!(rt.timers(), 0, "the timeout's own timer is cancelled");
    assert_eq!(rt.block_on(h).unwrap(), (Ok(7), 30 * MS));
}

/// At a tie the inner future is polled first, so its output wins.
#[test]
fn timers_timeout_with_equal_deadline_returns_the_output() {
    let rt = rt(4);
    let out = rt.block_on(async { timeout(50 * MS, sleep(50 * MS)).await });
    assert_eq!(out, Ok(()));
    assert_eq!(rt.now(), 50 * MS);
}

#[test]
fn timers_join_with_timeout() {
    let rt = rt(5);
    let slow_done = Rc::new(Cell::new(false));
    let done = Rc::clone(&slow_done);
    let h = spawn_local(&rt, async move {
        let slow = spawn(async move {
            sleep(200 * MS).await;
            done.set(true);
            "slow"
        });
        let fast = spawn(async {
            sleep(20 * MS).await;
            "fast"
        });
        let slow_out = timeout(50 * MS, slow).await;
        let at = Instant::now().since_start();
        let fast_out = timeout(50 * MS, fast).await;
        (slow_out.is_err(), at, fast_out.map(Result::unwrap))
    });
    rt.advance(50 * MS);
    assert!(h.is_finished());
    assert_eq!(rt.block_on(h).unwrap(), (true, 50 * MS, Ok("fast")));
    assert!(!slow_done.get(), "the slow task has not finished yet");
    rt.advance(150 * MS);
    assert!(
        slow_done.get(),
        "a timed-out join detaches the task, which keeps running"
    );
}

#[test]
fn timers_dropping_a_sleep_cancels_its_timer() {
    let rt = rt(6);
    let (drop_tx, drop_rx) = oneshot::<()>();
    let (done_tx, done_rx) = oneshot::<()>();
    let h = spawn_local(&rt, async move {
        let mut nap = Box::pin(sleep(Duration::from_secs(3600)));
        poll_fn(|cx| {
            assert!(nap.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        drop_rx.await.unwrap();
        drop(nap);
        done_rx.await.unwrap();
    });
    assert_eq!(rt.timers(), 1);
    drop_tx.send(()).unwrap();
    rt.run_until_idle();
    assert_eq!(rt.timers(), 0, "dropping the Sleep removed its timer");
    assert!(!h.is_finished());
    done_tx.send(()).unwrap();
    rt.run_until_idle();
    assert!(h.is_finished());
}

#[test]
fn timers_aborting_a_sleeping_task_cancels_its_timer() {
    let rt = rt(7);
    let h = spawn_local(&rt, sleep(Duration::from_secs(60)));
    assert_eq!(rt.timers(), 1);
    h.abort();
    rt.run_until_idle();
    assert_eq!(rt.timers(), 0);
    assert!(rt.block_on(h).unwrap_err().is_cancelled());
}

#[test]
fn timers_block_on_advances_to_the_next_timer_only() {
    let rt = rt(8);
    let background = spawn_local(&rt, sleep(Duration::from_secs(5 * 3600)));
    let woke = rt.block_on(async {
        sleep(Duration::from_secs(3600)).await;
        sleep(Duration::from_secs(1800)).await;
        Instant::now().since_start()
    });
    assert_eq!(woke, Duration::from_secs(5400));
    assert_eq!(
        rt.now(),
        Duration::from_secs(5400),
        "block_on stopped at the last timer it needed"
    );
    assert!(!background.is_finished());
}

#[test]
fn timers_block_on_panics_on_deadlock_instead_of_hanging() {
    let rt = rt(9);
    let result = common::quietly(|| rt.block_on(std::future::pending::<()>()));
    let message = common::payload_text(&*result.unwrap_err()).unwrap();
    assert!(message.contains("deadlock"), "{message}");
}

#[test]
fn timers_instant_now_in_tasks_matches_rt_now() {
    let rt = rt(10);
    rt.advance(Duration::from_secs(7));
    assert_eq!(rt.now(), Duration::from_secs(7));
    let seen = rt.block_on(async { Instant::now().since_start() });
    assert_eq!(seen, rt.now());

    let h = spawn_local(&rt, async {
        let start = Instant::now();
        sleep(250 * MS).await;
        (Instant::now() - start, Instant::now().since_start())
    });
    rt.advance(250 * MS);
    let (slept, at) = rt.block_on(h).unwrap();
    assert_eq!(slept, 250 * MS);
    assert_eq!(at, rt.now());
    assert_eq!(rt.now(), Duration::from_secs(7) + 250 * MS);

    // `advance` stops at each deadline on the way, and tasks see that time.
    let log: Rc<RefCell<Vec<Duration>>> = Rc::default();
    let in_task = Rc::clone(&log);
    let h = spawn_local(&rt, async move {
        for _ in 0..3 {
            sleep(10 * MS).await;
            in_task.borrow_mut().push(Instant::now().since_start());
        }
    });
    let base = rt.now();
    rt.advance(Duration::from_secs(1));
    assert!(h.is_finished());
    assert_eq!(
        *log.borrow(),
        vec![base + 10 * MS, base + 20 * MS, base + 30 * MS]
    );
    assert_eq!(rt.now(), base + Duration::from_secs(1));
}

#[test]
fn timers_sleep_on_threaded_runtime_does_not_wake_early() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let (start, end) = rt.block_on(async {
        spawn(async {
            let start = Instant::now();
            sleep(15 * MS).await;
            (start, Instant::now())
        })
        .await
        .unwrap()
    });
    assert!(end - start >= 15 * MS, "slept {:?}", end - start);
}

/// `Sleep` is `Send`: registered on one worker (first polled there), then
/// awaited on another, it re-registers there and wakes at its deadline; the
/// entry left on the first worker fires harmlessly.
#[test]
fn timers_sleep_moved_to_another_worker_still_wakes() {
    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let first = rt.group(tiffany_sched::GroupConfig::new("first").worker(0));
    let second = rt.group(tiffany_sched::GroupConfig::new("second").worker(1));
    let registered = first.spawn(async {
        let mut nap = Box::pin(sleep(40 * MS));
        let start = Instant::now();
        poll_fn(|cx| {
            assert!(nap.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        (nap, start)
    });
    let (nap, start) = rt.block_on(registered).unwrap();
    let woke = rt.block_on(second.spawn(async move {
        nap.await;
        Instant::now()
    }));
    assert!(woke.unwrap() - start >= 40 * MS);
    // The worker that first registered it keeps working normally.
    assert_eq!(rt.block_on(first.spawn(async { 1 })).unwrap(), 1);
}
