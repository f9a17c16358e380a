//! Spawning and joining: `!Send` futures, spawning across workers, join
//! handles awaited from plain threads, task and agent identity, priority
//! inheritance, and many tasks without leaks.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::poll_on_this_thread;
use tiffany_sched::{
    Builder, GroupConfig, Handle, Priority, Runtime, current_agent, current_task, sleep, spawn,
    spawn_with_priority, yield_now,
};

/// Counts the bytes each thread has allocated and not yet freed, so the
/// leak test can measure its own worker thread whatever other tests do.
struct CountingAllocator;

thread_local! {
    static NET_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: the slot may already be gone while the thread exits.
    let _ = NET_BYTES.try_with(|n| n.set(n.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping only touches a const-initialised thread-local `Cell`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout (the caller upholds
        // `GlobalAlloc::alloc`'s contract).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn net_bytes() -> i64 {
    NET_BYTES.with(Cell::get)
}

#[test]
fn spawn_accepts_non_send_futures() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let n = rt.block_on(async {
        spawn(async {
            let shared = Rc::new(Cell::new(1));
            let child = {
                let shared = Rc::clone(&shared);
                spawn(async move {
                    yield_now().await;
                    shared.set(shared.get() * 10);
                })
            };
            yield_now().await;
            sleep(Duration::from_millis(1)).await; // the Rc is held across awaits
            child.await.unwrap();
            shared.get() + 1
        })
        .await
        .unwrap()
    });
    assert_eq!(n, 11);

    let det = Builder::deterministic().build_deterministic(1).unwrap();
    let n = det.block_on(async {
        let shared = Rc::new(5);
        yield_now().await;
        *shared
    });
    assert_eq!(n, 5);
}

/// `spawn_pinned` and `block_on_pinned` take a `Send` closure from any
/// thread and build the `!Send` future on the worker.
#[test]
fn spawn_pinned_builds_non_send_futures_on_the_worker() {
    let rt = Runtime::builder()
        .workers(2)
        .io(false)
        .thread_name("pinned")
        .build()
        .unwrap();
    let agent = rt.group(GroupConfig::new("pinned-agent").worker(1));
    let h = agent.spawn_pinned(|| {
        let built_on = thread::current().name().map(str::to_owned);
        async move {
            let rc = Rc::new(Cell::new(0));
            for _ in 0..3 {
                yield_now().await;
                rc.set(rc.get() + 1);
            }
            (
                built_on,
                thread::current().name().map(str::to_owned),
                rc.get(),
                current_agent(),
            )
        }
    });
    let (built_on, ran_on, count, agent_id) = rt.block_on(h).unwrap();
    assert_eq!(built_on.as_deref(), Some("pinned-1"));
    assert_eq!(ran_on.as_deref(), Some("pinned-1"));
    assert_eq!(count, 3);
    assert_eq!(agent_id, Some(agent.id()));

    let via_handle = rt.block_on(rt.handle().spawn_pinned(|| async {
        let rc = Rc::new(7);
        yield_now().await;
        *rc
    }));
    assert_eq!(via_handle.unwrap(), 7);
    let via_block_on = rt.block_on_pinned(|| async {
        let rc = Rc::new(8);
        yield_now().await;
        *rc
    });
    assert_eq!(via_block_on, 8);
}

/// A task on worker 0 spawns onto an agent pinned to worker 1 and awaits
/// the result across workers.
#[test]
fn spawn_onto_another_workers_agent_from_a_task() {
    let rt = Runtime::builder()
        .workers(2)
        .io(false)
        .thread_name("cross")
        .build()
        .unwrap();
    let here = rt.group(GroupConfig::new("here").worker(0));
    let there = rt.group(GroupConfig::new("there").worker(1));
    let there_id = there.id();
    let outer = here.spawn(async move {
        let inner = there.spawn(async {
            yield_now().await;
            (current_agent(), thread::current().name().map(str::to_owned))
        });
        let from = thread::current().name().map(str::to_owned);
        let (agent, on) = inner.await.unwrap();
        (from, agent, on)
    });
    let (from, agent, on) = rt.block_on(outer).unwrap();
    assert_eq!(from.as_deref(), Some("cross-0"));
    assert_eq!(on.as_deref(), Some("cross-1"));
    assert_eq!(agent, Some(there_id));
}

/// A join handle awaited from plain threads: through another runtime's
/// `block_on`, and by polling with a thread-parking waker.
#[test]
#[allow(clippy::disallowed_methods)] // joins plain threads from the test thread
fn join_handle_awaited_from_plain_threads() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let other = Runtime::builder().workers(1).io(false).build().unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<u32>();
    let (release2_tx, release2_rx) = tokio::sync::oneshot::channel::<u32>();
    let first = rt.spawn(async move { release_rx.await.unwrap() + 1 });
    let second = rt.spawn(async move { release2_rx.await.unwrap() * 2 });
    let via_other_runtime = thread::spawn(move || other.block_on(first));
    let via_polling = thread::spawn(move || poll_on_this_thread(second));
    release_tx.send(41).unwrap();
    release2_tx.send(21).unwrap();
    assert_eq!(via_other_runtime.join().unwrap().unwrap(), 42);
    assert_eq!(via_polling.join().unwrap().unwrap(), 42);
}

#[test]
fn spawn_current_task_and_agent_identify_the_running_task() {
    assert_eq!(current_task(), None);
    assert_eq!(current_agent(), None);
    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let agent = rt.group(GroupConfig::new("who"));
    let h = agent.spawn(async {
        let me = (current_task(), current_agent());
        let child = spawn(async { (current_task(), current_agent()) });
        let child_id = child.id();
        let child_seen = child.await.unwrap();
        (me, child_id, child_seen)
    });
    let id = h.id();
    let ((task, agent_id), child_id, (child_task, child_agent)) = rt.block_on(h).unwrap();
    assert_eq!(task, Some(id));
    assert_eq!(agent_id, Some(agent.id()));
    assert_eq!(child_task, Some(child_id));
    assert_ne!(child_id, id);
    assert_eq!(
        child_agent,
        Some(agent.id()),
        "a child belongs to its parent's agent"
    );

    // Task ids are unique across workers and spawn paths.
    let ids: Vec<_> = (0..4)
        .map(|w| {
            let g = rt.group(GroupConfig::new(format!("w{w}")).worker(w % 2));
            rt.block_on(g.spawn(async {
                (
                    current_task().unwrap(),
                    spawn(async { current_task().unwrap() }).await.unwrap(),
                )
            }))
            .unwrap()
        })
        .flat_map(|(a, b)| [a, b])
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[test]
fn spawn_handle_current_inside_tasks() {
    assert!(Handle::try_current().is_none());
    let outside = common::quietly(Handle::current);
    assert!(outside.is_err(), "Handle::current outside a task panics");

    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let (workers, spawned) = rt.block_on(async {
        let handle = Handle::current();
        let h = handle.spawn(async { 6 * 7 });
        (handle.workers(), h.await.unwrap())
    });
    assert_eq!((workers, spawned), (2, 42));
    let det = Builder::deterministic().build_deterministic(2).unwrap();
    assert_eq!(det.block_on(async { Handle::current().workers() }), 1);
}

/// A child inherits its parent's priority unless given one: a Critical
/// parent's child runs before every ready Normal task, a child spawned at
/// Background after all of them.
#[test]
fn spawn_children_inherit_the_parents_priority() {
    for seed in 0..6 {
        let rt = Builder::deterministic().build_deterministic(seed).unwrap();
        let agent = rt.group(GroupConfig::new("family"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for n in 0..3 {
            let log = Arc::clone(&log);
            drop(agent.spawn(async move {
                for _ in 0..3 {
                    log.lock().unwrap().push(format!("normal{n}"));
                    yield_now().await;
                }
            }));
        }
        let l = Arc::clone(&log);
        let parent = agent.spawn_with_priority(Priority::Critical, async move {
            let (l1, l2) = (Arc::clone(&l), Arc::clone(&l));
            let inherited = spawn(async move {
                for _ in 0..3 {
                    l1.lock().unwrap().push("inherited".to_owned());
                    yield_now().await;
                }
            });
            let lowered = spawn_with_priority(Priority::Background, async move {
                for _ in 0..3 {
                    l2.lock().unwrap().push("lowered".to_owned());
                    yield_now().await;
                }
            });
            inherited.await.unwrap();
            lowered.await.unwrap();
        });
        rt.run_until_idle();
        assert!(parent.is_finished());
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 15);
        assert!(
            log[..3].iter().all(|e| e == "inherited"),
            "seed {seed}: {log:?}"
        );
        assert!(
            log[3..12].iter().all(|e| e.starts_with("normal")),
            "seed {seed}: {log:?}"
        );
        assert!(
            log[12..].iter().all(|e| e == "lowered"),
            "seed {seed}: {log:?}"
        );
    }
}

/// 100,000 joined tasks and 10,000 detached ones per batch: every task
/// completes, every future is dropped, and a second batch leaves no memory
/// behind on the worker (the first batch sizes the worker's tables).
#[test]
fn spawn_many_tasks_without_leaking() {
    const JOINED: usize = 100_000;
    const DETACHED: usize = 10_000;
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let agent = rt.group(GroupConfig::new("many").worker(0));
    let token = Arc::new(());
    let in_root = (agent.clone(), Arc::clone(&token));
    let (sum, leaked) = rt.block_on(async move {
        let (agent, token) = in_root;
        let batch = |round: u64| {
            let (agent, token) = (agent.clone(), Arc::clone(&token));
            async move {
                let handles: Vec<_> = (0..JOINED as u64)
                    .map(|i| {
                        let token = Arc::clone(&token);
                        agent.spawn(async move {
                            let _token = token;
                            yield_now().await;
                            i
                        })
                    })
                    .collect();
                for _ in 0..DETACHED {
                    let token = Arc::clone(&token);
                    drop(agent.spawn(async move {
                        let _token = token;
                        yield_now().await;
                    }));
                }
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap();
                }
                let expected = round * (JOINED + DETACHED) as u64;
                while agent.feedback().counters.completed < expected {
                    yield_now().await;
                }
                sum
            }
        };
        let first = batch(1).await;
        let before = net_bytes();
        let second = batch(2).await;
        (first + second, net_bytes() - before)
    });
    let n = JOINED as u64;
    assert_eq!(sum, n * (n - 1));
    assert_eq!(Arc::strong_count(&token), 1, "every future was dropped");
    let c = agent.feedback().counters;
    let total = 2 * (JOINED + DETACHED) as u64;
    assert_eq!(
        (c.spawned, c.completed, c.cancelled, c.panicked),
        (total, total, 0, 0)
    );
    assert_eq!((c.ready, c.waiting, c.parked), (0, 0, 0));
    assert!(
        leaked.abs() < 64 * 1024,
        "a batch of {} tasks left {leaked} bytes allocated on the worker",
        JOINED + DETACHED
    );
}
