//! A command that outlives its timeout is killed, with every process of its
//! group; background processes do not outlive a command that exits.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use serde_json::json;
use tiffany_skills::{Grants, SkillError};

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn is_dead(pid: u32) -> bool {
    #[allow(clippy::disallowed_methods, reason = "a test polling /proc")]
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

fn wait_until_dead(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "a test thread polling, not a task"
        )]
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn shell_timeout_kills_a_long_command_quickly() {
    let h = Harness::new();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let result = h.call_with(
        &Grants::All,
        "shell",
        r#"{"program": "sleep", "args": ["10"]}"#,
        timeout,
    );
    assert_eq!(result, Err(SkillError::Timeout(timeout)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn shell_timeout_kills_the_whole_process_group() {
    let h = Harness::allowing(&["sh"]);
    let script = "sleep 30 & echo $! > bg.pid; wait";
    let timeout = Duration::from_millis(300);
    let arguments = json!({"program": "sh", "args": ["-c", script]}).to_string();
    let result = h.call_with(&Grants::All, "shell", &arguments, timeout);
    assert_eq!(result, Err(SkillError::Timeout(timeout)));
    #[allow(clippy::disallowed_methods, reason = "a test reading its fixture")]
    let pid = std::fs::read_to_string(h.workspace().join("bg.pid")).unwrap();
    let pid: u32 = pid.trim().parse().unwrap();
    assert!(
        wait_until_dead(pid),
        "background sleep {pid} survived the timeout"
    );
}

#[test]
fn shell_background_processes_die_when_the_command_exits() {
    let h = Harness::allowing(&["sh"]);
    let started = Instant::now();
    // Without the group kill the background sleep would hold stdout open
    // and the call would last until its timeout.
    let out = h.ok(
        "shell",
        json!({"program": "sh", "args": ["-c", "sleep 30 & echo $!"]}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pid: u32 = out.lines().nth(2).unwrap().trim().parse().unwrap();
    assert!(
        wait_until_dead(pid),
        "background sleep {pid} survived its parent"
    );
}
