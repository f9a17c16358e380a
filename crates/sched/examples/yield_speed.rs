//! Hot-path probe for profiling (`valgrind --tool=callgrind`, `perf`):
//! `yield_speed [one|many|spawn|channel] [count]`. The benchmarks proper
//! live in `tiffany perf-test sched`.
use std::time::Instant;
use tiffany_sched::{GroupConfig, Runtime, yield_now};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "both".into());
    let yields: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let rt = Runtime::builder().workers(1).build().expect("runtime");
    if mode != "many" {
        let ns = rt.block_on(async move {
            let t = Instant::now();
            for _ in 0..yields {
                yield_now().await;
            }
            t.elapsed().as_nanos() as f64 / yields as f64
        });
        println!("1 task: {ns:.1} ns/yield");
    }
    if mode == "spawn" {
        let ns = rt.block_on_pinned(move || async move {
            let t = Instant::now();
            let mut batch = Vec::with_capacity(1000);
            for _ in 0..(yields / 1000).max(1) {
                batch.extend((0..1000).map(|_| tiffany_sched::spawn(async {})));
                for h in batch.drain(..) {
                    h.await.expect("task");
                }
            }
            t.elapsed().as_nanos() as f64 / ((yields / 1000).max(1) * 1000) as f64
        });
        println!("spawn+run: {ns:.1} ns/task");
        return;
    }
    if mode == "channel" {
        let ns = rt.block_on_pinned(move || async move {
            let (ping_tx, mut ping_rx) = tiffany_sched::sync::channel::<u64>(64);
            let (pong_tx, mut pong_rx) = tiffany_sched::sync::channel::<u64>(64);
            let ponger = tiffany_sched::spawn(async move {
                while let Some(v) = ping_rx.recv().await {
                    if pong_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            let t = Instant::now();
            for i in 0..yields {
                ping_tx.send(i).await.expect("send");
                pong_rx.recv().await.expect("recv");
            }
            let ns = t.elapsed().as_nanos() as f64 / (2 * yields) as f64;
            drop(ping_tx);
            ponger.await.expect("ponger");
            ns
        });
        println!("channel one-way: {ns:.1} ns");
        return;
    }
    if mode != "one" {
        let groups: Vec<_> = (0..100)
            .map(|i| rt.group(GroupConfig::new(format!("a{i}")).worker(0)))
            .collect();
        let per_task = (yields / 1000).max(1);
        let ns = rt.block_on(async move {
            let t = Instant::now();
            let handles: Vec<_> = (0..1000)
                .map(|i| {
                    groups[i % 100].spawn(async move {
                        for _ in 0..per_task {
                            yield_now().await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.expect("task");
            }
            t.elapsed().as_nanos() as f64 / (per_task * 1000) as f64
        });
        println!("1000 tasks: {ns:.1} ns/yield");
    }
}
