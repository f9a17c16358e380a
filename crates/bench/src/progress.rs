//! The progress indicator a suite shows on stderr while it runs.
//!
//! Invariants:
//! - it writes to stderr only, so stdout carries nothing but the tables;
//! - on a terminal it redraws one status line in place and erases it when
//!   the suite ends, leaving no trace above the table; anywhere else it
//!   prints one plain `running <workload>` line per workload, never control
//!   characters;
//! - a failed write to stderr is ignored: progress must never fail a run.

use std::io::{IsTerminal as _, Write as _};

use crate::sample::Round;

/// Progress reporting for one suite.
#[derive(Debug)]
pub(crate) struct Progress {
    tty: bool,
    workload: String,
    ticks: usize,
}

impl Progress {
    /// A progress indicator that redraws in place when stderr is a terminal.
    pub(crate) fn stderr() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            workload: String::new(),
            ticks: 0,
        }
    }

    /// Announces the start of `workload` (a metric name or a group of them).
    pub(crate) fn workload(&mut self, workload: &str) {
        self.workload = workload.to_owned();
        if !self.tty {
            let _ = writeln!(std::io::stderr(), "running {workload}");
        }
    }

    /// Notes that `contender` is about to run `round` of `rounds` samples.
    pub(crate) fn run(&mut self, round: Round, rounds: usize, contender: &str) {
        if !self.tty {
            return;
        }
        const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
        let spin = SPINNER[self.ticks % SPINNER.len()];
        self.ticks += 1;
        let phase = match round {
            Round::Warmup(_) => "warm-up".to_owned(),
            Round::Sample(n) => format!("sample {n}/{rounds}"),
        };
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2K{spin} {}: {phase}, {contender}",
            self.workload
        );
    }
}

impl Drop for Progress {
    /// Erases the status line (terminal only).
    fn drop(&mut self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
