//! Yield-speed probe for profiling (`valgrind --tool=callgrind`, `perf`):
//! `yield_speed [one|many] [yields]`. The benchmarks proper live in
//! `tiffany perf-test sched`.
use std::time::Instant;
use tiffany_sched::{GroupConfig, Runtime, yield_now};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "both".into());
    let yields: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
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
    if mode != "one" {
        let groups: Vec<_> = (0..100).map(|i| rt.group(GroupConfig::new(format!("a{i}")).worker(0))).collect();
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
