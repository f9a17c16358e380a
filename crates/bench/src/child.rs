//! Measurements that need a fresh process, such as resident-memory growth.
//!
//! The harness re-executes its own binary (`std::env::current_exe()`) as
//! `<exe> __bench-child <name> [args...]`; the binary hands `name` and `args`
//! to [`run_child`] and prints the JSON value it returns as one line on
//! stdout.
//!
//! A child can also be a helper that runs beside a measurement, such as
//! the mock LLM server of the `agent` suite ([`start_child`]): it prints one
//! JSON line when it is ready, serves until its stdin closes, then prints
//! its closing JSON line and exits.
//!
//! Invariants:
//! - a child measures exactly one run and exits: nothing allocated by an
//!   earlier run (allocator caches, runtime threads) can hide in its figure;
//! - the child's stdout holds JSON lines only (one for a measurement; the
//!   ready line and the closing line for a helper); its stderr is captured
//!   and quoted in the error when the child fails;
//! - a helper child never outlives its [`RunningChild`]: dropping one that
//!   was not finished kills it.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, ChildStdout, Command, Stdio};

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
        Some(("agent", entry)) => crate::agent::run_child(entry, args),
        Some(("boot", entry)) => crate::boot::run_child(entry, args),
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
    last_json_line(name, &String::from_utf8_lossy(&output.stdout), &stderr)
}

/// The last non-empty line of a child's `stdout`, parsed as JSON.
fn last_json_line(name: &str, stdout: &str, stderr: &str) -> Result<serde_json::Value> {
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

/// A helper child started by [`start_child`], running until
/// [`RunningChild::finish`] (or killed when dropped).
pub(crate) struct RunningChild {
    name: String,
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The JSON line the child printed when it was ready.
    pub(crate) ready: serde_json::Value,
}

/// Starts `<exe> __bench-child <name> [args...]` with its stdin open and
/// returns once it has printed its ready line.
pub(crate) fn start_child(name: &str, args: &[String]) -> Result<RunningChild> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut child = Command::new(&exe)
        .arg(CHILD_SUBCOMMAND)
        .arg(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} {CHILD_SUBCOMMAND}", exe.display()))?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut running = RunningChild {
        name: name.to_owned(),
        child,
        stdout: BufReader::new(stdout),
        ready: serde_json::Value::Null,
    };
    let mut line = String::new();
    running.stdout.read_line(&mut line)?;
    running.ready = match serde_json::from_str(&line) {
        Ok(ready) => ready,
        Err(_) => bail!(
            "helper child {name} did not get ready: {}",
            running.finish().err().map_or(line, |e| format!("{e:#}"))
        ),
    };
    Ok(running)
}

impl RunningChild {
    /// Closes the child's stdin (its signal to stop), waits for it to exit
    /// and returns the last JSON line it printed.
    // Blocking on purpose: the harness waits between samples, not in a task.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn finish(mut self) -> Result<serde_json::Value> {
        drop(self.child.stdin.take());
        let mut stdout = String::new();
        self.stdout.read_to_string(&mut stdout)?;
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut stderr)?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "helper child {} failed ({status}): {}",
                self.name,
                stderr.trim()
            );
        }
        last_json_line(&self.name, &stdout, &stderr)
    }
}

impl Drop for RunningChild {
    // Blocking on purpose: reaps the child we started, by its own handle.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a helper child: blocks until the parent closes our stdin.
// Blocking on purpose: the helper's main thread has nothing else to do.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wait_for_stdin_eof() -> Result<()> {
    let mut sink = Vec::new();
    std::io::stdin()
        .read_to_end(&mut sink)
        .context("cannot read stdin")?;
    Ok(())
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
