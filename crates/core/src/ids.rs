//! Identifiers shared across crates.
//!
//! Ids are plain integers with a type of their own, so an agent id can never be
//! passed where a task id is expected. They print as `agent-N` and `task-N`.

use std::fmt;

/// Identifies an agent (a task group on the scheduler) within a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(pub u64);

/// Identifies a task within a node.
///
/// The scheduler builds task ids from the worker index (high 16 bits) and a
/// per-worker sequence number (low 48 bits), so they are unique within a
/// runtime without any shared counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent-{}", self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_with_their_kind() {
        assert_eq!(AgentId(7).to_string(), "agent-7");
        assert_eq!(TaskId(42).to_string(), "task-42");
    }
}
