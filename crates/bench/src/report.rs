//! The report: one [`Metric`] per measured figure, gathered into a
//! [`Report`] that serialises in the shape `shared/PERF.md` fixes, and the
//! human table printed per suite.
//!
//! Invariants:
//! - every number in a [`Metric`] is finite (JSON has no NaN; a non-finite
//!   figure is refused when the metric is built, so a report always
//!   round-trips);
//! - `spread` is `[min, max]` of the samples that produced `value`, so
//!   `spread[0] <= value <= spread[1]`;
//! - ratios are always `ours / peer`; whether that is good news depends on
//!   [`Better`], and [`Metric::advantage`] turns it into "how many times
//!   better we are" (greater than 1 means we win) for display and goals;
//! - a *pending* metric ([`Metric::pending`]) has peers but no value of
//!   ours (our code is not built in yet): it is shown in the table as
//!   pending, misses no goal, and is never written to the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use anyhow::{Context as _, Result, ensure};
use serde::{Deserialize, Serialize};

use crate::sample::Summary;

/// The report's schema version; bumped on any incompatible change.
pub const SCHEMA: u32 = 1;

/// Which direction of a metric is the good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better (latencies, bytes).
    Lower,
    /// Larger is better (throughputs).
    Higher,
}

impl Better {
    /// Whether `value` satisfies `goal` in this direction (ties meet it).
    pub fn meets(self, value: f64, goal: f64) -> bool {
        match self {
            Better::Lower => value <= goal,
            Better::Higher => value >= goal,
        }
    }

    fn comparator(self) -> &'static str {
        match self {
            Better::Lower => "<=",
            Better::Higher => ">=",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

/// A goal relative to a peer: we must be at least `factor` times better
/// than `peer` (in the metric's [`Better`] direction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioGoal {
    /// The peer's name, a key of [`Metric::peers`].
    pub peer: String,
    /// How many times better than the peer we must be.
    pub factor: f64,
}

/// One measured figure, with its goals and the same figure for each peer.
///
/// Field order and names are the JSON shape of `shared/PERF.md`;
/// `goal_note` and `ratio_goal` are extensions written only when a metric has
/// a goal relative to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// `<suite>.<metric>_<unit>`, stable once published.
    pub name: String,
    /// The median of the samples.
    pub value: f64,
    /// The unit of `value`, `spread`, targets and peers (`ns`, `us`, `B`, `1/s`).
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// `[min, max]` of the samples.
    pub spread: [f64; 2],
    /// How many samples `value` is the median of.
    pub samples: usize,
    /// The specification's figure, converted to `unit`, where one applies.
    pub spec_target: Option<f64>,
    /// The figure set in the issue, where one applies.
    pub goal: Option<f64>,
    /// A textual goal that is not a plain bound, e.g. `>= 2x faster than tokio_current_thread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_note: Option<String>,
    /// The machine-checkable form of a goal relative to a peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_goal: Option<RatioGoal>,
    /// The workload's parameters: sizes, seeds, configuration.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Each peer's value for the same metric, measured in the same run.
    pub peers: BTreeMap<String, f64>,
    /// Why our side of this metric was not measured, for a metric made by
    /// [`Metric::pending`]; `None` for a measured one. A pending metric's
    /// `value`, `spread` and `samples` are zero and mean nothing; it is not
    /// serialised ([`Report::new`] leaves it out of the results).
    #[serde(skip)]
    pub pending: Option<String>,
}

impl Metric {
    /// A metric whose value and spread come from `ours`.
    pub fn new(name: &str, unit: &str, better: Better, ours: &Summary) -> Result<Self> {
        ensure_finite(name, "value", ours.median)?;
        ensure_finite(name, "spread", ours.min)?;
        ensure_finite(name, "spread", ours.max)?;
        Ok(Metric {
            value: ours.median,
            spread: [ours.min, ours.max],
            samples: ours.samples,
            ..Metric::blank(name, unit, better)
        })
    }

