//! Same-worker channels: bounded `channel` (backpressure, `try_send`,
//! closing from either side) and `oneshot`.
//!
//! The deterministic runtime runs its worker on the test thread, so the
//! `!Send` channel ends can stay with the test between runs; a wake from
//! the test thread travels through the worker's inbox like any other.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use common::spawn_local;
use tiffany_sched::sync::{RecvError, SendError, TrySendError, channel, oneshot};
use tiffany_sched::{Builder, DeterministicRuntime, spawn, timeout};

fn rt() -> DeterministicRuntime {
    Builder::deterministic().build_deterministic(1).unwrap()
}

#[test]
fn channel_sender_waits_while_full_and_resumes_when_the_receiver_takes() {
    let rt = rt();
    let (tx, mut rx) = channel::<u32>(2);
    let sent: Rc<RefCell<Vec<u32>>> = Rc::default();
    let log = Rc::clone(&sent);
    let sender = spawn_local(&rt, async move {
        for i in 0..5 {
            tx.send(i).await.unwrap();
            log.borrow_mut().push(i);
        }
    });
    assert_eq!(*sent.borrow(), vec![0, 1], "the third send waits for room");
    assert_eq!(rx.len(), 2);
    rt.run_until_idle();
    assert_eq!(
        *sent.borrow(),
        vec![0, 1],
        "still waiting: nothing was taken"
    );

    assert_eq!(rx.try_recv(), Some(0));
    rt.run_until_idle();
    assert_eq!(
        *sent.borrow(),
        vec![0, 1, 2],
        "one slot freed, one send resumed"
    );
    assert_eq!(rx.len(), 2);

    let mut got = Vec::new();
    while let Some(v) = rx.try_recv() {
        got.push(v);
        rt.run_until_idle();
    }
    assert_eq!(got, vec![1, 2, 3, 4]);
    assert!(sender.is_finished());
    assert!(rx.is_empty());
}

