//! Cancellation: `JoinHandle::abort`, and runtime shutdown cancelling every
//! unfinished task. A cancelled task's future is dropped on its own worker
//! and its handle reports `JoinError::is_cancelled`.

mod common;

use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use common::{DropProbe, poll_on_this_thread, poll_once, wait_until};
use tiffany_sched::{
    Builder, GroupConfig, JoinHandle, Policy, Priority, Runtime, sleep, spawn, yield_now,
};

#[test]
fn abort_waiting_task_reports_cancelled_and_drops_its_future_on_the_worker() {
    let rt = Runtime::builder()
        .workers(1)
        .io(false)
        .thread_name("abort-test")
        .build()
        .unwrap();
    let agent = rt.group(GroupConfig::new("waiter"));
    let probe = DropProbe::new();
    let guard = probe.guard();
    let handle = agent.spawn(async move {
        let _guard = guard;
        pending::<()>().await;
    });
    let id = handle.id();
    wait_until("the task waits", || agent.feedback().counters.waiting == 1);
    assert!(!probe.is_dropped());
    handle.abort();
    let err = rt.block_on(handle).unwrap_err();
    assert!(err.is_cancelled());
    assert!(!err.is_panic());
    assert_eq!(err.id(), id);
    assert!(
        err.try_into_panic().is_err(),
        "a cancellation carries no panic payload"
    );
    assert_eq!(probe.dropped_on().as_deref(), Some("abort-test-0"));
    let counters = agent.feedback().counters;
    assert_eq!(
        (counters.cancelled, counters.completed, counters.waiting),
        (1, 0, 0)
    );
}

#[test]
fn abort_before_the_first_poll_never_runs_the_future() {
    let rt = Builder::deterministic().build_deterministic(1).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let probe = DropProbe::new();
    let (r, guard) = (ran.clone(), probe.guard());
    let handle = rt.spawn(async move {
        let _guard = guard;
        r.store(true, Ordering::SeqCst);
    });
    handle.abort();
    rt.run_until_idle();
    assert!(handle.is_finished());
    assert!(
        !ran.load(Ordering::SeqCst),
        "an aborted task must not be polled"
    );
    assert!(probe.is_dropped());
    assert!(rt.block_on(handle).unwrap_err().is_cancelled());
}

#[test]
fn abort_of_a_finished_task_has_no_effect() {
    let rt = Builder::deterministic().build_deterministic(2).unwrap();
    let agent = rt.group(GroupConfig::new("done"));
    let handle = agent.spawn(async { 5 });
    rt.run_until_idle();
    assert!(handle.is_finished());
    handle.abort();
    handle.abort();
    rt.run_until_idle();
    assert_eq!(rt.block_on(handle).unwrap(), 5);
    let counters = agent.feedback().counters;
    assert_eq!((counters.completed, counters.cancelled), (1, 0));
}

/// A task that aborts itself finishes its current poll and is stopped at
/// its next yield: the code after the yield never runs.
#[test]
fn abort_self_stops_the_task_at_its_next_yield() {
    let rt = Builder::deterministic().build_deterministic(3).unwrap();
    let slot: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
    let steps = Arc::new(AtomicU64::new(0));
    let (me, s) = (slot.clone(), steps.clone());
    let handle = rt.spawn(async move {
        s.fetch_add(1, Ordering::SeqCst);
        me.lock().unwrap().as_ref().unwrap().abort();
        s.fetch_add(1, Ordering::SeqCst);
        yield_now().await;
        s.fetch_add(1, Ordering::SeqCst);
    });
    *slot.lock().unwrap() = Some(handle);
    rt.run_until_idle();
    assert_eq!(steps.load(Ordering::SeqCst), 2);
    let handle = slot.lock().unwrap().take().unwrap();
    assert!(rt.block_on(handle).unwrap_err().is_cancelled());
}

