//! Determinism: with the same seed the deterministic runtime polls the same
//! tasks in the same order (yields, sleeps, spawned children and channels
//! from several agents); different seeds give different interleavings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiffany_sched::sync::{channel, oneshot};
use tiffany_sched::{
    Builder, Group, GroupConfig, Instant, Policy, current_agent, current_task, sleep, spawn,
    yield_now,
};

type Log = Arc<Mutex<Vec<String>>>;

fn record(log: &Log, what: String) {
    let task = current_task().map_or(0, |t| t.0);
    let agent = current_agent().map_or(0, |a| a.0);
    let at = Instant::now().since_start().as_micros();
    log.lock()
        .unwrap()
        .push(format!("{at}us agent{agent} task{task:#x} {what}"));
}

/// One agent's work: a producer child feeding a bounded channel, a oneshot
/// handed between two children, and a mix of yields and sleeps.
async fn agent_work(agent: usize, task: usize, log: Log) {
    let (tx, mut rx) = channel::<usize>(2);
    let producer_log = Arc::clone(&log);
    let producer = spawn(async move {
        for i in 0..4 {
            tx.send(i).await.unwrap();
            record(&producer_log, format!("sent {i}"));
            if i % 2 == 0 {
                yield_now().await;
            }
        }
    });
    let (ping_tx, ping_rx) = oneshot::<usize>();
    let pong_log = Arc::clone(&log);
    let ponger = spawn(async move {
        let v = ping_rx.await.unwrap();
        record(&pong_log, format!("pong {v}"));
    });
    for step in 0..3 {
        record(&log, format!("step {step}"));
        if (agent + task + step) % 2 == 0 {
            yield_now().await;
        } else {
            sleep(Duration::from_millis((1 + agent + step) as u64)).await;
        }
    }
    ping_tx.send(agent * 10 + task).unwrap();
    while let Some(v) = rx.recv().await {
        record(&log, format!("received {v}"));
    }
    producer.await.unwrap();
    ponger.await.unwrap();
    record(&log, "done".to_owned());
}

/// Runs the scenario on a fresh deterministic runtime and returns its log.
fn scenario(policy: Policy, seed: u64) -> Vec<String> {
    let rt = Builder::deterministic()
        .policy(policy)
        .build_deterministic(seed)
        .unwrap();
    let agents: Vec<Group> = (0..3)
        .map(|i| rt.group(GroupConfig::new(format!("agent-{i}")).weight(i + 1)))
        .collect();
    let log: Log = Arc::default();
    let in_tasks = Arc::clone(&log);
    rt.block_on(async move {
        let mut handles = Vec::new();
        for (a, group) in agents.iter().enumerate() {
            for t in 0..3 {
                let log = Arc::clone(&in_tasks);
                // The agent's task is `Send`; its `!Send` work runs in a
                // local child in the same group.
                handles
                    .push(group.spawn(async move { spawn(agent_work(a, t, log)).await.unwrap() }));
            }
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    let log = log.lock().unwrap().clone();
    // 9 agent tasks x (3 steps + 4 sent + 4 received + pong + done).
    assert_eq!(log.len(), 9 * 13, "{policy:?} seed {seed}");
    log
}

#[test]
fn determinism_same_seed_same_interleaving() {
    for policy in [Policy::Fifo, Policy::StrictPriority, Policy::WeightedFair] {
        for seed in [0, 7, 0xdead_beef] {
            let first = scenario(policy, seed);
            let second = scenario(policy, seed);
            assert_eq!(first, second, "{policy:?} seed {seed}");
        }
    }
}

#[test]
fn determinism_different_seeds_differ() {
    for policy in [Policy::Fifo, Policy::StrictPriority, Policy::WeightedFair] {
        let reference = scenario(policy, 7);
        let differing = (100..108)
            .filter(|&seed| scenario(policy, seed) != reference)
            .count();
        assert!(
            differing > 0,
            "{policy:?}: eight other seeds all gave seed 7's interleaving"
        );
    }
}

/// Two runtimes with the same seed, driven alternately a millisecond at a
/// time on one thread, produce the same schedule: nothing global leaks
/// between runtimes.
#[test]
fn determinism_runtimes_with_one_seed_are_independent() {
    let runtimes = [
        Builder::deterministic().build_deterministic(11).unwrap(),
        Builder::deterministic().build_deterministic(11).unwrap(),
    ];
    let logs: [Log; 2] = Default::default();
    for (rt, log) in runtimes.iter().zip(&logs) {
        let log = Arc::clone(log);
        rt.block_on(async move {
            for i in 0..5 {
                let log = Arc::clone(&log);
                drop(spawn(async move {
                    for step in 0..4 {
                        log.lock().unwrap().push(format!("{i}:{step}"));
                        if step % 2 == 0 {
                            yield_now().await;
                        } else {
                            sleep(Duration::from_millis(1)).await;
                        }
                    }
                }));
            }
        });
    }
    for _ in 0..4 {
        for rt in &runtimes {
            rt.advance(Duration::from_millis(1));
        }
    }
    assert_eq!(logs[0].lock().unwrap().len(), 20);
    assert_eq!(*logs[0].lock().unwrap(), *logs[1].lock().unwrap());
}