#[test]
fn channel_try_send_hands_the_value_back() {
    let (tx, rx) = channel::<String>(1);
    tx.try_send("first".to_owned()).unwrap();
    match tx.try_send("second".to_owned()) {
        Err(TrySendError::Full(v)) => assert_eq!(v, "second"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(!tx.is_closed());
    drop(rx);
    assert!(tx.is_closed());
    match tx.try_send("third".to_owned()) {
        Err(TrySendError::Closed(v)) => assert_eq!(v, "third"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(TrySendError::Full(()).to_string(), "the channel is full");
}

#[test]
fn channel_capacity_is_at_least_one() {
    let (tx, mut rx) = channel::<u8>(0);
    tx.try_send(1).unwrap();
    assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
    assert_eq!(rx.try_recv(), Some(1));
}

/// After every sender is gone the receiver drains what is buffered, then
/// sees `None`; a receiver waiting on an empty channel is woken by the last
/// sender's drop.
#[test]
fn channel_receiver_sees_none_after_all_senders_drop() {
    let rt = rt();
    let (tx, mut rx) = channel::<u32>(4);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    tx2.try_send(2).unwrap();
    drop(tx);
    drop(tx2);
    let drained = rt.block_on(async move {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    });
    assert_eq!(drained, vec![1, 2]);

    let (tx, mut rx) = channel::<u32>(4);
    let tx2 = tx.clone();
    let receiver = spawn_local(&rt, async move { rx.recv().await });
    assert!(!receiver.is_finished());
    drop(tx);
    rt.run_until_idle();
    assert!(!receiver.is_finished(), "one sender is still alive");
    drop(tx2);
    rt.run_until_idle();
    assert!(receiver.is_finished());
    assert_eq!(rt.block_on(receiver).unwrap(), None);
}

/// Once the receiver is dropped every send fails and hands the value back,
/// including a send that was waiting for room.
#[test]
fn channel_senders_get_the_value_back_after_the_receiver_drops() {
    let rt = rt();
    let (tx, rx) = channel::<String>(1);
    tx.try_send("buffered".to_owned()).unwrap();
    let waiting_tx = tx.clone();
    let waiting = spawn_local(
        &rt,
        async move { waiting_tx.send("waiting".to_owned()).await },
    );
    assert!(!waiting.is_finished());
    drop(rx);
    rt.run_until_idle();
    let SendError(v) = rt.block_on(waiting).unwrap().unwrap_err();
    assert_eq!(v, "waiting");
    let SendError(v) = rt
        .block_on(async move { tx.send("late".to_owned()).await })
        .unwrap_err();
    assert_eq!(v, "late");
}

/// A send that gave up (its future dropped by a timeout) must not swallow
/// the wake-up meant for a sender still waiting: when the receiver frees a
/// slot, the waiting sender gets it.
#[test]
fn channel_abandoned_send_does_not_steal_the_wakeup() {
    let rt = rt();
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(0).unwrap();
    let impatient_tx = tx.clone();
    let impatient = spawn_local(&rt, async move {
        timeout(Duration::from_millis(10), impatient_tx.send(1))
            .await
            .is_err()
    });
    let patient = spawn_local(&rt, async move { tx.send(2).await });
    rt.advance(Duration::from_millis(10));
    assert!(
        rt.block_on(impatient).unwrap(),
        "the impatient send timed out"
    );
    assert!(!patient.is_finished());

    assert_eq!(rx.try_recv(), Some(0));
    rt.run_until_idle();
    assert!(
        patient.is_finished(),
        "a slot is free but the waiting sender was never woken"
    );
    assert_eq!(rx.try_recv(), Some(2));
}

/// A waiting send that is polled again (its task woken by something else)
/// must not leave a second waker behind that later absorbs a wake-up meant
/// for another waiting sender.
#[test]
fn channel_repolled_send_does_not_steal_the_wakeup() {
    let rt = rt();
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(0).unwrap();
    let (nudge_tx, nudge_rx) = oneshot::<()>();
    let a_tx = tx.clone();
    let a = spawn_local(&rt, async move {
        // Awaits the send and, meanwhile, a nudge that wakes the task once.
        let mut send = std::pin::pin!(a_tx.send(1));
        let mut nudge = Some(nudge_rx);
        std::future::poll_fn(|cx| {
            if let Some(n) = nudge.as_mut() {
                if std::pin::Pin::new(n).poll(cx).is_ready() {
                    nudge = None;
                }
            }
            send.as_mut().poll(cx)
        })
        .await
    });
    nudge_tx.send(()).unwrap();
    rt.run_until_idle();
    let b = spawn_local(&rt, async move { tx.send(2).await });
    assert!(!a.is_finished() && !b.is_finished());

    assert_eq!(rx.try_recv(), Some(0));
    rt.run_until_idle();
    assert!(a.is_finished(), "the first waiting sender got the slot");
    assert_eq!(rx.try_recv(), Some(1));
    rt.run_until_idle();
    assert!(
        b.is_finished(),
        "a slot is free but the second waiting sender was never woken"
    );
    assert_eq!(rx.try_recv(), Some(2));
}

#[test]
fn channel_many_senders_one_receiver_in_order_per_sender() {
    let rt = Builder::deterministic().build_deterministic(42).unwrap();
    let got = rt.block_on(async {
        let (tx, mut rx) = channel::<(u32, u32)>(3);
        for s in 0..4 {
            let tx = tx.clone();
            drop(spawn(async move {
                for i in 0..25 {
                    tx.send((s, i)).await.unwrap();
                }
            }));
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    });
    assert_eq!(got.len(), 100);
    for s in 0..4 {
        let mine: Vec<u32> = got
            .iter()
            .filter(|(from, _)| *from == s)
            .map(|&(_, i)| i)
            .collect();
        assert_eq!(mine, (0..25).collect::<Vec<_>>(), "sender {s}");
    }
}

#[test]
fn oneshot_send_then_receive() {
    let rt = rt();
    let (tx, rx) = oneshot::<&'static str>();
    let receiver = spawn_local(&rt, rx);
    assert!(!receiver.is_finished());
    assert!(!tx.is_closed());
    tx.send("hello").unwrap();
    rt.run_until_idle();
    assert_eq!(rt.block_on(receiver).unwrap(), Ok("hello"));

    // Sent before the receiver is first polled.
    let (tx, rx) = oneshot::<u8>();
    tx.send(9).unwrap();
    assert_eq!(rt.block_on(rx), Ok(9));
}

#[test]
fn oneshot_receiver_fails_when_the_sender_drops_unsent() {
    let rt = rt();
    let (tx, rx) = oneshot::<u8>();
    let receiver = spawn_local(&rt, rx);
    drop(tx);
    rt.run_until_idle();
    assert!(receiver.is_finished(), "the waiting receiver was woken");
    let err: RecvError = rt.block_on(receiver).unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the oneshot sender was dropped without sending"
    );

    // Dropped before the receiver is first polled.
    let (tx, rx) = oneshot::<u8>();
    drop(tx);
    assert_eq!(rt.block_on(rx), Err(err));
}

#[test]
fn oneshot_send_to_a_dropped_receiver_hands_the_value_back() {
    let (tx, rx) = oneshot::<String>();
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.send("lost".to_owned()), Err("lost".to_owned()));
}
