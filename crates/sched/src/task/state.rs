//! The atomic part of a task's state: reference count and cross-thread flags.
//!
//! Invariants:
//! - The low [`FLAG_BITS`] bits are flags; the rest is the reference count in
//!   units of [`REF_ONE`]. Every [`TaskRef`](super::TaskRef), `Waker`,
//!   `JoinHandle` and the owning worker's slab entry holds one reference.
//! - `COMPLETE` is set once, by the owning worker, after the output (or the
//!   `JoinError`) is in the stage. From then on the stage belongs to the join
//!   side (or to whoever finds `JOIN_INTEREST` clear).
//! - The join waker slot is written by the join side only while `JOIN_WAKER`
//!   is clear and `COMPLETE` is clear; it is read by the worker only when it
//!   sets `COMPLETE` and sees `JOIN_WAKER` set.
//! - `REMOTE_NOTIFIED` is set by a wake from a foreign thread that pushed the
//!   task into the owner's inbox; the owner clears it when it drains the
//!   inbox, so each task is in an inbox at most once.
//! - `CANCELLED` is sticky: the worker drops the future at the next
//!   scheduling point instead of polling it.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) const COMPLETE: usize = 1 << 0;
pub(crate) const JOIN_INTEREST: usize = 1 << 1;
pub(crate) const JOIN_WAKER: usize = 1 << 2;
pub(crate) const REMOTE_NOTIFIED: usize = 1 << 3;
pub(crate) const CANCELLED: usize = 1 << 4;
const FLAG_BITS: u32 = 6;
pub(crate) const REF_ONE: usize = 1 << FLAG_BITS;
const REF_MASK: usize = !(REF_ONE - 1);

/// The atomic state word of a task.
pub(crate) struct State(AtomicUsize);

impl State {
    /// A new task: `refs` references, with the given flags.
    pub(crate) fn new(refs: usize, flags: usize) -> State {
        State(AtomicUsize::new((refs * REF_ONE) | flags))
    }

    #[inline]
    pub(crate) fn load(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn fetch_or(&self, bits: usize) -> usize {
        self.0.fetch_or(bits, Ordering::AcqRel)
    }

    #[inline]
    pub(crate) fn fetch_and(&self, bits: usize) -> usize {
        self.0.fetch_and(bits, Ordering::AcqRel)
    }

    #[inline]
    pub(crate) fn compare_exchange(&self, current: usize, new: usize) -> Result<usize, usize> {
        self.0
            .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Adds a reference. Aborts on overflow rather than risk a use after
    /// free (as `Arc` does).
    #[inline]
    pub(crate) fn ref_inc(&self) {
        let prev = self.0.fetch_add(REF_ONE, Ordering::Relaxed);
        if prev > usize::MAX / 2 {
            std::process::abort();
        }
    }

    /// Drops a reference; true when it was the last one.
    #[inline]
    pub(crate) fn ref_dec(&self) -> bool {
        let prev = self.0.fetch_sub(REF_ONE, Ordering::AcqRel);
        debug_assert!(prev & REF_MASK >= REF_ONE, "task reference count underflow");
        prev & REF_MASK == REF_ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_counts_references_apart_from_flags() {
        let s = State::new(2, JOIN_INTEREST);
        s.ref_inc();
        assert_eq!(s.load() & !REF_MASK, JOIN_INTEREST);
        assert!(!s.ref_dec());
        assert!(!s.ref_dec());
        s.fetch_or(COMPLETE);
        assert!(s.ref_dec(), "third decrement releases the last reference");
    }
}
