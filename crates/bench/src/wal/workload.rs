//! The parts of the `wal` workloads that do not depend on whose log runs
//! them: the seeded payloads, the append budget, and the timing loops every
//! contender is measured with.
//!
//! Invariants:
//! - every contender appends the very same payloads in the same order
//!   ([`Payloads`], seeded) and is timed by the same loop
//!   ([`append_latency`], [`append_throughput`], [`replay_gbps`],
//!   [`cold_start`]), so a difference between two contenders is a
//!   difference of their own code;
//! - setup (opening, preallocating, prefilling) and teardown (closing,
//!   which may checkpoint) happen outside the timed span; each per-append
//!   latency spans exactly one `append` call;
//! - a run stops at its append budget or at its time cap, whichever comes
//!   first, but never before its minimum count ([`Budget`]); how many
//!   appends it made is part of its output.

use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};

use super::{AppendLog, ColdStart, OpenPlan, ReplaySource};
use crate::os::{CacheDrop, drop_page_cache};
use crate::sample::percentile;
use crate::seeded::SplitMix64;

/// Single-writer appends spread their records over this many streams
/// (agents), round robin.
pub(crate) const STREAMS: u64 = 100;

/// A fixed set of seeded payloads of one length, handed out in a cycle.
#[derive(Debug, Clone)]
pub(crate) struct Payloads {
    bytes: Vec<u8>,
    len: usize,
}

impl Payloads {
    /// `count` payloads of `len` pseudo-random bytes (incompressible).
    pub(crate) fn random(seed: u64, count: usize, len: usize) -> Self {
        let mut bytes = vec![0; count.max(1) * len];
        SplitMix64(seed).fill(&mut bytes);
        Payloads { bytes, len }
    }

    /// `count` payloads of `len` bytes of ASCII text shaped like an agent's
    /// journal entry (a small JSON object of words from a fixed
    /// vocabulary): compressible the way real records are.
    pub(crate) fn text(seed: u64, count: usize, len: usize) -> Self {
        const WORDS: [&str; 32] = [
            "plan",
            "list",
            "files",
            "in",
            "the",
            "workspace",
            "then",
            "read",
            "src",
            "main",
            "rs",
            "and",
            "run",
            "cargo",
            "test",
            "observe",
            "3",
            "passed",
            "0",
            "failed",
            "skill",
            "shell",
            "result",
            "ok",
            "memory",
            "search",
            "agent",
            "step",
            "llm",
            "tokens",
            "next",
            "done",
        ];
        const KINDS: [&str; 4] = ["plan", "skill", "observe", "llm"];
        let mut rng = SplitMix64(seed);
        let mut bytes = Vec::with_capacity(count.max(1) * len);
        for _ in 0..count.max(1) {
            let mut text = format!(
                r#"{{"agent":{},"step":{},"kind":"{}","note":""#,
                rng.below(1000),
                rng.below(100_000),
                KINDS[rng.below(KINDS.len() as u64) as usize]
            );
            while text.len() + 2 < len {
                text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
                text.push(' ');
            }
            text.truncate(len.saturating_sub(2));
            text.push_str(r#""}"#);
            text.truncate(len);
            bytes.extend_from_slice(text.as_bytes());
            // Only for len < 2: pad so every payload has exactly `len` bytes.
            bytes.resize(bytes.len() + len - text.len(), b' ');
        }
        Payloads { bytes, len }
    }

    /// The length of every payload.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The `i`th payload of the cycle.
    pub(crate) fn get(&self, i: u64) -> &[u8] {
        let count = (self.bytes.len() / self.len.max(1)).max(1) as u64;
        let start = (i % count) as usize * self.len;
        &self.bytes[start..start + self.len]
    }
}

/// How much one writer appends in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    /// At most this many appends.
    pub(crate) appends: u64,
    /// At least this many, even past the time cap.
    pub(crate) min_appends: u64,
    /// Stop starting appends after this long (once `min_appends` are done).
    pub(crate) time: Duration,
}

