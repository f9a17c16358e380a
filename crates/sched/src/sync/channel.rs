//! A bounded, many-sender, one-receiver channel for tasks on one worker.
//!
//! Invariants:
//! - `buffer.len() <= capacity` at all times.
//! - `recv_waiting` is true only while the receiver waits on an empty
//!   buffer; its waker stays registered between waits (woken by reference),
//!   so a ping-pong costs no waker clone or drop.
//! - `send_waiters` holds one entry per [`Sending`] future waiting on a full
//!   buffer, in arrival order, keyed by the future's ticket: re-polling a
//!   waiting send replaces its waker in place, dropping it removes its
//!   entry. Each `recv` wakes (and removes) the first entry; a woken send
//!   that is dropped without sending passes the wake on, so a free slot
//!   is never left with a sender asleep.
//! - `senders` counts live `Sender`s; at zero the receiver drains what is
//!   buffered and then sees `None`. After the receiver is dropped every send
//!   fails and hands the value back.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Shared<T> {
    buffer: RefCell<VecDeque<T>>,
    capacity: usize,
    recv_waker: Cell<Option<Waker>>,
    recv_waiting: Cell<bool>,
    send_waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
    senders: Cell<usize>,
    receiver_alive: Cell<bool>,
}

/// Creates a bounded channel for tasks on the same worker. `capacity` is
/// at least 1.
///
/// ```
/// use tiffany_sched::{Runtime, spawn, sync::channel};
///
/// let rt = Runtime::builder().workers(1).build().unwrap();
/// let sum = rt.block_on_pinned(|| async {
///     let (tx, mut rx) = channel::<u64>(4);
///     spawn(async move {
///         for i in 1..=10 {
///             tx.send(i).await.unwrap();
///         }
///     });
///     let mut sum = 0;
///     while let Some(i) = rx.recv().await {
///         sum += i;
///     }
///     sum
/// });
/// assert_eq!(sum, 55);
/// ```
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.max(1);
    let shared = Rc::new(Shared {
        buffer: RefCell::new(VecDeque::with_capacity(capacity.min(1024))),
        capacity,
        recv_waker: Cell::new(None),
        recv_waiting: Cell::new(false),
        send_waiters: RefCell::new(VecDeque::new()),
        next_ticket: Cell::new(0),
        senders: Cell::new(1),
        receiver_alive: Cell::new(true),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending half; clone it for more senders.
pub struct Sender<T> {
    shared: Rc<Shared<T>>,
}

/// The receiving half.
pub struct Receiver<T> {
    shared: Rc<Shared<T>>,
}

/// The receiver is gone; the value is handed back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Why [`Sender::try_send`] failed; the value is handed back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The buffer is full.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> Shared<T> {
    #[inline]
    fn wake_receiver(&self) {
        if !self.recv_waiting.replace(false) {
            return;
        }
        // Taken out while waking, so a waker that re-enters the channel
        // finds the cell in a valid state; put back for the next wait.
        if let Some(waker) = self.recv_waker.take() {
            waker.wake_by_ref();
            self.recv_waker.set(Some(waker));
        }
    }

    #[inline]
    fn wake_one_sender(&self) {
        if self.send_waiters.borrow().is_empty() {
            return;
        }
        let waiter = self.send_waiters.borrow_mut().pop_front();
        if let Some((_, waker)) = waiter {
            waker.wake();
        }
    }

    fn wake_all_senders(&self) {
        let waiters = std::mem::take(&mut *self.send_waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// Registers (or refreshes) the waker of the waiting send `ticket`.
    fn wait_to_send(&self, ticket: u64, waker: &Waker) {
        let mut waiters = self.send_waiters.borrow_mut();
        match waiters.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, current)) if current.will_wake(waker) => {}
            Some((_, current)) => *current = waker.clone(),
            None => waiters.push_back((ticket, waker.clone())),
        }
    }

    /// Forgets the waiting send `ticket`; true when it was still waiting
    /// (false: it had been woken, or never waited).
    fn stop_waiting(&self, ticket: u64) -> bool {
        let mut waiters = self.send_waiters.borrow_mut();
        match waiters.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                waiters.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Future returned by [`Receiver::recv`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Recv<'a, T> {
    receiver: &'a mut Receiver<T>,
}

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.receiver.poll_recv(cx)
    }
}

