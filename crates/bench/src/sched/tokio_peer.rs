//! Peer: tokio's single-threaded runtime (`Builder::new_current_thread`).
//!
//! Invariants:
//! - each run builds a fresh runtime, so no run inherits another's queues;
//! - every workload body runs as a spawned task, never as the `block_on`
//!   future, which tokio polls outside its run queue;
//! - `io: true` is the production configuration (`enable_all()`: I/O and
//!   time drivers), the counterpart of `tiffany-sched` with `.io(true)`;
//!   `io: false` drives no reactor at all;
//! - channels are `tokio::sync::mpsc` (bounded) and `tokio::sync::oneshot`;
//!   spawning is `tokio::spawn` on the current-thread runtime.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::yield_now;

use super::workload::{
    ExternalWaker, PriorityPlan, SpawnRun, YieldMany, background, idle_growth, idle_task,
    record_wakes, yield_loop,
};
use super::{CHANNEL_CAPACITY, Contender};

/// tokio's current-thread runtime, with or without its I/O and time drivers.
#[derive(Debug)]
pub(crate) struct TokioCurrentThread {
    pub(crate) io: bool,
}

impl TokioCurrentThread {
    fn runtime(&self) -> Result<Runtime> {
        let mut builder = Builder::new_current_thread();
        if self.io {
            builder.enable_all();
        }
        builder
            .build()
            .context("cannot build a tokio current-thread runtime")
    }

    /// Runs `body` as a task on a fresh runtime and returns its output.
    fn run<T: Send + 'static>(
        &self,
        body: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let rt = self.runtime()?;
        let driver = rt.spawn(body);
        rt.block_on(driver)
            .context("the tokio driver task failed")?
    }
}

impl Contender for TokioCurrentThread {
    fn name(&self) -> &'static str {
        if self.io {
            "tokio_current_thread"
        } else {
            "tokio_current_thread_noio"
        }
    }

    fn yield_one(&self, yields: u64) -> Result<Duration> {
        self.run(async move {
            let start = Instant::now();
            yield_loop(yields, yield_now).await;
            Ok(start.elapsed())
        })
    }

    fn yield_many(&self, plan: &YieldMany) -> Result<Duration> {
        let plan = *plan;
        self.run(async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..plan.tasks)
                .map(|_| tokio::spawn(yield_loop(plan.yields_per_task, yield_now)))
                .collect();
            for task in tasks {
                task.await?;
            }
            Ok(start.elapsed())
        })
    }

    fn spawn_run(&self, plan: &SpawnRun) -> Result<Duration> {
        let plan = *plan;
        self.run(async move {
            let mut batch = Vec::with_capacity(plan.batch);
            let start = Instant::now();
            for size in plan.batch_sizes() {
                batch.extend((0..size).map(|_| tokio::spawn(async {})));
                for task in batch.drain(..) {
                    task.await?;
                }
            }
            Ok(start.elapsed())
        })
    }

    fn ping_pong(&self, round_trips: u64) -> Result<Duration> {
        self.run(async move {
            let (ping_tx, mut ping_rx) = mpsc::channel::<u64>(CHANNEL_CAPACITY);
            let (pong_tx, mut pong_rx) = mpsc::channel::<u64>(CHANNEL_CAPACITY);
            let ponger = tokio::spawn(async move {
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
        self.run(idle_growth(
            tasks,
            || {
                let (tx, rx) = oneshot::channel::<()>();
                drop(tokio::spawn(idle_task(rx)));
                tx
            },
            yield_now,
        ))
    }

    fn priority_latency(&self, plan: &PriorityPlan) -> Result<Vec<Duration>> {
        let plan = *plan;
        let (waker, wakes) = ExternalWaker::start(&plan)?;
        let ready = waker.ready();
        let latencies = self.run(async move {
            let stop = Arc::new(AtomicBool::new(false));
            let busy: Vec<_> = (0..plan.background_tasks)
                .map(|_| tokio::spawn(background(Arc::clone(&stop), plan.spin, yield_now)))
                .collect();
            let latencies = tokio::spawn(record_wakes(wakes, ready, plan.wakes)).await;
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
