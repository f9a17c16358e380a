//! Which failures are retried, and how long to wait before each retry.
//!
//! Invariants:
//! - Retried: transport errors, timeouts, malformed bodies, HTTP 429 and
//!   5xx; never other statuses, an open circuit or a planner error.
//! - The delay before retry `n` (1-based) is "equal jitter" over
//!   `min(cap, base * 2^(n-1))`: half of it fixed, half uniformly random, so
//!   delays grow but retries of many agents do not line up. It never exceeds
//!   the cap.
//! - The jitter generator is a lock-free SplitMix64 stream; it needs no
//!   quality beyond spreading retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::LlmError;

/// Whether a failed attempt may succeed when tried again.
pub(crate) fn is_retryable(error: &LlmError) -> bool {
    match error {
        LlmError::Transport(_) | LlmError::Timeout(_) | LlmError::Malformed(_) => true,
        LlmError::Status { status, .. } => *status == 429 || (500..=599).contains(status),
        LlmError::CircuitOpen { .. } | LlmError::Planner(_) => false,
    }
}

/// The SplitMix64 increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Jittered exponential backoff.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    rng: AtomicU64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        // Different seeds in different processes and providers; nothing
        // depends on the exact values.
        static PROVIDERS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = u64::from(nanos) ^ PROVIDERS.fetch_add(GAMMA, Ordering::Relaxed);
        Backoff {
            base,
            cap,
            rng: AtomicU64::new(seed),
        }
    }

    /// The delay before retry `retry` (1 for the first retry).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1 << doublings).min(self.cap);
        let half = ceiling / 2;
        let jitter_nanos =
            self.next_u64() % (u64::try_from(half.as_nanos()).unwrap_or(u64::MAX) + 1);
        half + Duration::from_nanos(jitter_nanos)
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retry_delays_grow_within_jitter_bounds_and_cap() {
        let backoff = Backoff::new(100 * MS, 1000 * MS);
        for _ in 0..200 {
            for (retry, ceiling) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let delay = backoff.delay(retry);
                assert!(delay >= ceiling * MS / 2, "retry {retry}: {delay:?}");
                assert!(delay <= ceiling * MS, "retry {retry}: {delay:?}");
            }
        }
    }

    #[test]
    fn retry_delays_are_jittered() {
        let backoff = Backoff::new(100 * MS, 1000 * MS);
        let first = backoff.delay(3);
        assert!((0..20).any(|_| backoff.delay(3) != first));
    }

    #[test]
    fn retry_classifies_errors() {
        let status = |status| LlmError::Status {
            status,
            body: String::new(),
        };
        assert!(is_retryable(&LlmError::Transport("refused".into())));
        assert!(is_retryable(&LlmError::Timeout(MS)));
        assert!(is_retryable(&LlmError::Malformed("eof".into())));
        assert!(is_retryable(&status(429)));
        assert!(is_retryable(&status(500)));
        assert!(is_retryable(&status(503)));
        assert!(!is_retryable(&status(400)));
        assert!(!is_retryable(&status(401)));
        assert!(!is_retryable(&status(404)));
        assert!(!is_retryable(&LlmError::CircuitOpen { retry_in: MS }));
        assert!(!is_retryable(&LlmError::Planner("no step".into())));
    }
}