/// Aborting from another task on the same worker (a local wake).
#[test]
fn abort_from_a_sibling_task_cancels_a_sleeping_task() {
    let rt = Builder::deterministic().build_deterministic(4).unwrap();
    let probe = DropProbe::new();
    let guard = probe.guard();
    let result = rt.block_on(async move {
        let sleeper = spawn(async move {
            let _guard = guard;
            sleep(Duration::from_secs(3600)).await;
        });
        yield_now().await;
        sleeper.abort();
        sleeper.await
    });
    assert!(result.unwrap_err().is_cancelled());
    assert!(probe.is_dropped());
    assert_eq!(rt.timers(), 0);
    assert_eq!(rt.now(), Duration::ZERO, "no timer had to fire");
}

/// Dropping a runtime cancels tasks in every state (waiting, always ready,
/// parked, sleeping) on every worker. Their futures are dropped on their
/// workers, and their handles report cancellation however they are awaited:
/// from a task of another runtime, from a plain thread, or polled.
#[test]
#[allow(clippy::disallowed_methods)] // joins a plain thread from the test thread
fn abort_dropping_the_runtime_cancels_unfinished_tasks() {
    // Fifo, so the parked Background task is popped (and parked) even though
    // a Normal task of its agent is always ready.
    let rt = Runtime::builder()
        .workers(2)
        .policy(Policy::Fifo)
        .io(false)
        .thread_name("doomed")
        .build()
        .unwrap();
    let other = Runtime::builder().workers(1).io(false).build().unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let mut probes = Vec::new();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let mut agents = Vec::new();
    for worker in 0..2 {
        let agent = rt.group(GroupConfig::new(format!("agent-{worker}")).worker(worker));
        agents.push(agent.clone());
        // Waiting on nothing.
        let probe = DropProbe::new();
        let guard = probe.guard();
        handles.push(agent.spawn(async move {
            let _guard = guard;
            pending::<()>().await;
        }));
        probes.push(probe);
        // Always ready.
        let probe = DropProbe::new();
        let (guard, polls) = (probe.guard(), polls.clone());
        handles.push(agent.spawn(async move {
            let _guard = guard;
            loop {
                polls.fetch_add(1, Ordering::Relaxed);
                yield_now().await;
            }
        }));
        probes.push(probe);
        // Parked.
        let probe = DropProbe::new();
        let guard = probe.guard();
        agent.park(Priority::Background);
        handles.push(agent.spawn_with_priority(Priority::Background, async move {
            let _guard = guard;
            yield_now().await;
        }));
        probes.push(probe);
        // Sleeping on a runtime timer.
        let probe = DropProbe::new();
        let guard = probe.guard();
        handles.push(agent.spawn(async move {
            let _guard = guard;
            sleep(Duration::from_secs(3600)).await;
        }));
        probes.push(probe);
    }
    wait_until("every task started or parked", || {
        let feedback = rt.feedback();
        let agents: Vec<_> = (0..2)
            .map(|w| feedback.agent_named(&format!("agent-{w}")).unwrap())
            .collect();
        agents
            .iter()
            .all(|a| a.counters.parked == 1 && a.counters.waiting_on_timer == 1)
            && polls.load(Ordering::Relaxed) > 100
    });
    assert!(probes.iter().all(|p| !p.is_dropped()));

    let polled = handles.pop().unwrap();
    let from_thread = handles.pop().unwrap();
    let from_other_runtime = handles.pop().unwrap();
    let in_other = other.spawn(from_other_runtime);
    let plain = thread::spawn(move || poll_on_this_thread(from_thread));
    let mut polled = polled;
    assert!(poll_once(&mut polled).is_pending());

    drop(rt);

    assert!(matches!(poll_once(&mut polled), Poll::Ready(Err(ref e)) if e.is_cancelled()));
    assert!(plain.join().unwrap().unwrap_err().is_cancelled());
    assert!(
        other
            .block_on(in_other)
            .unwrap()
            .unwrap_err()
            .is_cancelled()
    );
    for h in handles {
        assert!(h.is_finished());
        assert!(poll_on_this_thread(h).unwrap_err().is_cancelled());
    }
    for (i, probe) in probes.iter().enumerate() {
        let on = probe
            .dropped_on()
            .unwrap_or_else(|| panic!("future {i} was not dropped"));
        assert!(on.starts_with("doomed-"), "future {i} dropped on {on}");
    }
    // The agents' gauges were settled by the shutdown.
    for agent in &agents {
        let c = agent.feedback().counters;
        assert_eq!(
            (c.spawned, c.cancelled, c.completed),
            (4, 4, 0),
            "{}",
            agent.name()
        );
        assert_eq!(
            (c.ready, c.waiting, c.waiting_on_timer, c.parked),
            (0, 0, 0, 0),
            "{}",
            agent.name()
        );
    }
}

