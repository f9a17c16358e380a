//! Cycle-time accounting: a fixed log-linear histogram (8 sub-buckets per
//! power of two, so a percentile is within 12.5% of the true value), lock
//! free, constant memory however long the node runs.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB: usize = 8;
const BUCKETS: usize = 64 * SUB;

/// Plan -> execute -> observe cycle times in microseconds.
pub(crate) struct CycleStats {
    counts: Box<[AtomicU64]>,
}

impl Default for CycleStats {
    fn default() -> CycleStats {
        CycleStats {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let log = 63 - micros.leading_zeros() as usize;
    let sub = ((micros >> (log - 3)) & (SUB as u64 - 1)) as usize;
    (log - 2) * SUB + sub
}

/// The largest value that falls in `bucket`.
fn upper_bound(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let log = bucket / SUB + 2;
    let sub = (bucket % SUB) as u64;
    ((SUB as u64 + sub + 1) << (log - 3)) - 1
}

impl CycleStats {
    pub(crate) fn record(&self, micros: u64) {
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// (count, p50, p99): percentiles as bucket upper bounds.
    pub(crate) fn summary(&self) -> (u64, u64, u64) {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let pct = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_bound(i);
                }
            }
            0
        };
        if total == 0 {
            (0, 0, 0)
        } else {
            (total, pct(0.5), pct(0.99))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_an_eighth() {
        for v in (0..100_000u64).chain([u64::MAX / 2, 1 << 40]) {
            let b = bucket_of(v);
            assert!(upper_bound(b) >= v, "{v}");
            assert!(upper_bound(b) - v <= v / 8, "{v} -> {}", upper_bound(b));
            if b > 0 {
                assert!(upper_bound(b - 1) < v);
            }
        }
    }

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let s = CycleStats::default();
        for v in 1..=100 {
            s.record(v * 1000);
        }
        let (n, p50, p99) = s.summary();
        assert_eq!(n, 100);
        assert!((50_000..=56_250).contains(&p50), "{p50}");
        assert!((99_000..=111_375).contains(&p99), "{p99}");
    }
}