    /// A metric with no value, goals, parameters or peers yet.
    fn blank(name: &str, unit: &str, better: Better) -> Self {
        Metric {
            name: name.to_owned(),
            value: 0.0,
            unit: unit.to_owned(),
            better,
            spread: [0.0, 0.0],
            samples: 0,
            spec_target: None,
            goal: None,
            goal_note: None,
            ratio_goal: None,
            params: serde_json::Map::new(),
            peers: BTreeMap::new(),
            pending: None,
        }
    }

    /// A metric whose side of ours cannot be measured yet (the subsystem
    /// lacks the feature), for `reason`: its goals and peers are reported,
    /// its value is not.
    pub fn pending(name: &str, unit: &str, better: Better, reason: &str) -> Self {
        Metric {
            pending: Some(reason.to_owned()),
            ..Metric::blank(name, unit, better)
        }
    }

    /// Whether this is a [`Metric::pending`] metric, without a value of ours.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Sets the specification's target.
    #[must_use]
    pub fn spec_target(mut self, target: f64) -> Self {
        self.spec_target = Some(target);
        self
    }

    /// Sets the goal.
    #[must_use]
    pub fn goal(mut self, goal: f64) -> Self {
        self.goal = Some(goal);
        self
    }

    /// Requires us to be at least `factor` times better than `peer`; also
    /// writes the matching [`Metric::goal_note`].
    #[must_use]
    pub fn ratio_goal(mut self, peer: &str, factor: f64) -> Self {
        let word = advantage_word(&self.unit, self.better, true);
        self.goal_note = Some(format!(">= {factor}x {word} than {peer}"));
        self.ratio_goal = Some(RatioGoal {
            peer: peer.to_owned(),
            factor,
        });
        self
    }

    /// Requires our value to be at most `times` the value of `peer` (a
    /// lower-is-better figure such as a latency against a baseline's), or at
    /// least `1 / times` of it for a higher-is-better figure: we may be up to
    /// `times` worse than `peer`, no more. Also writes the matching
    /// [`Metric::goal_note`].
    #[must_use]
    pub fn ratio_bound(mut self, peer: &str, times: f64) -> Self {
        self.goal_note = Some(match self.better {
            Better::Lower => format!("<= {times}x {peer}"),
            Better::Higher => format!(">= {peer} / {times}"),
        });
        self.ratio_goal = Some(RatioGoal {
            peer: peer.to_owned(),
            factor: 1.0 / times,
        });
        self
    }

    /// Adds a workload parameter.
    #[must_use]
    pub fn param(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(key.to_owned(), value.into());
        self
    }

    /// Adds every `(key, value)` of `params`.
    #[must_use]
    pub fn params(mut self, params: &[(&str, serde_json::Value)]) -> Self {
        for (key, value) in params {
            self.params.insert((*key).to_owned(), value.clone());
        }
        self
    }

    /// Records a peer's value for this metric.
    pub fn peer(mut self, peer: &str, value: f64) -> Result<Self> {
        ensure_finite(&self.name, peer, value)?;
        self.peers.insert(peer.to_owned(), value);
        Ok(self)
    }

    /// `ours / peer`, the raw ratio written in the table; `None` when the
    /// peer's value is zero.
    pub fn ratio(&self, peer_value: f64) -> Option<f64> {
        (peer_value != 0.0).then(|| self.value / peer_value)
    }

    /// How many times better we are than a peer with `peer_value`: above 1
    /// we are better, below 1 worse. `None` when either side is zero.
    pub fn advantage(&self, peer_value: f64) -> Option<f64> {
        let ratio = self.ratio(peer_value)?;
        match self.better {
            Better::Lower => (ratio != 0.0).then(|| 1.0 / ratio),
            Better::Higher => Some(ratio),
        }
    }

