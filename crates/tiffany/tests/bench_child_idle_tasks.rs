//! The hidden `__bench-child sched.idle_tasks` measurement prints one JSON
//! line with the resident bytes per idle task, for ours and every peer.

// Waiting for a child process is what this test does.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

#[test]
fn bench_child_idle_tasks_prints_one_json_line() {
    for contender in ["tiffany", "tokio_current_thread", "async_executor_local"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tiffany"))
            .args(["__bench-child", "sched.idle_tasks", contender, "2000"])
            .output()
            .expect("run the tiffany binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{contender}: {stderr}");
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        assert_eq!(stdout.lines().count(), 1, "{contender}: {stdout}");
        let bytes: f64 = stdout
            .trim()
            .strip_prefix("{\"bytes_per_task\":")
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{contender}: unexpected output {stdout}"));
        assert!(bytes > 0.0, "{contender}: {bytes}");
    }
}
