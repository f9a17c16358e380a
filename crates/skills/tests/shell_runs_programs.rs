//! `shell` runs a real program and reports its exit status and output; a
//! non-zero exit is a failure that still carries the output.

mod common;

use common::{Harness, failed_text};
use serde_json::json;

#[test]
fn shell_captures_stdout_and_exit_code() {
    let h = Harness::new();
    let out = h.ok(
        "shell",
        json!({"program": "echo", "args": ["hello", "world $HOME *"]}),
    );
    // No shell: the `$HOME` and `*` reach echo untouched.
    assert_eq!(out, "exit code 0\n--- stdout ---\nhello world $HOME *\n");
}

#[test]
fn shell_feeds_stdin() {
    let h = Harness::new();
    let out = h.ok("shell", json!({"program": "sort", "stdin": "b\na\nc\n"}));
    assert_eq!(out, "exit code 0\n--- stdout ---\na\nb\nc\n");
}

#[test]
fn shell_non_zero_exit_fails_with_the_output() {
    let h = Harness::new();
    let text = failed_text(h.err("shell", json!({"program": "ls", "args": ["no-such-file"]})));
    assert!(text.starts_with("exit code 2\n--- stderr ---\n"), "{text}");
    assert!(text.contains("no-such-file"), "{text}");
    assert_eq!(
        failed_text(h.err("shell", json!({"program": "false"}))),
        "exit code 1\n"
    );
}

#[test]
fn shell_runs_in_the_workspace_or_cwd_inside_it() {
    let h = Harness::new();
    let root = h.workspace().canonicalize().unwrap();
    let out = h.ok("shell", json!({"program": "pwd"}));
    assert_eq!(
        out,
        format!("exit code 0\n--- stdout ---\n{}\n", root.display())
    );
    h.ok(
        "shell",
        json!({"program": "mkdir", "args": ["-p", "sub/dir"]}),
    );
    let out = h.ok("shell", json!({"program": "pwd", "cwd": "sub/dir"}));
    assert!(out.ends_with("sub/dir\n"), "{out}");
    assert!(root.join("sub/dir").is_dir());
}
