//! Panic isolation: a panic fails only its own task, a panicking destructor
//! during cancellation does not take down the worker, and `block_on` resumes
//! a panic in its caller.
//!
//! Expected panics carry [`common::EXPECTED`] and are kept quiet by the hook
//! from [`common::quiet_expected_panics`].

mod common;

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use common::{DropProbe, EXPECTED, PanicOnDrop, payload_text, quiet_expected_panics, wait_until};
use tiffany_sched::{Builder, GroupConfig, Runtime, spawn, yield_now};

async fn count_to(n: u64) -> u64 {
    let mut total = 0;
    for i in 1..=n {
        total += i;
        yield_now().await;
    }
    total
}

fn boom() -> u64 {
    panic!("{EXPECTED} boom")
}

#[test]
fn panic_fails_only_its_own_task() {
    quiet_expected_panics();
    let rt = Runtime::builder().workers(2).io(false).build().unwrap();
    let doomed = rt.group(GroupConfig::new("doomed").worker(0));
    let neighbour = rt.group(GroupConfig::new("neighbour").worker(1));
    let same_worker = rt.group(GroupConfig::new("same-worker").worker(0));

    let sibling_before = doomed.spawn(count_to(100));
    let panicker = doomed.spawn(async {
        yield_now().await;
        boom()
    });
    let sibling_after = doomed.spawn(count_to(200));
    let other_agent = neighbour.spawn(count_to(300));
    let same_worker_agent = same_worker.spawn(count_to(400));
    let panicker_id = panicker.id();

    let err = rt.block_on(panicker).unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_cancelled());
    assert_eq!(err.id(), panicker_id);
    assert!(
        err.panic_message().unwrap().ends_with("boom"),
        "{:?}",
        err.panic_message()
    );
    assert!(err.to_string().contains("panicked"), "{err}");
    let payload = err.try_into_panic().unwrap();
    assert!(payload_text(&*payload).unwrap().contains("boom"));

    assert_eq!(rt.block_on(sibling_before).unwrap(), 5_050);
    assert_eq!(rt.block_on(sibling_after).unwrap(), 20_100);
    assert_eq!(rt.block_on(other_agent).unwrap(), 45_150);
    assert_eq!(rt.block_on(same_worker_agent).unwrap(), 80_200);
    // The worker that ran the panic still runs new work of the same agent.
    assert_eq!(rt.block_on(doomed.spawn(count_to(10))).unwrap(), 55);

    let feedback = rt.feedback();
    let counters = &feedback.agent(doomed.id()).unwrap().counters;
    assert_eq!(
        (counters.panicked, counters.completed, counters.cancelled),
        (1, 3, 0)
    );
}

#[test]
fn panic_payload_that_is_not_a_string_has_no_message() {
    quiet_expected_panics();
    let rt = Builder::deterministic().build_deterministic(1).unwrap();
    let h = rt.spawn(async {
        // A non-string payload cannot carry the marker: the run below is
        // wrapped in `quietly` instead.
        std::panic::panic_any(42u32);
    });
    let err = common::quietly(|| {
        rt.run_until_idle();
    });
    assert!(err.is_ok(), "the panic stayed inside the task");
    let err = rt.block_on(h).unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), None);
    assert_eq!(
        *err.try_into_panic().unwrap().downcast::<u32>().unwrap(),
        42
    );
}

#[test]
fn panic_in_drop_during_abort_does_not_take_down_the_worker() {
    quiet_expected_panics();
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let agent = rt.group(GroupConfig::new("fragile"));
    let h = agent.spawn(async {
        let _bomb = PanicOnDrop;
        pending::<()>().await;
    });
    wait_until("the task waits", || agent.feedback().counters.waiting == 1);
    h.abort();
    let err = rt.block_on(h).unwrap_err();
    assert!(
        err.is_cancelled(),
        "the outcome stays a cancellation: {err:?}"
    );
    // The same worker keeps running tasks, old and new.
    assert_eq!(rt.block_on(agent.spawn(count_to(10))).unwrap(), 55);
    assert_eq!(rt.block_on(async { 1 + 1 }), 2);
}

#[test]
fn panic_in_drop_during_runtime_shutdown_is_contained() {
    quiet_expected_panics();
    let rt = Runtime::builder()
        .workers(1)
        .io(false)
        .thread_name("shutdown-panic")
        .build()
        .unwrap();
    let agent = rt.group(GroupConfig::new("fragile"));
    let bomb = agent.spawn(async {
        let _bomb = PanicOnDrop;
        pending::<()>().await;
    });
    let probe = DropProbe::new();
    let guard = probe.guard();
    let after = agent.spawn(async move {
        let _guard = guard;
        pending::<()>().await;
    });
    wait_until("both tasks wait", || agent.feedback().counters.waiting == 2);
    drop(rt);
    assert!(
        common::poll_on_this_thread(bomb)
            .unwrap_err()
            .is_cancelled()
    );
    assert!(
        common::poll_on_this_thread(after)
            .unwrap_err()
            .is_cancelled()
    );
    assert_eq!(probe.dropped_on().as_deref(), Some("shutdown-panic-0"));
}

/// A future that completes and whose destructor then panics: the task
/// reports the panic, not the output.
struct ReadyThenPanicOnDrop;

impl Future for ReadyThenPanicOnDrop {
    type Output = u8;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u8> {
        Poll::Ready(1)
    }
}

impl Drop for ReadyThenPanicOnDrop {
    fn drop(&mut self) {
        panic!("{EXPECTED} destructor after completion");
    }
}

#[test]
fn panic_in_drop_after_completion_is_reported_as_a_panic() {
    quiet_expected_panics();
    let rt = Builder::deterministic().build_deterministic(2).unwrap();
    let agent = rt.group(GroupConfig::new("fragile"));
    let h = agent.spawn(ReadyThenPanicOnDrop);
    let after = agent.spawn(async { 2 });
    rt.run_until_idle();
    let err = rt.block_on(h).unwrap_err();
    assert!(err.is_panic());
    assert!(
        err.panic_message()
            .unwrap()
            .contains("destructor after completion")
    );
    assert_eq!(rt.block_on(after).unwrap(), 2);
}

#[test]
fn panic_in_block_on_resumes_in_the_caller() {
    quiet_expected_panics();
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            yield_now().await;
            panic!("{EXPECTED} from block_on");
        })
    }));
    let payload = result.unwrap_err();
    assert!(payload_text(&*payload).unwrap().ends_with("from block_on"));
    assert_eq!(rt.block_on(async { 5 }), 5, "the runtime survives");
}

#[test]
fn panic_in_deterministic_block_on_resumes_in_the_caller() {
    quiet_expected_panics();
    let rt = Builder::deterministic().build_deterministic(3).unwrap();
    let survived = Arc::new(AtomicBool::new(false));
    let s = survived.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async move {
            // A sibling spawned before the panic keeps running afterwards.
            drop(spawn(async move {
                yield_now().await;
                s.store(true, Ordering::SeqCst);
            }));
            panic!("{EXPECTED} deterministic");
        })
    }));
    assert!(
        payload_text(&*result.unwrap_err())
            .unwrap()
            .ends_with("deterministic")
    );
    rt.run_until_idle();
    assert!(survived.load(Ordering::SeqCst));
    assert_eq!(rt.block_on(async { 6 }), 6);
}
