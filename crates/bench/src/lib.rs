//! The `tiffany perf-test` suites and the peers they are measured against.
//!
//! This crate owns the workload benchmarks described in `shared/PERF.md`
//! (micro-benchmarks of single functions are Criterion benches inside each
//! crate instead). It is `publish = false`: the peers it compares against
//! (tokio, async-executor, ...) are dependencies of this crate only, never of
//! a library crate.
//!
//! # Overview
//! - [`Suite`] names a suite (`sched`, `wal`, `agent`, `boot`); [`run`] runs some of them with
//!   [`Options`] and hands each suite's [`Metric`]s to a callback as soon as
//!   the suite ends, then returns the whole [`Report`].
//! - A [`Metric`] is one figure: the median of at least five samples taken
//!   after a warm-up, its `[min, max]` spread, its goals, and the same figure
//!   for each peer, measured in the same run, interleaved `A B A B` with ours
//!   so that a ratio survives machine noise. A metric whose side of ours is
//!   not built in yet is [`Metric::pending`]: the table shows its peers, the
//!   JSON report leaves it out.
//! - [`render_suite`] prints a suite's table for people; [`Report::to_json`]
//!   writes the machine-readable report whose shape PERF.md fixes.
//! - Measurements that need a fresh process (resident memory) re-execute
//!   the running binary as `tiffany __bench-child ...`, which calls
//!   [`run_child`].
//! - Disk suites take their directories from [`ScratchDir`], under
//!   `TIFFANY_BENCH_DIR` (default `./target/bench-tmp`).
//!
//! # Features
//! - `wal`: builds our side of the `wal` suite against `tiffany-wal`.
//!   Without it the suite measures its peers and baselines only and reports
//!   our metrics as pending.
//!
//! # Guarantees
//! A suite either returns every one of its metrics or an error; a missed goal
//! is reported in the metric and the table, never as an error.
//!
//! # Example
//! ```
//! use tiffany_bench::{Better, Machine, Metric, Summary, render_suite};
//!
//! let ours = Summary::of(&[30.0, 29.0, 31.0, 30.5, 29.5]).unwrap();
//! let metric = Metric::new("sched.yield_1000tasks_ns", "ns", Better::Lower, &ours)
//!     .unwrap()
//!     .goal(40.0)
//!     .peer("tokio_current_thread", 60.0)
//!     .unwrap();
//! assert_eq!(metric.advantage(60.0), Some(2.0));
//! let table = render_suite("sched", true, &Machine::current(), &[metric]);
//! assert!(table.ends_with("all goals met\n"));
//! ```

mod agent;
mod boot;
mod child;
mod measure;
mod os;
mod progress;
mod report;
mod sample;
mod sched;
mod scratch;
mod seeded;
mod wal;

use std::fmt;
use std::str::FromStr;

use anyhow::{Context as _, Result};

pub use child::{CHILD_SUBCOMMAND, run_child};
pub use report::{Better, Machine, Metric, RatioGoal, Report, SCHEMA, render_suite};
pub use sample::{MIN_SAMPLES, Summary};
pub use scratch::{BENCH_DIR_ENV, ScratchDir, bench_root};

/// A benchmark suite, named after the subsystem it exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// The task scheduler (`tiffany-sched`) against tokio and async-executor.
    Sched,
    /// The write-ahead log (`tiffany-wal`) against raw `fdatasync` loops,
    /// okaywal and SQLite, on the disk of the working directory.
    Wal,
    /// The agents' ReAct loop (`tiffany-agent`): one agent's cycle, buffered
    /// and durable, and 10,000 agents against an LLM over HTTP.
    Agent,
    /// A node's start: process exec to every unfinished task resumed.
    Boot,
}

impl Suite {
    /// Every known suite, in the order `tiffany perf-test` runs them.
    pub const ALL: &'static [Suite] = &[Suite::Sched, Suite::Wal, Suite::Agent, Suite::Boot];

    /// The suite's name on the command line and in metric names.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Sched => "sched",
            Suite::Wal => "wal",
            Suite::Agent => "agent",
            Suite::Boot => "boot",
        }
    }

    fn run(self, options: &Options) -> Result<Vec<Metric>> {
        let mut progress = progress::Progress::stderr();
        match self {
            Suite::Sched => sched::run(options.quick, &mut progress),
            Suite::Wal => wal::run(options.quick, &mut progress),
            Suite::Agent => agent::run(options.quick, &mut progress),
            Suite::Boot => boot::run(options.quick, &mut progress),
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = UnknownSuite;

    fn from_str(name: &str) -> Result<Self, UnknownSuite> {
        Suite::ALL
            .iter()
            .copied()
            .find(|s| s.name() == name)
            .ok_or_else(|| UnknownSuite {
                name: name.to_owned(),
            })
    }
}

/// A suite name that is not one of [`Suite::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSuite {
    name: String,
}

impl fmt::Display for UnknownSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Suite::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "unknown suite `{}` (known suites: {})",
            self.name,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownSuite {}

/// How to run the suites.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Small sizes that finish well under a minute per suite (CI smoke runs).
    /// Sample counts stay at [`MIN_SAMPLES`] or more.
    pub quick: bool,
}

/// Runs `suites` in order (all known suites when empty), calls `on_suite`
/// with each suite's metrics as soon as it ends, and returns the report of
/// them all. Fails with the first suite that cannot run.
pub fn run(
    suites: &[Suite],
    options: &Options,
    mut on_suite: impl FnMut(Suite, &[Metric]),
) -> Result<Report> {
    let suites = if suites.is_empty() {
        Suite::ALL
    } else {
        suites
    };
    let mut results = Vec::new();
    for &suite in suites {
        let metrics = suite
            .run(options)
            .with_context(|| format!("the `{suite}` suite could not run"))?;
        on_suite(suite, &metrics);
        results.extend(metrics);
    }
    Ok(Report::new(options.quick, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_parse_back() {
        for &suite in Suite::ALL {
            assert_eq!(suite.name().parse::<Suite>(), Ok(suite));
        }
    }

    #[test]
    fn suite_unknown_name_lists_the_known_ones() {
        let err = "nosuch".parse::<Suite>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`nosuch`"), "{msg}");
        assert!(
            msg.contains("known suites: sched, wal, agent, boot"),
            "{msg}"
        );
    }
}
