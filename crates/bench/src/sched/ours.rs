//! Ours: `tiffany-sched` on one worker, configured as in production.
//!
//! Invariants:
//! - each run builds a fresh [`Runtime`] with one worker and I/O support on
//!   (`.io(true)`, the production setting), so every figure is per worker;
//! - every workload body runs as a task on the worker and times itself
//!   there, so the hop back to the thread in `block_on` is not measured;
//!   the body is built on the worker, so it may be `!Send`;
//! - tasks the body spawns go through [`tiffany_sched::spawn`] (same worker,
//!   same group, `!Send` allowed), except the tasks of `yield_1000tasks`,
//!   which are dealt round-robin over one [`Group`] per agent with
//!   [`Group::spawn`];
//! - channels are [`tiffany_sched::sync`]'s same-worker `channel` and
//!   `oneshot`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tiffany_sched::{
    Group, GroupConfig, Policy, Priority, Runtime, spawn, spawn_with_priority, sync, yield_now,
};

use super::workload::{
    ExternalWaker, PriorityPlan, SpawnRun, YieldMany, background, idle_growth, idle_task,
    record_wakes, yield_loop,
};
use super::{CHANNEL_CAPACITY, Contender};

/// `tiffany-sched`, the scheduler under test.
#[derive(Debug)]
pub(crate) struct Tiffany;

impl Tiffany {
    /// A one-worker runtime with I/O on (the production setting) and `policy`.
    fn runtime(policy: Policy) -> Result<Runtime> {
        Runtime::builder()
            .workers(1)
            .io(true)
            .policy(policy)
            .build()
            .context("cannot build a tiffany-sched runtime")
    }

    /// Runs the future `make` builds as a task on `rt`'s worker and returns
    /// its output. `make` runs on the worker, so the body may be `!Send`
    /// (hold same-worker channels and local join handles across awaits).
    fn run_on<T: Send + 'static, F>(
        rt: &Runtime,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>> + 'static,
    {
        let driver = rt.spawn(async move { spawn(make()).await });
        rt.block_on(driver)
            .context("the tiffany-sched driver task failed")?
            .context("the tiffany-sched workload task failed")?
    }

    /// [`Tiffany::run_on`] a fresh runtime with the default policy.
    fn run<T: Send + 'static, F>(&self, make: impl FnOnce() -> F + Send + 'static) -> Result<T>
    where
        F: Future<Output = Result<T>> + 'static,
    {
        Self::run_on(&Self::runtime(Policy::default())?, make)
    }
}

impl Contender for Tiffany {
    fn name(&self) -> &'static str {
        "tiffany"
    }

    fn yield_one(&self, yields: u64) -> Result<Duration> {
        self.run(move || async move {
            let start = Instant::now();
            yield_loop(yields, yield_now).await;
            Ok(start.elapsed())
        })
    }

    fn yield_many(&self, plan: &YieldMany) -> Result<Duration> {
        let plan = *plan;
        let rt = Self::runtime(Policy::default())?;
        let agents: Vec<Group> = (0..plan.groups.max(1))
            .map(|i| rt.group(GroupConfig::new(format!("agent-{i}"))))
            .collect();
        Self::run_on(&rt, move || async move {
            let start = Instant::now();
            let tasks: Vec<_> = agents
                .iter()
                .cycle()
                .take(plan.tasks)
                .map(|agent| agent.spawn(yield_loop(plan.yields_per_task, yield_now)))
                .collect();
            for task in tasks {
                task.await?;
            }
            Ok(start.elapsed())
        })
    }

    fn spawn_run(&self, plan: &SpawnRun) -> Result<Duration> {
        let plan = *plan;
        self.run(move || async move {
            let mut batch = Vec::with_capacity(plan.batch);
            let start = Instant::now();
            for size in plan.batch_sizes() {
                batch.extend((0..size).map(|_| spawn(async {})));
                for task in batch.drain(..) {
                    task.await?;
                }
            }
            Ok(start.elapsed())
        })
    }

    fn ping_pong(&self, round_trips: u64) -> Result<Duration> {
        self.run(move || async move {
            let (ping_tx, mut ping_rx) = sync::channel::<u64>(CHANNEL_CAPACITY);
            let (pong_tx, mut pong_rx) = sync::channel::<u64>(CHANNEL_CAPACITY);
            let ponger = spawn(async move {
                while let Some(v) = ping_rx.recv().await {
                    if pong_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            for i in 0..round_trips {
                ping_tx.send(i).await.context("the pong task hung up")?;
                pong_rx.recv().await.context("the pong task hung up")?;
            }
            let elapsed = start.elapsed();
            drop(ping_tx);
            ponger.await?;
            Ok(elapsed)
        })
    }

    fn idle_tasks(&self, tasks: usize) -> Result<f64> {
        self.run(move || {
            idle_growth(
                tasks,
                || {
                    let (tx, rx) = sync::oneshot::<()>();
                    drop(spawn(idle_task(rx)));
                    tx
                },
                yield_now,
            )
        })
    }

    fn priority_latency(&self, plan: &PriorityPlan) -> Result<Vec<Duration>> {
        let plan = *plan;
        let rt = Self::runtime(Policy::StrictPriority)?;
        let (waker, wakes) = ExternalWaker::start(&plan)?;
        let ready = waker.ready();
        let latencies = Self::run_on(&rt, move || async move {
            let stop = Arc::new(AtomicBool::new(false));
            let busy: Vec<_> = (0..plan.background_tasks)
                .map(|_| {
                    spawn_with_priority(
                        Priority::Background,
                        background(Arc::clone(&stop), plan.spin, yield_now),
                    )
                })
                .collect();
            let critical =
                spawn_with_priority(Priority::Critical, record_wakes(wakes, ready, plan.wakes));
            let latencies = critical.await;
            stop.store(true, Ordering::Relaxed);
            for task in busy {
                task.await?;
            }
            Ok(latencies?)
        });
        waker.join()?;
        latencies
    }
}
