//! Peer: `async_executor::LocalExecutor`, driven on the calling thread by
//! `futures_lite::future::block_on(executor.run(..))`.
//!
//! Invariants:
//! - each run builds a fresh executor, and every workload body runs as a task
//!   spawned on it (the body holds an `Rc` of the executor to spawn more);
//! - there is no reactor: the executor parks the thread when idle and is
//!   woken through its wakers, which is also how the external thread of the
//!   priority workload reaches it (through a `tokio::sync::mpsc` channel,
//!   which needs no tokio runtime);
//! - channels are `async-channel` (bounded; `bounded(1)` stands in for a
//!   oneshot); yielding is `futures_lite::future::yield_now`.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use async_executor::LocalExecutor;
use futures_lite::future::{block_on, yield_now};

use super::workload::{
    ExternalWaker, PriorityPlan, SpawnRun, YieldMany, background, idle_growth, idle_task,
    record_wakes, yield_loop,
};
use super::{CHANNEL_CAPACITY, Contender};

/// The single-threaded executor of the smol family.
#[derive(Debug)]
pub(crate) struct AsyncExecutorLocal;

type Executor = Rc<LocalExecutor<'static>>;

impl AsyncExecutorLocal {
    /// Runs the future `body` builds as a task on a fresh executor and
    /// returns its output.
    fn run<T: 'static, F>(&self, body: impl FnOnce(Executor) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>> + 'static,
    {
        let executor: Executor = Rc::new(LocalExecutor::new());
        let task = executor.spawn(body(Rc::clone(&executor)));
        block_on(executor.run(task))
    }
}

impl Contender for AsyncExecutorLocal {
    fn name(&self) -> &'static str {
        "async_executor_local"
    }

    fn yield_one(&self, yields: u64) -> Result<Duration> {
        self.run(|_| async move {
            let start = Instant::now();
            yield_loop(yields, yield_now).await;
            Ok(start.elapsed())
        })
    }

    fn yield_many(&self, plan: &YieldMany) -> Result<Duration> {
        let plan = *plan;
        self.run(|ex| async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..plan.tasks)
                .map(|_| ex.spawn(yield_loop(plan.yields_per_task, yield_now)))
                .collect();
            for task in tasks {
                task.await;
            }
            Ok(start.elapsed())
        })
    }

    fn spawn_run(&self, plan: &SpawnRun) -> Result<Duration> {
        let plan = *plan;
        self.run(|ex| async move {
            let mut batch = Vec::with_capacity(plan.batch);
            let start = Instant::now();
            for size in plan.batch_sizes() {
                batch.extend((0..size).map(|_| ex.spawn(async {})));
                for task in batch.drain(..) {
                    task.await;
                }
            }
            Ok(start.elapsed())
        })
    }

    fn ping_pong(&self, round_trips: u64) -> Result<Duration> {
        self.run(|ex| async move {
            let (ping_tx, ping_rx) = async_channel::bounded::<u64>(CHANNEL_CAPACITY);
            let (pong_tx, pong_rx) = async_channel::bounded::<u64>(CHANNEL_CAPACITY);
            let ponger = ex.spawn(async move {
                while let Ok(v) = ping_rx.recv().await {
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
            ponger.await;
            Ok(elapsed)
        })
    }

    fn idle_tasks(&self, tasks: usize) -> Result<f64> {
        self.run(|ex| {
            idle_growth(
                tasks,
                move || {
                    let (tx, rx) = async_channel::bounded::<()>(1);
                    ex.spawn(idle_task(async move { rx.recv().await })).detach();
                    tx
                },
                yield_now,
            )
        })
    }

    fn priority_latency(&self, plan: &PriorityPlan) -> Result<Vec<Duration>> {
        let plan = *plan;
        let (waker, wakes) = ExternalWaker::start(&plan)?;
        let ready = waker.ready();
        let latencies = self.run(|ex| async move {
            let stop = Arc::new(AtomicBool::new(false));
            let busy: Vec<_> = (0..plan.background_tasks)
                .map(|_| ex.spawn(background(Arc::clone(&stop), plan.spin, yield_now)))
                .collect();
            let latencies = ex.spawn(record_wakes(wakes, ready, plan.wakes)).await;
            stop.store(true, Ordering::Relaxed);
            for task in busy {
                task.await;
            }
            Ok(latencies)
        });
        waker.join()?;
        latencies
    }
}