#[test]
fn abort_dropping_a_deterministic_runtime_cancels_unfinished_tasks() {
    let rt = Builder::deterministic().build_deterministic(5).unwrap();
    let probe = DropProbe::new();
    let guard = probe.guard();
    let mut handle = rt.spawn(async move {
        let _guard = guard;
        pending::<()>().await;
    });
    rt.run_until_idle();
    assert!(poll_once(&mut handle).is_pending());
    drop(rt);
    assert!(probe.is_dropped());
    assert!(matches!(poll_once(&mut handle), Poll::Ready(Err(ref e)) if e.is_cancelled()));
}

/// A group (or handle) that outlives its runtime still accepts spawns: the
/// task is cancelled at once and its future (or, for `spawn_pinned`, the
/// closure that would build it) is dropped on the calling thread.
#[test]
fn abort_spawning_after_the_runtime_is_gone_cancels_at_once() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let agent = rt.group(GroupConfig::new("orphan"));
    let handle = rt.handle().clone();
    drop(rt);
    let ran = Arc::new(AtomicBool::new(false));
    for spawned in [0, 1] {
        let probe = DropProbe::new();
        let (guard, r) = (probe.guard(), ran.clone());
        let future = async move {
            let _guard = guard;
            r.store(true, Ordering::SeqCst);
        };
        let h = if spawned == 0 {
            agent.spawn(future)
        } else {
            handle.spawn(future)
        };
        assert!(h.is_finished());
        assert!(poll_on_this_thread(h).unwrap_err().is_cancelled());
        assert_eq!(
            probe.dropped_on().as_deref(),
            Some(thread::current().name().unwrap_or("<unnamed>"))
        );
    }
    // `spawn_pinned`: the closure is dropped unrun on the calling thread.
    let probe = DropProbe::new();
    let (guard, r) = (probe.guard(), ran.clone());
    let h = agent.spawn_pinned(move || {
        r.store(true, Ordering::SeqCst);
        async move { drop(guard) }
    });
    assert!(poll_on_this_thread(h).unwrap_err().is_cancelled());
    assert_eq!(
        probe.dropped_on().as_deref(),
        Some(thread::current().name().unwrap_or("<unnamed>"))
    );
    assert!(!ran.load(Ordering::SeqCst));
}

/// Aborting is how overload control sheds parked work, so an aborted parked
/// task should be cancelled (future dropped, handle ready) without waiting
/// for its class to be unparked.
#[test]
fn abort_of_a_parked_task_cancels_it_without_unparking() {
    let rt = Builder::deterministic().build_deterministic(6).unwrap();
    let agent = rt.group(GroupConfig::new("parked"));
    agent.park(Priority::Background);
    let probe = DropProbe::new();
    let guard = probe.guard();
    let handle = agent.spawn_with_priority(Priority::Background, async move {
        let _guard = guard;
    });
    rt.run_until_idle();
    assert_eq!(agent.feedback().counters.parked, 1);
    handle.abort();
    rt.run_until_idle();
    assert!(
        handle.is_finished(),
        "the aborted parked task is still held"
    );
    assert!(probe.is_dropped());
    assert_eq!(agent.feedback().counters.parked, 0);
    assert!(rt.block_on(handle).unwrap_err().is_cancelled());
}
