//! The `tiffany` binary's exit codes: 0 on success, 1 when a command fails
//! (with the error chain on stderr), 2 on a usage error.

// Waiting for a child process is what these tests do.
#![allow(clippy::disallowed_methods)]

mod common;
use common::tiffany;

#[test]
fn cli_version_exits_0() {
    let out = tiffany(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("tiffany {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn cli_unknown_suite_exits_2_and_lists_known_suites() {
    let out = tiffany(&["perf-test", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nosuch") && stderr.contains("sched"),
        "{stderr}"
    );
}

#[test]
fn cli_failure_exits_1_with_the_error_chain() {
    let out = tiffany(&[
        "perf-test",
        "sched",
        "--json",
        "/nonexistent-dir/report.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot create the JSON report"),
        "{stderr}"
    );
    assert!(stderr.contains("caused by:"), "{stderr}");
}