impl Budget {
    /// Whether a writer that has made `done` appends in `elapsed` makes
    /// another.
    pub(crate) fn go_on(&self, done: u64, elapsed: Duration) -> bool {
        done < self.appends && (done < self.min_appends || elapsed < self.time)
    }
}

/// One run of single-writer appends: its per-append latency statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LatencySample {
    /// Median latency, seconds.
    pub(crate) p50: f64,
    /// 99th percentile, seconds.
    pub(crate) p99: f64,
    /// Mean latency, seconds.
    pub(crate) mean: f64,
    /// How many appends the run made.
    pub(crate) appends: u64,
}

impl LatencySample {
    /// The statistics of `latencies`; an error when there are none.
    pub(crate) fn of(latencies: &[Duration]) -> Result<Self> {
        let mut secs: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
        secs.sort_by(f64::total_cmp);
        let (Some(p50), Some(p99)) = (percentile(&secs, 50.0), percentile(&secs, 99.0)) else {
            return Err(anyhow!("no appends were timed"));
        };
        Ok(LatencySample {
            p50,
            p99,
            mean: secs.iter().sum::<f64>() / secs.len() as f64,
            appends: secs.len() as u64,
        })
    }
}

/// One run of concurrent appends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ThroughputSample {
    /// Appends completed per second, all writers together.
    pub(crate) ops_per_sec: f64,
    /// Appends completed, all writers together.
    pub(crate) appends: u64,
}

/// One cold start: how long it took and how cold the cache was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ColdSample {
    /// Milliseconds from the start call to its return.
    pub(crate) ms: f64,
    /// How the page cache was dropped just before.
    pub(crate) cache: CacheDrop,
}

/// Opens `log` fresh in `dir` for one writer and times each append of a run
/// within `budget`.
pub(crate) fn append_latency(
    log: &dyn AppendLog,
    dir: &Path,
    budget: Budget,
    payloads: &Payloads,
) -> Result<LatencySample> {
    let plan = OpenPlan {
        writers: 1,
        appends: budget.appends,
        payload_len: payloads.len(),
    };
    let mut appenders = log.open(dir, &plan)?;
    let appender = match appenders.as_mut_slice() {
        [one] => one,
        other => return Err(anyhow!("asked for 1 appender, got {}", other.len())),
    };
    let mut latencies = Vec::with_capacity(usize::try_from(budget.appends).unwrap_or(0));
    let start = Instant::now();
    let mut i = 0;
    while budget.go_on(i, start.elapsed()) {
        let payload = payloads.get(i);
        let t = Instant::now();
        appender.append(i % STREAMS, payload)?;
        latencies.push(t.elapsed());
        i += 1;
    }
    // `appenders` closes after the clock stopped, at the end of this scope.
    LatencySample::of(&latencies)
}

/// Opens `log` fresh in `dir` for `writers` threads, each appending within
/// `budget`, and measures the appends completed per second.
// Blocking on purpose: benchmark threads, not tasks.
#[allow(clippy::disallowed_methods)]
pub(crate) fn append_throughput(
    log: &dyn AppendLog,
    dir: &Path,
    writers: usize,
    budget: Budget,
    payloads: &Payloads,
) -> Result<ThroughputSample> {
    let plan = OpenPlan {
        writers,
        appends: budget.appends * writers as u64,
        payload_len: payloads.len(),
    };
    let appenders = log.open(dir, &plan)?;
    ensure!(
        appenders.len() == writers,
        "asked for {writers} appenders, got {}",
        appenders.len()
    );
    let barrier = Barrier::new(writers + 1);
    let (outcomes, elapsed) = thread::scope(|s| {
        let handles: Vec<_> = appenders
            .into_iter()
            .enumerate()
            .map(|(w, mut appender)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while budget.go_on(n, start.elapsed()) {
                        let payload = payloads.get(n * writers as u64 + w as u64);
                        appender.append(w as u64, payload)?;
                        n += 1;
                    }
                    // Hand the appender back: closing it (SQLite checkpoints
                    // on the last close) must not count.
                    Ok::<_, anyhow::Error>((n, appender))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("an appender thread panicked")))
            .collect();
        (outcomes, start.elapsed())
    });
    let mut appends = 0;
    let mut open = Vec::with_capacity(writers);
    for outcome in outcomes {
        let (n, appender) = outcome??;
        appends += n;
        open.push(appender);
    }
    drop(open);
    Ok(ThroughputSample {
        ops_per_sec: appends as f64 / elapsed.as_secs_f64(),
        appends,
    })
}

