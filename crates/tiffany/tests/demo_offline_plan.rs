//! `tiffany demo` with its built-in offline planner (real `git`,
//! `sha256sum` and file calls; `scripts/install-deps` installs them): every
//! task completes with a verified, committed release.

// Waiting for the child process is what this test does.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use serde_json::Value;

use common::tiffany;

#[test]
fn demo_offline_plan_completes_every_release() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_tiffany"));
    // The built-in planner: no LLM settings from the environment.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TIFFANY_")) {
        demo.env_remove(name);
    }
    let out = demo
        .args(["demo", "--agents", "4", "--quiet", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run tiffany demo");
    assert!(out.status.success(), "{out:?}");

    let out = tiffany(&[
        "tasks",
        "list",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let tasks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tasks.len(), 4);
    for task in &tasks {
        assert_eq!(task["status"], "completed", "{task:#}");
        let outcome = task["outcome"].as_str().unwrap();
        assert!(
            outcome.starts_with("released ")
                && outcome.ends_with("committed and verified 2 checksums"),
            "{task:#}"
        );
    }
}
