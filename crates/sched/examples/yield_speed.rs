//! Quick yield-speed probe (development aid).
use std::time::Instant;
use tiffany_sched::{GroupConfig, Runtime, yield_now};

fn main() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    for _ in 0..3 {
        let n = 10_000_000u64;
        let ns = rt.block_on(async move {
            let t = Instant::now();
            for _ in 0..n {
                yield_now().await;
            }
            t.elapsed().as_nanos() as f64 / n as f64
        });
        println!("1 task: {ns:.1} ns/yield");
        let groups: Vec<_> = (0..100).map(|i| rt.group(GroupConfig::new(format!("a{i}")).worker(0))).collect();
        let ns = rt.block_on(async move {
            let t = Instant::now();
            let hs: Vec<_> = (0..1000).map(|i| groups[i % 100].spawn(async { for _ in 0..10_000 { yield_now().await; } })).collect();
            for h in hs { h.await.unwrap(); }
            t.elapsed().as_nanos() as f64 / 1e7
        });
        println!("1000 tasks: {ns:.1} ns/yield");
    }
}
