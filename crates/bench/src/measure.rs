//! Measuring one workload on several contenders: the sampling plan, the
//! progress output, and the metrics built from what each contender's runs
//! returned. Shared by every suite.
//!
//! Invariants:
//! - the contenders of a workload run interleaved, following one [`Plan`]
//!   (see [`crate::sample`]), so each one gets the same number of runs;
//! - a metric's value and spread come from exactly one contender, "ours";
//!   every other contender measured in the same workload is one of its
//!   peers, reported by its median;
//! - when ours was not measured (its code is not built in), the metric is
//!   [`Metric::pending`]: every contender measured is a peer and nothing
//!   stands in for our value.

use anyhow::{Context as _, Result};

use crate::progress::Progress;
use crate::report::{Better, Metric};
use crate::sample::{Plan, Summary, interleave};

/// Anything measured in a workload: ours or a peer.
pub(crate) trait Named {
    /// The name in reports: `tiffany` for ours, else the peer's key in
    /// `peers`.
    fn name(&self) -> &'static str;
}

/// The sampling plan and progress output shared by every workload of a
/// suite.
pub(crate) struct Bench<'p> {
    plan: Plan,
    progress: &'p mut Progress,
}

impl<'p> Bench<'p> {
    /// Measures with `plan`, reporting progress to `progress`.
    pub(crate) fn new(plan: Plan, progress: &'p mut Progress) -> Self {
        Bench { plan, progress }
    }

    /// Announces an unmeasured phase of a workload (writing its data, ...).
    pub(crate) fn note(&mut self, phase: &str) {
        self.progress.workload(phase);
    }

    /// Runs `run` for each contender following the plan, interleaved.
    pub(crate) fn measure<C: Named + ?Sized, O>(
        &mut self,
        workload: &str,
        contenders: &[&C],
        mut run: impl FnMut(&C) -> Result<O>,
    ) -> Result<Measured<O>> {
        self.progress.workload(workload);
        let samples = self.plan.samples;
        let progress = &mut *self.progress;
        let outputs = interleave(
            self.plan,
            contenders,
            |round, c| progress.run(round, samples, c.name()),
            |c| run(c).with_context(|| format!("{workload} on {}", c.name())),
        )?;
        Ok(Measured {
            names: contenders.iter().map(|c| c.name()).collect(),
            outputs,
        })
    }
}

/// The kept outputs of one workload, per contender, in the order measured.
pub(crate) struct Measured<O> {
    names: Vec<&'static str>,
    outputs: Vec<Vec<O>>,
}

impl<O> Measured<O> {
    /// No contender measured: every metric is pending and has no peer.
    pub(crate) fn empty() -> Self {
        Measured {
            names: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// A metric of `figure` whose value is the first contender's (ours) and
    /// whose peers are all the others.
    pub(crate) fn metric(
        &self,
        name: &str,
        unit: &str,
        better: Better,
        figure: impl Fn(&O) -> f64,
    ) -> Result<Metric> {
        let ours = self.names.first().context("no contender measured")?;
        self.metric_of(ours, name, unit, better, figure)
    }

    /// A metric of `figure` whose value is contender `ours`'s and whose peers
    /// are all the other contenders; an error when `ours` was not measured.
    pub(crate) fn metric_of(
        &self,
        ours: &str,
        name: &str,
        unit: &str,
        better: Better,
        figure: impl Fn(&O) -> f64,
    ) -> Result<Metric> {
        let metric = self.metric_alone(ours, name, unit, better, &figure)?;
        self.with_peers(metric, |peer| peer != ours, figure)
    }

    /// A metric of `figure` whose value is contender `ours`'s, without peers.
    pub(crate) fn metric_alone(
        &self,
        ours: &str,
        name: &str,
        unit: &str,
        better: Better,
        figure: impl Fn(&O) -> f64,
    ) -> Result<Metric> {
        let summary = Summary::of_each(self.outputs_of(ours)?, figure)?;
        Metric::new(name, unit, better, &summary)
    }

    /// [`Measured::metric_of`] when `ours` was measured; otherwise a
    /// [`Metric::pending`] metric, for `reason`, with every contender as a
    /// peer.
    pub(crate) fn metric_or_pending(
        &self,
        ours: &str,
        reason: &str,
        name: &str,
        unit: &str,
        better: Better,
        figure: impl Fn(&O) -> f64,
    ) -> Result<Metric> {
        if self.names.contains(&ours) {
            self.metric_of(ours, name, unit, better, figure)
        } else {
            let metric = Metric::pending(name, unit, better, reason);
            self.with_peers(metric, |_| true, figure)
        }
    }

    /// The median of `figure` over the kept outputs of `contender`, for a
    /// workload parameter.
    pub(crate) fn median_of(&self, contender: &str, figure: impl Fn(&O) -> f64) -> Result<f64> {
        Ok(Summary::of_each(self.outputs_of(contender)?, figure)?.median)
    }

    /// The kept outputs of `contender`.
    pub(crate) fn outputs_of(&self, contender: &str) -> Result<&[O]> {
        self.names
            .iter()
            .position(|&n| n == contender)
            .and_then(|i| self.outputs.get(i))
            .map(Vec::as_slice)
            .with_context(|| format!("{contender} was not measured"))
    }

    /// Adds the median of `figure` of every contender `is_peer` accepts.
    fn with_peers(
        &self,
        mut metric: Metric,
        is_peer: impl Fn(&str) -> bool,
        figure: impl Fn(&O) -> f64,
    ) -> Result<Metric> {
        for (peer, outputs) in self.names.iter().zip(&self.outputs) {
            if is_peer(peer) {
                metric = metric.peer(peer, Summary::of_each(outputs, &figure)?.median)?;
            }
        }
        Ok(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct C(&'static str);

    impl Named for C {
        fn name(&self) -> &'static str {
            self.0
        }
    }

    fn measured(contenders: &[&C]) -> Measured<f64> {
        let mut progress = Progress::stderr();
        let mut bench = Bench::new(Plan::for_mode(true), &mut progress);
        let mut n = 0.0;
        bench
            .measure("test", contenders, |c| {
                n += 1.0;
                Ok(if c.0 == "ours" { 10.0 } else { 20.0 + n })
            })
            .unwrap()
    }

    #[test]
    fn measure_ours_value_others_peers() {
        let m = measured(&[&C("ours"), &C("peer")]);
        let metric = m.metric("s.x_ns", "ns", Better::Lower, |&v| v).unwrap();
        assert_eq!(metric.value, 10.0);
        assert_eq!(metric.peers.keys().collect::<Vec<_>>(), ["peer"]);
        assert!(metric.pending.is_none());
        let alone = m
            .metric_alone("peer", "s.y_ns", "ns", Better::Lower, |&v| v)
            .unwrap();
        assert!(alone.peers.is_empty() && alone.value > 20.0);
    }

    #[test]
    fn measure_without_ours_is_pending_with_every_peer() {
        let m = measured(&[&C("a"), &C("b")]);
        assert!(
            m.metric_of("ours", "s.x_ns", "ns", Better::Lower, |&v| v)
                .is_err()
        );
        let metric = m
            .metric_or_pending("ours", "not built", "s.x_ns", "ns", Better::Lower, |&v| v)
            .unwrap();
        assert_eq!(metric.pending.as_deref(), Some("not built"));
        assert_eq!(metric.peers.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}
