//! Same-worker channels for tasks: [`channel`] (bounded, many senders, one
//! receiver) and [`oneshot`].
//!
//! Both are `!Send`: sender and receiver live on one worker, so they use
//! plain `Rc` and `Cell` with no atomics or locks. To talk to a task on
//! another worker, use a thread-safe channel (for example tokio's); the
//! cross-thread wake then goes through that worker's inbox.

mod channel;
mod oneshot;

pub use channel::{Receiver, Recv, SendError, Sender, Sending, TrySendError, channel};
pub use oneshot::{OneshotReceiver, OneshotSender, RecvError, oneshot};
