//! Measurements that need a fresh process, such as resident-memory growth.
//!
//! The harness re-executes its own binary (`std::env::current_exe()`) as
//! `<exe> __bench-child <name> [args...]`; the binary hands `name` and `args`
//! to [`run_child`] and prints the JSON value it returns as one line on
//! stdout.
//!
//! Invariants:
//! - a child measures exactly one run and exits: nothing allocated by an
//!   earlier run (allocator caches, runtime threads) can hide in its figure;
//! - the child's stdout holds that one JSON line and nothing else; its stderr
//!   is captured and quoted in the error when the child fails.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The hidden subcommand of the `tiffany` binary that runs one child
/// measurement.
pub const CHILD_SUBCOMMAND: &str = "__bench-child";

/// Runs the child measurement `name` in this process and returns its result.
/// Called by the binary's hidden [`CHILD_SUBCOMMAND`]; `name` is
/// `<suite>.<measurement>`.
pub fn run_child(name: &str, args: &[String]) -> Result<serde_json::Value> {
    match name.split_once('.') {
        Some(("sched", entry)) => crate::sched::run_child(entry, args),
        _ => bail!("unknown child measurement `{name}`"),
    }
}

/// Runs the child measurement `name` in a fresh copy of this executable and
/// returns the JSON value it printed.
// Blocking on purpose: the harness waits for the child on its own thread,
// between samples, never inside a task.
#[allow(clippy::disallowed_methods)]
pub(crate) fn measure_in_child(name: &str, args: &[String]) -> Result<serde_json::Value> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let output = Command::new(&exe)
        .arg(CHILD_SUBCOMMAND)
        .arg(name)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {} {CHILD_SUBCOMMAND}", exe.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "child measurement {name} {args:?} failed ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| {
            format!(
                "child measurement {name} printed nothing; stderr: {}",
                stderr.trim()
            )
        })?;
    serde_json::from_str(line)
        .with_context(|| format!("child measurement {name} printed no JSON: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_unknown_measurement_is_an_error() {
        let err = run_child("nosuch.thing", &[]).unwrap_err();
        assert!(err.to_string().contains("nosuch.thing"), "{err}");
    }
}