    /// Each goal this metric misses, described for the "missed goals" line;
    /// empty when every goal is met (or there is none).
    /// A pending metric misses none: there is nothing of ours to check.
    pub fn missed_goals(&self) -> Vec<String> {
        let mut missed = Vec::new();
        if self.is_pending() {
            return missed;
        }
        let missed_bound = self
            .goal
            .filter(|&goal| !self.better.meets(self.value, goal));
        if let Some(goal) = missed_bound {
            missed.push(format!(
                "{}: {} {}, goal {} {} {}",
                self.name,
                format_number(self.value),
                self.unit,
                self.better.comparator(),
                format_number(goal),
                self.unit
            ));
        }
        if let Some(rg) = &self.ratio_goal {
            let advantage = self.peers.get(&rg.peer).and_then(|&p| self.advantage(p));
            match advantage {
                Some(adv) if adv >= rg.factor => {}
                Some(adv) => missed.push(format!(
                    "{}: {}, goal {}",
                    self.name,
                    describe_advantage(&self.unit, self.better, adv, &rg.peer),
                    self.goal_note.as_deref().unwrap_or_default()
                )),
                None => missed.push(format!(
                    "{}: no value for peer {} to check the goal against",
                    self.name, rg.peer
                )),
            }
        }
        missed
    }
}

fn ensure_finite(metric: &str, field: &str, value: f64) -> Result<()> {
    ensure!(
        value.is_finite(),
        "metric {metric}: {field} is not a finite number ({value})"
    );
    Ok(())
}

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// `std::env::consts::OS`, e.g. `linux`.
    pub os: String,
    /// The compiler's version, e.g. `1.95.0`, or `unknown`.
    pub rustc: String,
}

impl Machine {
    /// The machine this process runs on.
    pub fn current() -> Self {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            os: std::env::consts::OS.to_owned(),
            rustc: env!("TIFFANY_BENCH_RUSTC").to_owned(),
        }
    }
}

/// The machine-readable result of one `tiffany perf-test` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The version of the `tiffany` crates measured.
    pub tiffany_version: String,
    /// Whether the small `--quick` sizes were used.
    pub quick: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Every metric of every suite run, in suite order.
    pub results: Vec<Metric>,
}

impl Report {
    /// A report for this build on this machine, of the measured metrics
    /// among `results`: pending ones ([`Metric::pending`]) are left out.
    pub fn new(quick: bool, mut results: Vec<Metric>) -> Self {
        results.retain(|m| !m.is_pending());
        Report {
            schema: SCHEMA,
            tiffany_version: env!("CARGO_PKG_VERSION").to_owned(),
            quick,
            machine: Machine::current(),
            results,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).context("cannot serialise the report")
    }

    /// Writes [`Report::to_json`] to `out`, followed by a newline.
    pub fn write_json(&self, mut out: impl Write) -> Result<()> {
        let json = self.to_json()?;
        writeln!(out, "{json}")
            .and_then(|()| out.flush())
            .context("cannot write the JSON report")
    }
}

