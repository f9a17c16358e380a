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

use crate::rng::SplitMix64;
use crate::task::TaskPtr;
use crate::{CLASSES, Policy};

/// The ready tasks of one worker, ordered by the runtime's [`Policy`].
pub(crate) enum RunQueue {
    Fifo(VecDeque<TaskPtr>),
    Strict(Box<[VecDeque<TaskPtr>; CLASSES]>),
    Fair(Box<FairQueue>),
}

impl RunQueue {
    pub(crate) fn new(policy: Policy) -> RunQueue {
        match policy {
            Policy::Fifo => RunQueue::Fifo(VecDeque::with_capacity(256)),
            Policy::StrictPriority => {
                RunQueue::Strict(Box::new(std::array::from_fn(|_| VecDeque::with_capacity(64))))
            }
            Policy::WeightedFair => RunQueue::Fair(Box::default()),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, task: TaskPtr) {
        match self {
            RunQueue::Fifo(q) => q.push_back(task),
            RunQueue::Strict(qs) => {
                let class = class_of(task);
                if let Some(q) = qs.get_mut(class) {
                    q.push_back(task);
                }
            }
            RunQueue::Fair(fair) => fair.push(task),
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<TaskPtr> {
        match self {
            RunQueue::Fifo(q) => q.pop_front(),
            RunQueue::Strict(qs) => qs.iter_mut().find_map(VecDeque::pop_front),
            RunQueue::Fair(fair) => fair.pop(),
        }
    }

    /// Like `pop`, but picks pseudo-randomly among the candidates the policy
    /// considers equal: any ready task (FIFO), any task of the highest ready
    /// class (strict), any active group of the highest ready class (fair).
    pub(crate) fn pop_seeded(&mut self, rng: &mut SplitMix64) -> Option<TaskPtr> {
        match self {
            RunQueue::Fifo(q) => pop_random(q, rng),
            RunQueue::Strict(qs) => qs.iter_mut().find(|q| !q.is_empty()).and_then(|q| pop_random(q, rng)),
            RunQueue::Fair(fair) => fair.pop_seeded(rng),
        }
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
        match self {
            RunQueue::Fifo(q) => q.is_empty(),
            RunQueue::Strict(qs) => qs.iter().all(VecDeque::is_empty),
            RunQueue::Fair(fair) => fair.active.iter().all(VecDeque::is_empty),
        }
    }
}

#[inline]
fn class_of(task: TaskPtr) -> usize {
    // SAFETY: queue entries point at live tasks (module invariants).
    unsafe { task.as_ref() }.priority as usize
}

fn pop_random(q: &mut VecDeque<TaskPtr>, rng: &mut SplitMix64) -> Option<TaskPtr> {
    if q.is_empty() {
        return None;
    }
    let i = rng.below(q.len());
    q.swap_remove_back(i)
}

/// Deficit round robin across groups, per priority class; classes are served
/// in strict priority order.
#[derive(Default)]
pub(crate) struct FairQueue {
    /// Per group (by worker-local index): its ready tasks per class.
    groups: Vec<[VecDeque<TaskPtr>; CLASSES]>,
    /// Per class: groups with ready tasks of that class, in turn order.
    active: [VecDeque<u32>; CLASSES],
    /// Per class: polls the front group has had in its current turn.
    served: [u32; CLASSES],
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
        let (Some(queues), Some(active)) = (self.groups.get_mut(slot), self.active.get_mut(class)) else {
            return;
        };
        let Some(queue) = queues.get_mut(class) else {
            return;
        };
        if queue.is_empty() {
            active.push_back(index);
        }
        queue.push_back(task);
    }

    fn pop(&mut self) -> Option<TaskPtr> {
        let class = self.active.iter().position(|a| !a.is_empty())?;
        self.pop_class(class, 0)
    }

    fn pop_seeded(&mut self, rng: &mut SplitMix64) -> Option<TaskPtr> {
        let class = self.active.iter().position(|a| !a.is_empty())?;
        let len = self.active.get(class).map_or(0, VecDeque::len);
        let pick = rng.below(len);
        self.pop_class(class, pick)
    }

    /// Pops from the group at position `pick` of `active[class]` (0 = the
    /// group whose turn it is).
    fn pop_class(&mut self, class: usize, pick: usize) -> Option<TaskPtr> {
        let active = self.active.get_mut(class)?;
        if pick != 0 {
            // Seeded mode: move the picked group to the front, starting a turn.
            let group = active.remove(pick)?;
            active.push_front(group);
            if let Some(s) = self.served.get_mut(class) {
                *s = 0;
            }
        }
        let group = *active.front()?;
        let queue = self.groups.get_mut(group as usize)?.get_mut(class)?;
        let task = queue.pop_front()?;
        let served = self.served.get_mut(class)?;
        *served += 1;
        if queue.is_empty() {
            active.pop_front();
            *served = 0;
        } else {
            // SAFETY: queue entries point at live tasks (module invariants).
            let weight = unsafe { task.as_ref() }.group().weight;
            if *served >= weight {
                active.rotate_left(1);
                *served = 0;
            }
        }
        Some(task)
    }
}