/// Replays `source` once and returns its throughput in GB/s (1e9 bytes of
/// payload per second).
pub(crate) fn replay_gbps<S: ReplaySource + ?Sized>(source: &S) -> Result<f64> {
    let start = Instant::now();
    let bytes = source.replay()?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(bytes > 0, "{} replayed nothing", source.name());
    Ok(bytes as f64 / secs / 1e9)
}

/// Drops the page cache of `source`'s files (machine-wide fallback
/// allowed), then times one start.
pub(crate) fn cold_start<S: ColdStart + ?Sized>(source: &S) -> Result<ColdSample> {
    let files = source.files()?;
    let cache = drop_page_cache(&files, true)
        .with_context(|| format!("cannot drop the page cache of {}", source.name()))?;
    let start = Instant::now();
    let started = source.start()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    drop(started);
    Ok(ColdSample { ms, cache })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_payloads_are_seeded_and_cycle() {
        let a = Payloads::random(1, 4, 256);
        let b = Payloads::random(1, 4, 256);
        assert_eq!(a.get(0), b.get(0));
        assert_eq!(a.get(0).len(), 256);
        assert_ne!(a.get(0), a.get(1));
        assert_eq!(a.get(1), a.get(5), "4 payloads, then the cycle repeats");
        assert_ne!(Payloads::random(2, 4, 256).get(0), a.get(0));
    }

    #[test]
    fn workload_text_payloads_are_exact_length_json_ish_ascii() {
        for len in [0, 1, 2, 40, 256] {
            let p = Payloads::text(9, 3, len);
            for i in 0..3 {
                assert_eq!(p.get(i).len(), len, "len {len}");
                assert!(p.get(i).is_ascii());
            }
        }
        let p = Payloads::text(9, 3, 256);
        let first = std::str::from_utf8(p.get(0)).unwrap();
        assert!(
            first.starts_with(r#"{"agent":"#) && first.ends_with(r#""}"#),
            "{first}"
        );
        assert_eq!(Payloads::text(9, 3, 256).get(2), p.get(2), "seeded");
    }

    #[test]
    fn workload_budget_stops_at_count_or_time_but_not_before_min() {
        let b = Budget {
            appends: 10,
            min_appends: 3,
            time: Duration::from_secs(1),
        };
        assert!(b.go_on(0, Duration::ZERO));
        assert!(!b.go_on(10, Duration::ZERO), "count reached");
        assert!(b.go_on(2, Duration::from_secs(5)), "below the minimum");
        assert!(!b.go_on(3, Duration::from_secs(5)), "time is up");
        assert!(b.go_on(9, Duration::from_millis(999)));
    }

    #[test]
    fn workload_latency_stats_are_nearest_rank_and_mean() {
        let lat: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = LatencySample::of(&lat).unwrap();
        assert!((s.p50 - 50e-6).abs() < 1e-12, "{s:?}");
        assert!((s.p99 - 99e-6).abs() < 1e-12, "{s:?}");
        assert!((s.mean - 50.5e-6).abs() < 1e-12, "{s:?}");
        assert_eq!(s.appends, 100);
        assert!(LatencySample::of(&[]).is_err());
    }
}
