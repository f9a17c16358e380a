//! The tokio I/O driver that tasks' sockets, timers and child processes
//! register with.
//!
//! It is a current-thread tokio runtime driven by one thread of ours
//! (`<prefix>-io`), which sits in `block_on` until the driver is stopped:
//! workers enter its handle while they poll, so tokio resources created in
//! a task register with it, and the thread's parked `block_on` turns
//! readiness into wake-ups. A current-thread runtime rather than a
//! one-worker multi-thread one: the same single thread polling `epoll`,
//! without the work-stealing scheduler around it (building the driver in
//! a fresh process took 0.40-0.47 ms instead of 0.57-0.69 ms, on the
//! thread that starts a node's scheduler while its journal is read).
//!
//! Invariants:
//! - the handle stays valid while the [`IoDriver`] lives; dropping it stops
//!   the thread and joins it, after which tokio resources still held fail
//!   with tokio's "runtime shut down" errors instead of hanging;
//! - stopping never waits for tokio blocking-pool work (`spawn_blocking`,
//!   DNS lookups): that is abandoned, as `shutdown_background` does.

use std::thread;

use crate::Error;

/// A running I/O driver: its handle and the thread that drives it.
pub(crate) struct IoDriver {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl IoDriver {
    /// Builds the driver and starts its thread, named `<prefix>-io`.
    pub(crate) fn start(prefix: &str) -> Result<IoDriver, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::IoDriver)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("{prefix}-io"))
            .spawn(move || {
                // Ends when `stop` is sent or dropped.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_background();
            })
            .map_err(Error::IoDriver)?;
        Ok(IoDriver {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The handle tasks enter to use tokio resources.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for IoDriver {
    // Joining the driver's thread is the point of dropping it; it returns
    // as soon as `block_on` sees the stop.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only panics on a bug in tokio; nothing to do then.
            let _ = thread.join();
        }
    }
}
