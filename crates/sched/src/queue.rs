//! Run queues: which ready task a worker polls next.
//!
//! Invariants:
//! - Entries are non-owning pointers to live, incomplete tasks whose `QUEUED`
//!   flag is set; each such task is in exactly one queue once.
//! - `len` is the number of entries across all inner queues.
//! - [`Policy::WeightedFair`]: a group is in `active[class]` exactly when its
//!   queue for that class is non-empty; the group at the front has been
//!   served `served[class]` polls in its current turn, fewer than its weight.

use std::collections::VecDeque;
use std::ptr::NonNull;

use crate::rng::SplitMix64;
use crate::task::TaskPtr;
use crate::{CLASSES, Policy};

/// The ready tasks of one worker, ordered by the runtime's [`Policy`].
///
/// FIFO and strict priority share one layout: a ring per class and a bit
/// mask of the non-empty rings (FIFO maps every class to ring 0), so a pop
/// is a `trailing_zeros` and a ring read.
pub(crate) struct RunQueue {
    rings: [TaskRing; CLASSES],
    /// Bit `c` set when `rings[c]` is non-empty.
    nonempty: u8,
    /// Ring of each priority class.
    ring_of: [u8; CLASSES],
    fair: Option<Box<FairQueue>>,
}

impl RunQueue {
    pub(crate) fn new(policy: Policy) -> RunQueue {
        RunQueue {
            rings: std::array::from_fn(|_| TaskRing::with_capacity(64)),
            nonempty: 0,
            ring_of: match policy {
                Policy::Fifo => [0; CLASSES],
                Policy::StrictPriority | Policy::WeightedFair => [0, 1, 2],
            },
            fair: matches!(policy, Policy::WeightedFair).then(Box::default),
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, task: TaskPtr) {
        if let Some(fair) = &mut self.fair {
            fair.push(task);
            return;
        }
        let ring = self.ring_of.get(class_of(task)).copied().unwrap_or(0);
        if let Some(r) = self.rings.get_mut(usize::from(ring)) {
            r.push(task);
            self.nonempty |= 1 << ring;
        }
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<TaskPtr> {
        if let Some(fair) = &mut self.fair {
            return fair.pop();
        }
        if self.nonempty == 0 {
            return None;
        }
        let ring = self.nonempty.trailing_zeros() as usize;
        let r = self.rings.get_mut(ring)?;
        let task = r.pop();
        if r.is_empty() {
            self.nonempty &= !(1 << ring);
        }
        task
    }

    /// Like `pop`, but picks pseudo-randomly among the candidates the policy
    /// considers equal: any ready task (FIFO), any task of the highest ready
    /// class (strict), any active group of the highest ready class (fair).
    pub(crate) fn pop_seeded(&mut self, rng: &mut SplitMix64) -> Option<TaskPtr> {
        if let Some(fair) = &mut self.fair {
            return fair.pop_seeded(rng);
        }
        if self.nonempty == 0 {
            return None;
        }
        let ring = self.nonempty.trailing_zeros() as usize;
        let r = self.rings.get_mut(ring)?;
        let pick = rng.below(r.len());
        let task = r.swap_remove(pick);
        if r.is_empty() {
            self.nonempty &= !(1 << ring);
        }
        task
    }

    /// Removes every entry (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<TaskPtr> {
        let mut out = Vec::new();
        while let Some(task) = self.pop() {
            out.push(task);
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        match &self.fair {
            Some(fair) => fair.len == 0,
            None => self.nonempty == 0,
        }
    }
}

#[inline(always)]
fn class_of(task: TaskPtr) -> usize {
    // SAFETY: queue entries point at live tasks (module invariants).
    unsafe { task.as_ref() }.priority as usize
}

/// A growable ring of task pointers with power-of-two capacity.
///
/// Invariants: `head` and `tail` count pushes and pops (wrapping); the
/// entries live at `(head..tail) & mask`; `tail - head <= buf.len()`.
pub(crate) struct TaskRing {
    buf: Box<[TaskPtr]>,
    mask: usize,
    head: usize,
    tail: usize,
}

impl TaskRing {
    fn with_capacity(capacity: usize) -> TaskRing {
        let capacity = capacity.next_power_of_two();
        TaskRing {
            buf: vec![NonNull::dangling(); capacity].into_boxed_slice(),
            mask: capacity - 1,
            head: 0,
            tail: 0,
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.tail.wrapping_sub(self.head)
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    #[inline(always)]
    fn push(&mut self, task: TaskPtr) {
        if self.len() == self.buf.len() {
            self.grow();
        }
        if let Some(slot) = self.buf.get_mut(self.tail & self.mask) {
            *slot = task;
        }
        self.tail = self.tail.wrapping_add(1);
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<TaskPtr> {
        if self.is_empty() {
            return None;
        }
        let task = self.buf.get(self.head & self.mask).copied();
        self.head = self.head.wrapping_add(1);
        task
    }

    /// Removes the entry `i` places from the head, moving the last entry
    /// into its place.
    fn swap_remove(&mut self, i: usize) -> Option<TaskPtr> {
        if i >= self.len() {
            return None;
        }
        let at = self.head.wrapping_add(i) & self.mask;
        let last = self.tail.wrapping_sub(1) & self.mask;
        let task = self.buf.get(at).copied();
        if let Some(moved) = self.buf.get(last).copied() {
            if let Some(slot) = self.buf.get_mut(at) {
                *slot = moved;
            }
        }
        self.tail = self.tail.wrapping_sub(1);
        task
    }

    #[cold]
    fn grow(&mut self) {
        let len = self.len();
        let mut bigger = vec![NonNull::dangling(); self.buf.len() * 2].into_boxed_slice();
        for (i, slot) in bigger.iter_mut().take(len).enumerate() {
            if let Some(task) = self.buf.get(self.head.wrapping_add(i) & self.mask) {
                *slot = *task;
            }
        }
        self.mask = bigger.len() - 1;
        self.buf = bigger;
        self.head = 0;
        self.tail = len;
    }
}

/// Deficit round robin across groups, per priority class; classes are served
/// in strict priority order.
///
/// A group stays at the front of `active` for `weight` polls even when its
/// queue is momentarily empty (its only task is running and will requeue if
/// it yields); a group found empty at the front is dropped from `active`
/// then. Without this a group with one yielding task would get one poll per
/// round whatever its weight.
#[derive(Default)]
struct FairQueue {
    /// Per group (by worker-local index): its ready tasks per class, and
    /// whether it is in `active` for that class.
    groups: Vec<[(VecDeque<TaskPtr>, bool); CLASSES]>,
    /// Per class: groups in turn order (may hold groups whose queue emptied).
    active: [VecDeque<u32>; CLASSES],
    /// Per class: polls the front group has had in its current turn.
    served: [u32; CLASSES],
    /// Tasks queued, all classes.
    len: usize,
}

impl FairQueue {
    fn push(&mut self, task: TaskPtr) {
        // SAFETY: queue entries point at live tasks (module invariants).
        let header = unsafe { task.as_ref() };
        let class = header.priority as usize;
        let index = header.group().local_index;
        let slot = index as usize;
        if self.groups.len() <= slot {
            self.groups.resize_with(slot + 1, Default::default);
        }
        let (Some(queues), Some(active)) = (self.groups.get_mut(slot), self.active.get_mut(class))
        else {
            return;
        };
        let Some((queue, listed)) = queues.get_mut(class) else {
            return;
        };
        if !*listed {
            active.push_back(index);
            *listed = true;
        }
        queue.push_back(task);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<TaskPtr> {
        (0..CLASSES).find_map(|class| self.pop_class(class, None))
    }

    fn pop_seeded(&mut self, rng: &mut SplitMix64) -> Option<TaskPtr> {
        (0..CLASSES).find_map(|class| self.pop_class(class, Some(&mut *rng)))
    }

    /// Pops the next task of `class`. In seeded mode a new turn starts with
    /// a pseudo-randomly picked group instead of the next in line.
    fn pop_class(&mut self, class: usize, mut rng: Option<&mut SplitMix64>) -> Option<TaskPtr> {
        let active = self.active.get_mut(class)?;
        let served = self.served.get_mut(class)?;
        loop {
            if *served == 0 {
                if let Some(rng) = rng.as_deref_mut() {
                    let pick = rng.below(active.len().max(1));
                    if let Some(group) = active.remove(pick) {
                        active.push_front(group);
                    }
                }
            }
            let group = *active.front()?;
            let (queue, listed) = self.groups.get_mut(group as usize)?.get_mut(class)?;
            let Some(task) = queue.pop_front() else {
                active.pop_front();
                *listed = false;
                *served = 0;
                continue;
            };
            self.len -= 1;
            *served += 1;
            // SAFETY: queue entries point at live tasks (module invariants).
            let weight = unsafe { task.as_ref() }.group().weight;
            if *served >= weight {
                active.rotate_left(1);
                *served = 0;
            }
            return Some(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(i: usize) -> TaskPtr {
        // Only compared, never dereferenced.
        NonNull::<crate::task::Header>::dangling().map_addr(|a| a.saturating_add(i * 8))
    }

    #[test]
    fn ring_keeps_fifo_order_across_growth_and_wraparound() {
        let mut ring = TaskRing::with_capacity(4);
        let mut expect = std::collections::VecDeque::new();
        let mut next = 0;
        for round in 0..50 {
            for _ in 0..(round % 7) {
                ring.push(fake(next));
                expect.push_back(fake(next));
                next += 1;
            }
            for _ in 0..(round % 5) {
                assert_eq!(ring.pop(), expect.pop_front());
            }
            assert_eq!(ring.len(), expect.len());
        }
        while let Some(t) = expect.pop_front() {
            assert_eq!(ring.pop(), Some(t));
        }
        assert!(ring.pop().is_none());
    }

    #[test]
    fn ring_swap_remove_takes_the_picked_entry() {
        let mut ring = TaskRing::with_capacity(4);
        for i in 0..4 {
            ring.push(fake(i));
        }
        ring.pop();
        ring.push(fake(4)); // wraps around
        assert_eq!(ring.swap_remove(1), Some(fake(2)));
        let rest: Vec<_> = std::iter::from_fn(|| ring.pop()).collect();
        assert_eq!(rest, vec![fake(1), fake(4), fake(3)]);
        assert_eq!(ring.swap_remove(0), None);
    }
}