/// Future returned by [`Sender::send`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sending<'a, T> {
    sender: &'a Sender<T>,
    value: Option<T>,
    /// Set once this send has waited on a full buffer.
    ticket: Option<u64>,
}

impl<T> Unpin for Sending<'_, T> {}

impl<T> Future for Sending<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(value) = self.value.take() else {
            return Poll::Ready(Ok(()));
        };
        let shared = &self.sender.shared;
        match self.sender.try_send(value) {
            Ok(()) => {
                if let Some(ticket) = self.ticket.take() {
                    shared.stop_waiting(ticket);
                }
                Poll::Ready(Ok(()))
            }
            Err(TrySendError::Closed(value)) => {
                if let Some(ticket) = self.ticket.take() {
                    shared.stop_waiting(ticket);
                }
                Poll::Ready(Err(SendError(value)))
            }
            Err(TrySendError::Full(value)) => {
                let ticket = match self.ticket {
                    Some(ticket) => ticket,
                    None => {
                        let ticket = shared.next_ticket.get();
                        shared.next_ticket.set(ticket + 1);
                        ticket
                    }
                };
                shared.wait_to_send(ticket, cx.waker());
                self.ticket = Some(ticket);
                self.value = Some(value);
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Sending<'_, T> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let shared = &self.sender.shared;
            if !shared.stop_waiting(ticket) && self.value.is_some() {
                // We were woken for a free slot we will not use.
                shared.wake_one_sender();
            }
        }
    }
}

impl<T> fmt::Debug for Sending<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sending")
            .field("waiting", &self.ticket.is_some())
            .finish()
    }
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the buffer is full. Dropping the
    /// returned future before it finishes drops the value.
    pub fn send(&self, value: T) -> Sending<'_, T> {
        Sending {
            sender: self,
            value: Some(value),
            ticket: None,
        }
    }

    /// Sends `value` if there is room now.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let shared = &self.shared;
        if !shared.receiver_alive.get() {
            return Err(TrySendError::Closed(value));
        }
        {
            let mut buffer = shared.buffer.borrow_mut();
            if buffer.len() >= shared.capacity {
                return Err(TrySendError::Full(value));
            }
            buffer.push_back(value);
        }
        shared.wake_receiver();
        Ok(())
    }

    /// Whether the receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        !self.shared.receiver_alive.get()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.senders.set(self.shared.senders.get() + 1);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let left = self.shared.senders.get() - 1;
        self.shared.senders.set(left);
        if left == 0 {
            self.shared.wake_receiver();
            // The receiver will not wait again: release its waker.
            drop(self.shared.recv_waker.take());
        }
    }
}

impl<T> Receiver<T> {
    /// Receives the next value; `None` once every sender is gone and the
    /// buffer is empty.
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv { receiver: self }
    }

    /// Polls for the next value.
    #[inline]
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let shared = &self.shared;
        let value = shared.buffer.borrow_mut().pop_front();
        if let Some(value) = value {
            shared.wake_one_sender();
            return Poll::Ready(Some(value));
        }
        if shared.senders.get() == 0 {
            return Poll::Ready(None);
        }
        let waker = match shared.recv_waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        shared.recv_waker.set(Some(waker));
        shared.recv_waiting.set(true);
        Poll::Pending
    }

    /// Receives a value if one is buffered.
    pub fn try_recv(&mut self) -> Option<T> {
        let value = self.shared.buffer.borrow_mut().pop_front();
        if value.is_some() {
            self.shared.wake_one_sender();
        }
        value
    }

    /// Number of buffered values.
    pub fn len(&self) -> usize {
        self.shared.buffer.borrow().len()
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_alive.set(false);
        self.shared.wake_all_senders();
        let buffered = std::mem::take(&mut *self.shared.buffer.borrow_mut());
        drop(buffered);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("buffered", &self.len())
            .finish()
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the receiver was dropped")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the channel is full"),
            TrySendError::Closed(_) => f.write_str("the receiver was dropped"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}