/// The human table of one suite's metrics, followed by the line naming the
/// missed goals (or saying that all were met).
///
/// Each metric row shows the median, the `[min, max]` spread and sample
/// count, the spec target, whether the goals are met, and the goals; below
/// it, one row per peer with the peer's median and `ours/peer`, spelled out
/// as how many times faster (or smaller, or higher) we are. A pending metric
/// shows `pending` for its value and status, its peers' values, and a last
/// line listing the pending metrics and why.
pub fn render_suite(suite: &str, quick: bool, machine: &Machine, metrics: &[Metric]) -> String {
    const HEADER: [&str; 7] = [
        "metric",
        "better",
        "value",
        "spread [min, max]",
        "spec",
        "status",
        "goal",
    ];
    let mut rows: Vec<Row> = vec![Row::Metric(HEADER.map(str::to_owned))];
    for m in metrics {
        rows.push(Row::Metric(metric_row(m)));
        for (peer, &value) in &m.peers {
            rows.push(peer_row(m, peer, value));
        }
    }
    let mut widths = [0; 7];
    for row in &rows {
        match row {
            Row::Metric(cells) => {
                for (w, cell) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            Row::Peer { name, value, .. } => {
                widths[0] = widths[0].max(name.chars().count());
                widths[2] = widths[2].max(value.chars().count());
            }
        }
    }

    let size = if quick { "quick sizes" } else { "full sizes" };
    let mut out = format!(
        "{suite}: {size}; {} cpus, {}, rustc {}; value = median of the samples\n",
        machine.cpus, machine.os, machine.rustc
    );
    for row in &rows {
        let line = match row {
            Row::Metric(cells) => {
                let mut line = String::new();
                for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                    if i > 0 {
                        line.push_str("  ");
                    }
                    let _ = write!(line, "{cell:<w$}");
                }
                line
            }
            Row::Peer {
                name,
                value,
                comparison,
            } => format!(
                "{name:<w0$}  {:<w1$}  {value:<w2$}  {comparison}",
                "",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            ),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }

    let missed: Vec<String> = metrics.iter().flat_map(Metric::missed_goals).collect();
    let pending: Vec<&Metric> = metrics.iter().filter(|m| m.is_pending()).collect();
    if missed.is_empty() {
        out.push_str(if pending.is_empty() {
            "all goals met\n"
        } else {
            "all measured goals met\n"
        });
    } else {
        let _ = writeln!(out, "missed goals ({}):", missed.len());
        for miss in missed {
            let _ = writeln!(out, "  - {miss}");
        }
    }
    if !pending.is_empty() {
        let _ = writeln!(out, "pending, ours not measured ({}):", pending.len());
        for m in pending {
            let reason = m.pending.as_deref().unwrap_or_default();
            let _ = writeln!(out, "  - {}: {reason}", m.name);
        }
    }
    out
}

/// A line of the human table.
enum Row {
    /// A metric (or the header): one cell per column.
    Metric([String; 7]),
    /// A peer under its metric: name and value in the metric and value
    /// columns, then the comparison, free-width.
    Peer {
        name: String,
        value: String,
        comparison: String,
    },
}

fn metric_row(m: &Metric) -> [String; 7] {
    let with_unit = |v: f64| format!("{} {}", format_number(v), m.unit);
    let mut goals = Vec::new();
    if let Some(goal) = m.goal {
        goals.push(format!("{} {}", m.better.comparator(), with_unit(goal)));
    }
    if let Some(note) = &m.goal_note {
        goals.push(note.clone());
    }
    let has_goal = !goals.is_empty();
    let status = if m.is_pending() {
        "pending"
    } else if !has_goal {
        "-"
    } else if m.missed_goals().is_empty() {
        "met"
    } else {
        "MISSED"
    };
    let (value, spread) = if m.is_pending() {
        ("pending".to_owned(), "-".to_owned())
    } else {
        (
            with_unit(m.value),
            format!(
                "[{}, {}] n={}",
                format_number(m.spread[0]),
                format_number(m.spread[1]),
                m.samples
            ),
        )
    };
    [
        m.name.clone(),
        m.better.as_str().to_owned(),
        value,
        spread,
        m.spec_target.map_or_else(|| "-".to_owned(), with_unit),
        status.to_owned(),
        if has_goal {
            goals.join("; ")
        } else {
            "-".into()
        },
    ]
}

fn peer_row(m: &Metric, peer: &str, value: f64) -> Row {
    let comparison = match (m.ratio(value), m.advantage(value)) {
        _ if m.is_pending() => "ours pending".to_owned(),
        (Some(ratio), Some(adv)) => format!(
            "ours/peer {ratio:.2}: {}",
            describe_advantage(&m.unit, m.better, adv, "peer")
        ),
        _ => "ours/peer undefined (a value is zero)".to_owned(),
    };
    Row::Peer {
        name: format!("  vs {peer}"),
        value: format!("{} {}", format_number(value), m.unit),
        comparison,
    }
}

/// "we are 2.04x faster than peer", "we are 1.30x slower than peer", ...
fn describe_advantage(unit: &str, better: Better, advantage: f64, peer: &str) -> String {
    if (advantage - 1.0).abs() < 0.005 {
        return format!("we are on par with {peer}");
    }
    let (factor, win) = if advantage >= 1.0 {
        (advantage, true)
    } else {
        (1.0 / advantage, false)
    };
    let word = advantage_word(unit, better, win);
    format!("we are {factor:.2}x {word} than {peer}")
}

/// "faster"/"slower" for times; "smaller"/"larger" for lower-is-better
/// sizes; "higher"/"lower" for higher-is-better figures.
fn advantage_word(unit: &str, better: Better, win: bool) -> &'static str {
    let is_time = matches!(unit, "ns" | "us" | "ms" | "s");
    match (better, is_time, win) {
        (Better::Lower, true, true) => "faster",
        (Better::Lower, true, false) => "slower",
        (Better::Lower, false, true) => "smaller",
        (Better::Lower, false, false) => "larger",
        (Better::Higher, _, true) => "higher",
        (Better::Higher, _, false) => "lower",
    }
}

