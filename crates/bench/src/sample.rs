//! Sampling: warm-up, interleaved samples, and their [`Summary`].
//!
//! Invariants:
//! - every contender (ours and each peer) is run the same number of times,
//!   interleaved round by round (`A B C A B C ...`), so a slow spell of the
//!   machine lands on all of them instead of skewing one ratio;
//! - warm-up runs are made in the same interleaved order and discarded;
//! - at least [`MIN_SAMPLES`] samples are kept, quick mode included; quick
//!   mode shrinks the work per sample, never the sample count below that.

use anyhow::{Result, ensure};

/// The fewest samples a metric is ever reported from.
pub const MIN_SAMPLES: usize = 5;

/// How many warm-up and measured runs each contender gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Discarded runs before the samples.
    pub(crate) warmup: usize,
    /// Measured runs; at least [`MIN_SAMPLES`].
    pub(crate) samples: usize,
}

impl Plan {
    /// The plan used by the suites: one warm-up round, then 7 samples (5 in
    /// quick mode).
    pub(crate) fn for_mode(quick: bool) -> Self {
        Plan {
            warmup: 1,
            samples: if quick { MIN_SAMPLES } else { 7 },
        }
    }
}

/// The full size of a workload, or the quick one.
pub(crate) fn pick<T>(quick: bool, full: T, quick_size: T) -> T {
    if quick { quick_size } else { full }
}

/// Where a run sits in its plan, for the progress indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// The `n`th warm-up round (1-based).
    Warmup(usize),
    /// The `n`th measured round (1-based).
    Sample(usize),
}

/// Runs `run` for every contender, interleaved, following `plan`, and
/// returns each contender's kept outputs, in the order of `contenders`.
///
/// `on_run` is told about each run before it starts (for progress output).
pub(crate) fn interleave<C, O>(
    plan: Plan,
    contenders: &[C],
    mut on_run: impl FnMut(Round, &C),
    mut run: impl FnMut(&C) -> Result<O>,
) -> Result<Vec<Vec<O>>> {
    ensure!(
        plan.samples >= MIN_SAMPLES,
        "a plan needs at least {MIN_SAMPLES} samples, got {}",
        plan.samples
    );
    for round in 1..=plan.warmup {
        for c in contenders {
            on_run(Round::Warmup(round), c);
            run(c)?;
        }
    }
    let mut kept: Vec<Vec<O>> = contenders
        .iter()
        .map(|_| Vec::with_capacity(plan.samples))
        .collect();
    for round in 1..=plan.samples {
        for (c, out) in contenders.iter().zip(&mut kept) {
            on_run(Round::Sample(round), c);
            out.push(run(c)?);
        }
    }
    Ok(kept)
}

/// The median and range of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples.
    pub samples: usize,
}

impl Summary {
    /// Summarises `values`; an error when empty or when any is not finite.
    pub fn of(values: &[f64]) -> Result<Self> {
        ensure!(!values.is_empty(), "no samples to summarise");
        ensure!(
            values.iter().all(|v| v.is_finite()),
            "a sample is not a finite number: {values:?}"
        );
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Ok(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            samples: n,
        })
    }

    /// Summarises one figure drawn from each output.
    pub fn of_each<O>(outputs: &[O], figure: impl Fn(&O) -> f64) -> Result<Self> {
        let values: Vec<f64> = outputs.iter().map(figure).collect();
        Summary::of(&values)
    }
}

/// The `p`-th percentile (`0.0..=100.0`) of `sorted` by the nearest-rank
/// method; `None` when `sorted` is empty. `sorted` must be ascending.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Nearest rank: the smallest value with at least p% of values <= it.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_of_odd_and_even_counts() {
        let odd = Summary::of(&[5.0, 1.0, 3.0, 9.0, 7.0]).unwrap();
        assert_eq!(
            (odd.median, odd.min, odd.max, odd.samples),
            (5.0, 1.0, 9.0, 5)
        );
        let even = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn summary_spread_brackets_the_median() {
        let s = Summary::of(&[10.0, 12.0, 11.0, 30.0, 9.5, 10.5, 11.5]).unwrap();
        assert!(s.min <= s.median && s.median <= s.max);
        assert_eq!(s.median, 11.0);
    }

    #[test]
    fn summary_refuses_empty_and_non_finite() {
        assert!(Summary::of(&[]).is_err());
        assert!(Summary::of(&[1.0, f64::NAN]).is_err());
    }

    #[test]
    fn interleave_runs_a_b_a_b_and_discards_warmup() {
        let mut log = Vec::new();
        let plan = Plan {
            warmup: 1,
            samples: 5,
        };
        let mut counter = 0;
        let kept = interleave(
            plan,
            &["a", "b"],
            |_, _| {},
            |c| {
                counter += 1;
                log.push(*c);
                Ok(counter)
            },
        )
        .unwrap();
        assert_eq!(log, ["a", "b"].repeat(6));
        assert_eq!(kept, vec![vec![3, 5, 7, 9, 11], vec![4, 6, 8, 10, 12]]);
    }

    #[test]
    fn interleave_refuses_too_few_samples() {
        let plan = Plan {
            warmup: 0,
            samples: 4,
        };
        assert!(interleave(plan, &[()], |_, _| {}, |()| Ok(())).is_err());
    }

    #[test]
    fn quick_plan_still_takes_min_samples() {
        assert!(Plan::for_mode(true).samples >= MIN_SAMPLES);
        assert!(Plan::for_mode(false).samples >= MIN_SAMPLES);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
