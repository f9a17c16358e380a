//! `shell` keeps at most `shell-output-cap` bytes of output, marks the cut,
//! and still drains the rest so the command completes.

mod common;

use common::Harness;
use serde_json::json;
use tiffany_skills::BuiltinConfig;

fn capped(cap: usize) -> Harness {
    let mut config = BuiltinConfig {
        shell_output_cap: cap,
        ..BuiltinConfig::default()
    };
    config
        .shell_allow
        .extend(["seq".to_owned(), "sh".to_owned()]);
    Harness::with_config(config)
}

#[test]
fn shell_output_is_capped_with_a_marker() {
    let h = capped(1000);
    // 588,895 bytes: far beyond the cap and any pipe buffer.
    let out = h.ok("shell", json!({"program": "seq", "args": ["1", "100000"]}));
    assert!(
        out.starts_with("exit code 0\n--- stdout ---\n1\n2\n3\n"),
        "{out}"
    );
    assert!(
        out.contains("[... truncated: 587895 more bytes not shown ...]"),
        "{out}"
    );
    assert!(out.len() < 1200, "{}", out.len());
}

#[test]
fn shell_output_cap_keeps_room_for_stderr() {
    let h = capped(1000);
    let script = "seq 1 100000; echo failure-detail >&2; exit 3";
    let text = match h.err("shell", json!({"program": "sh", "args": ["-c", script]})) {
        tiffany_skills::SkillError::Failed(text) => text,
        other => panic!("{other:?}"),
    };
    assert!(text.starts_with("exit code 3\n"), "{text}");
    assert!(text.ends_with("--- stderr ---\nfailure-detail\n"), "{text}");
    assert!(text.len() < 1200, "{}", text.len());
}
