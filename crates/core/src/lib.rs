//! The shared vocabulary of the Tiffany agent runtime.
//!
//! `tiffany-core` owns the small types every other crate speaks in and does no
//! I/O of its own:
//!
//! - [`Clock`]: the time source of a node. [`Clock::system`] reads the CPU's
//!   invariant time-stamp counter (a few nanoseconds a read, no system call)
//!   and falls back to [`std::time::Instant`] where there is none;
//!   [`Clock::manual`] returns a clock that only moves when a test tells it
//!   to, through the [`ManualClock`] handle.
//! - [`AgentId`] and [`TaskId`]: identifiers that appear in feedback, logs and
//!   journals.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use tiffany_core::Clock;
//!
//! let (clock, hand) = Clock::manual();
//! assert_eq!(clock.now_nanos(), 0);
//! hand.advance(Duration::from_millis(5));
//! assert_eq!(clock.now_nanos(), 5_000_000);
//! ```

mod clock;
mod ids;

pub use clock::{Clock, ManualClock};
pub use ids::{AgentId, TaskId};
