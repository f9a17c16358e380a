//! A single-value, same-worker channel.
//!
//! Invariants: the value is written at most once, by `send`, and read at most
//! once, by the receiver. `closed` records that the other side is gone; the
//! receiver's waker is stored only while it waits.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Inner<T> {
    value: Cell<Option<T>>,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

/// Creates a oneshot channel for tasks on the same worker.
///
/// ```
/// use tiffany_sched::{Runtime, spawn, sync::oneshot};
///
/// let rt = Runtime::builder().workers(1).build().unwrap();
/// let got = rt.block_on_pinned(|| async {
///     let (tx, rx) = oneshot::<u32>();
///     spawn(async move { tx.send(7).unwrap() });
///     rx.await.unwrap()
/// });
/// assert_eq!(got, 7);
/// ```
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let inner = Rc::new(Inner {
        value: Cell::new(None),
        waker: Cell::new(None),
        closed: Cell::new(false),
    });
    (
        OneshotSender {
            inner: Some(inner.clone()),
        },
        OneshotReceiver { inner },
    )
}

/// Sends the one value. Dropping it unsent makes the receiver fail with
/// [`RecvError`].
pub struct OneshotSender<T> {
    inner: Option<Rc<Inner<T>>>,
}

/// Awaits the one value.
pub struct OneshotReceiver<T> {
    inner: Rc<Inner<T>>,
}

/// The sender was dropped without sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvError(());

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the oneshot sender was dropped without sending")
    }
}

impl std::error::Error for RecvError {}

impl<T> OneshotSender<T> {
    /// Sends `value`; hands it back when the receiver is gone.
    pub fn send(mut self, value: T) -> Result<(), T> {
        let Some(inner) = self.inner.take() else {
            return Err(value);
        };
        if inner.closed.get() {
            return Err(value);
        }
        inner.value.set(Some(value));
        inner.closed.set(true);
        let waker = inner.waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.closed.get())
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.closed.set(true);
            let waker = inner.waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &self.inner;
        if let Some(value) = inner.value.take() {
            return Poll::Ready(Ok(value));
        }
        if inner.closed.get() {
            return Poll::Ready(Err(RecvError(())));
        }
        let waker = match inner.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        inner.waker.set(Some(waker));
        Poll::Pending
    }
}

impl<T> Drop for OneshotReceiver<T> {
    fn drop(&mut self) {
        self.inner.closed.set(true);
    }
}

impl<T> fmt::Debug for OneshotSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneshotSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> fmt::Debug for OneshotReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneshotReceiver").finish_non_exhaustive()
    }
}