/// Three significant figures or so, with k/M/G for large numbers.
fn format_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(median: f64, min: f64, max: f64) -> Summary {
        Summary {
            median,
            min,
            max,
            samples: 7,
        }
    }

    fn example() -> Metric {
        Metric::new(
            "sched.yield_1000tasks_ns",
            "ns",
            Better::Lower,
            &summary(30.1, 28.0, 33.2),
        )
        .unwrap()
        .goal(40.0)
        .param("tasks", 1000)
        .param("yields_per_task", 10000)
        .peer("tokio_current_thread", 59.0)
        .unwrap()
    }

    #[test]
    fn report_json_has_the_perf_md_shape() {
        let report = Report {
            schema: 1,
            tiffany_version: "0.1.0".into(),
            quick: false,
            machine: Machine {
                cpus: 2,
                os: "linux".into(),
                rustc: "1.95.0".into(),
            },
            results: vec![example()],
        };
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        let expected = serde_json::json!({
            "schema": 1,
            "tiffany_version": "0.1.0",
            "quick": false,
            "machine": { "cpus": 2, "os": "linux", "rustc": "1.95.0" },
            "results": [{
                "name": "sched.yield_1000tasks_ns",
                "value": 30.1,
                "unit": "ns",
                "better": "lower",
                "spread": [28.0, 33.2],
                "samples": 7,
                "spec_target": null,
                "goal": 40.0,
                "params": { "tasks": 1000, "yields_per_task": 10000 },
                "peers": { "tokio_current_thread": 59.0 }
            }]
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn report_json_round_trips() {
        let metric = example()
            .spec_target(10.0)
            .ratio_goal("tokio_current_thread", 2.0);
        let report = Report::new(true, vec![metric]);
        let back: Report = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(back, report);
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(
            json["results"][0]["goal_note"],
            ">= 2x faster than tokio_current_thread"
        );
    }

    #[test]
    fn report_machine_rustc_is_a_version() {
        let rustc = Machine::current().rustc;
        assert!(rustc == "unknown" || rustc.starts_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn metric_rejects_non_finite_numbers() {
        assert!(Metric::new("s.x_ns", "ns", Better::Lower, &summary(f64::NAN, 1.0, 2.0)).is_err());
        assert!(example().peer("p", f64::INFINITY).is_err());
    }

    #[test]
    fn ratio_is_ours_over_peer_and_advantage_follows_direction() {
        let lower = example(); // 30.1 ns vs 59.0 ns
        let ratio = lower.ratio(59.0).unwrap();
        assert!((ratio - 30.1 / 59.0).abs() < 1e-12);
        assert!(lower.advantage(59.0).unwrap() > 1.0, "lower value wins");
        assert!(lower.advantage(20.0).unwrap() < 1.0, "higher value loses");

        let higher =
            Metric::new("s.rate_1/s", "1/s", Better::Higher, &summary(3e7, 2e7, 4e7)).unwrap();
        assert!((higher.ratio(1e7).unwrap() - 3.0).abs() < 1e-12);
        assert!((higher.advantage(1e7).unwrap() - 3.0).abs() < 1e-12);
        assert!(higher.advantage(6e7).unwrap() < 1.0);
        assert_eq!(lower.ratio(0.0), None);
    }

    #[test]
    fn goals_are_checked_in_the_metric_direction() {
        assert!(example().missed_goals().is_empty());
        assert_eq!(example().goal(20.0).missed_goals().len(), 1);
        let rate = Metric::new("s.rate_1/s", "1/s", Better::Higher, &summary(3e7, 2e7, 4e7))
            .unwrap()
            .goal(2.5e7);
        assert!(rate.missed_goals().is_empty());
        assert_eq!(rate.goal(5e7).missed_goals().len(), 1);
    }

    #[test]
    fn ratio_goals_need_the_factor_and_the_peer() {
        // 59.0 / 30.1 = 1.96x faster: misses 2x, meets 1.5x.
        assert_eq!(
            example()
                .ratio_goal("tokio_current_thread", 2.0)
                .missed_goals()
                .len(),
            1
        );
        assert!(
            example()
                .ratio_goal("tokio_current_thread", 1.5)
                .missed_goals()
                .is_empty()
        );
        assert_eq!(example().ratio_goal("absent", 1.0).missed_goals().len(), 1);
    }

    #[test]
    fn table_names_peers_direction_and_missed_goals() {
        let machine = Machine::current();
        let table = render_suite(
            "sched",
            true,
            &machine,
            &[example().ratio_goal("tokio_current_thread", 2.0)],
        );
        assert!(table.contains("vs tokio_current_thread"), "{table}");
        assert!(table.contains("we are 1.96x faster than peer"), "{table}");
        assert!(table.contains("ours/peer 0.51"), "{table}");
        assert!(table.contains("MISSED"), "{table}");
        assert!(table.contains("missed goals (1):"), "{table}");
        let met = render_suite("sched", false, &machine, &[example()]);
        assert!(met.ends_with("all goals met\n"), "{met}");
    }

    #[test]
    fn ratio_bound_allows_up_to_times_the_peer() {
        let latency = |v: f64| {
            Metric::new("s.append_us", "us", Better::Lower, &summary(v, v, v))
                .unwrap()
                .peer("raw", 100.0)
                .unwrap()
                .ratio_bound("raw", 1.15)
        };
        assert!(latency(114.0).missed_goals().is_empty());
        let missed = latency(130.0).missed_goals();
        assert_eq!(missed.len(), 1);
        assert!(missed[0].contains("<= 1.15x raw"), "{missed:?}");
        assert!(missed[0].contains("1.30x slower"), "{missed:?}");
    }

    #[test]
    fn pending_metrics_show_peers_miss_nothing_and_stay_out_of_json() {
        let pending = Metric::pending("wal.x_us", "us", Better::Lower, "feature `wal` is off")
            .goal(10.0)
            .peer("okaywal", 50.0)
            .unwrap();
        assert!(pending.is_pending());
        assert!(pending.missed_goals().is_empty());
        let table = render_suite(
            "wal",
            true,
            &Machine::current(),
            &[example(), pending.clone()],
        );
        assert!(table.contains("pending"), "{table}");
        assert!(table.contains("vs okaywal"), "{table}");
        assert!(table.contains("ours pending"), "{table}");
        assert!(table.contains("all measured goals met"), "{table}");
        assert!(
            table.contains("  - wal.x_us: feature `wal` is off"),
            "{table}"
        );
        let report = Report::new(true, vec![example(), pending]);
        assert_eq!(report.results, vec![example()]);
        assert!(!report.to_json().unwrap().contains("wal.x_us"));
    }

    #[test]
    fn numbers_are_formatted_compactly() {
        assert_eq!(format_number(30.123), "30.1");
        assert_eq!(format_number(2.71), "2.71");
        assert_eq!(format_number(171.4), "171");
        assert_eq!(format_number(25_000_000.0), "25.00M");
        assert_eq!(format_number(12_345.0), "12.3k");
    }
}
