//! PAL, the process activity log: a live, bounded broadcast of what every
//! task is doing.
//!
//! # Guarantees
//! - Publishing never blocks and never allocates per subscriber: the bus is
//!   a fixed ring (`tokio::sync::broadcast`), so a slow subscriber cannot
//!   slow an agent.
//! - A subscriber that falls more than the ring's capacity behind loses the
//!   oldest events and is told how many ([`Received::Lagged`]).
//! - PAL is not durable: the journal is. After a restart the stream starts
//!   afresh.
//! - The ring is made by the first subscriber: until then there is nobody
//!   to publish to, and a node nobody watches never pays for it (4,096
//!   slots by default, about half a megabyte written when made, which was
//!   a tenth of a small node's boot).

use std::io::Write;
use std::sync::OnceLock;

use serde::Serialize;
use tokio::sync::broadcast;

/// One activity event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Task id.
    pub task: u64,
    /// Agent id.
    pub agent: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: ActivityKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event")]
pub enum ActivityKind {
    /// A task got its instruction (or was resumed after a restart).
    ReceivedInstruction {
        /// The instruction.
        instruction: String,
        /// Whether the task was recovered from the journal.
        resumed: bool,
    },
    /// The planner was asked.
    WaitingForLlm {
        /// The step.
        step: u32,
    },
    /// A skill started.
    SkillStart {
        /// The skill.
        skill: String,
        /// Its arguments as the planner wrote them.
        arguments: String,
    },
    /// A skill finished.
    SkillComplete {
        /// The skill.
        skill: String,
        /// Whether it succeeded.
        ok: bool,
        /// How long it ran, in microseconds.
        micros: u64,
    },
    /// A non-idempotent skill was in flight at a crash and was not re-run.
    SkillInterrupted {
        /// The skill.
        skill: String,
    },
    /// The agent has no unfinished task left.
    Idle,
    /// The task was parked by overload control.
    Parked,
    /// The task concluded.
    Completed {
        /// The final answer.
        answer: String,
    },
    /// The task failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// The next event that matches the filter.
    Event(Activity),
    /// This many events were lost because the subscriber fell behind.
    Lagged(u64),
    /// The node is gone.
    Closed,
}

/// Which events a subscriber wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this agent's.
    pub agent: Option<u64>,
    /// Only this task's.
    pub task: Option<u64>,
}

impl Filter {
    fn matches(&self, a: &Activity) -> bool {
        self.agent.is_none_or(|id| id == a.agent) && self.task.is_none_or(|id| id == a.task)
    }
}

/// The bus.
#[derive(Debug)]
pub struct Pal {
    capacity: usize,
    /// The ring, once someone subscribed.
    tx: OnceLock<broadcast::Sender<Activity>>,
}

impl Pal {
    /// A bus keeping the last `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Pal {
        Pal {
            capacity: capacity.max(1),
            tx: OnceLock::new(),
        }
    }

    /// Publishes an event (a no-op when nobody listens).
    pub fn publish(&self, activity: Activity) {
        if let Some(tx) = self.tx.get().filter(|tx| tx.receiver_count() > 0) {
            let _ = tx.send(activity);
        }
    }

    /// Whether anyone listens (lets publishers skip building events).
    pub fn has_subscribers(&self) -> bool {
        self.tx.get().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// A new subscriber that sees events published from now on.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        let tx = self.tx.get_or_init(|| broadcast::channel(self.capacity).0);
        Subscription {
            rx: tx.subscribe(),
            filter,
        }
    }
}

/// A subscriber.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Activity>,
    filter: Filter,
}

impl Subscription {
    /// Waits for the next matching event.
    pub async fn recv(&mut self) -> Received {
        loop {
            let got = self.rx.recv().await;
            if let Some(r) = self.filtered(got) {
                return r;
            }
        }
    }

    /// Blocks the calling thread for the next matching event (for sinks on
    /// their own thread; never call it from a scheduler task).
    pub fn blocking_recv(&mut self) -> Received {
        loop {
            let got = self.rx.blocking_recv();
            if let Some(r) = self.filtered(got) {
                return r;
            }
        }
    }

    /// The next matching event if one is already there.
    pub fn try_recv(&mut self) -> Option<Received> {
        loop {
            let got = match self.rx.try_recv() {
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Ok(a) => Ok(a),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    Err(broadcast::error::RecvError::Closed)
                }
            };
            if let Some(r) = self.filtered(got) {
                return Some(r);
            }
        }
    }

    fn filtered(&self, got: Result<Activity, broadcast::error::RecvError>) -> Option<Received> {
        match got {
            Ok(a) if self.filter.matches(&a) => Some(Received::Event(a)),
            Ok(_) => None,
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Some(Received::Closed),
        }
    }
}

/// Writes every received event as one JSON object per line (lost events as
/// `{"event":"Lagged","lost":N}`) until the bus closes; returns the first
/// write error.
pub fn write_json_lines(mut sub: Subscription, mut out: impl Write) -> std::io::Result<()> {
    loop {
        match sub.blocking_recv() {
            Received::Event(a) => {
                serde_json::to_writer(&mut out, &a)?;
                out.write_all(b"\n")?;
            }
            Received::Lagged(n) => writeln!(out, "{{\"event\":\"Lagged\",\"lost\":{n}}}")?,
            Received::Closed => return out.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(task: u64, agent: u64) -> Activity {
        Activity {
            task,
            agent,
            at_ms: 0,
            kind: ActivityKind::Idle,
        }
    }

    #[test]
    fn filters_select_agent_and_task() {
        let pal = Pal::new(16);
        let mut by_agent = pal.subscribe(Filter {
            agent: Some(2),
            task: None,
        });
        let mut by_task = pal.subscribe(Filter {
            agent: None,
            task: Some(5),
        });
        for (t, a) in [(1, 1), (5, 2), (6, 2), (5, 1)] {
            pal.publish(event(t, a));
        }
        let mut agent_tasks = vec![];
        while let Some(Received::Event(a)) = by_agent.try_recv() {
            agent_tasks.push(a.task);
        }
        assert_eq!(agent_tasks, [5, 6]);
        let mut task_agents = vec![];
        while let Some(Received::Event(a)) = by_task.try_recv() {
            task_agents.push(a.agent);
        }
        assert_eq!(task_agents, [2, 1]);
    }

    #[test]
    fn a_lagging_subscriber_is_told_how_much_it_lost_and_publishers_never_wait() {
        let pal = Pal::new(4);
        let mut slow = pal.subscribe(Filter::default());
        for t in 0..10 {
            pal.publish(event(t, 0));
        }
        assert_eq!(slow.try_recv(), Some(Received::Lagged(6)));
        let rest: Vec<_> = std::iter::from_fn(|| slow.try_recv()).collect();
        assert_eq!(
            rest,
            (6..10)
                .map(|t| Received::Event(event(t, 0)))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn json_lines_sink_writes_one_object_per_event_and_ends_when_closed() {
        let pal = Pal::new(8);
        let sub = pal.subscribe(Filter::default());
        pal.publish(Activity {
            task: 1,
            agent: 2,
            at_ms: 3,
            kind: ActivityKind::Completed {
                answer: "ok".into(),
            },
        });
        drop(pal);
        let mut out = Vec::new();
        write_json_lines(sub, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"task\":1,\"agent\":2,\"at_ms\":3,\"event\":\"Completed\",\"answer\":\"ok\"}\n"
        );
    }
}
