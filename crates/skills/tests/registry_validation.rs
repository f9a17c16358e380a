//! Arguments are validated against the skill's schema before it runs, and
//! the error names the offending field.

mod common;

use common::Harness;
use serde_json::json;
use tiffany_skills::SkillError;

fn reason(error: SkillError) -> String {
    match error {
        SkillError::InvalidArguments { reason, .. } => reason,
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
}

#[test]
fn validation_errors_name_the_field() {
    let h = Harness::new();
    let cases = [
        (
            "shell",
            json!({"args": ["x"]}),
            "`program`: required field is missing",
        ),
        (
            "shell",
            json!({"program": "echo", "args": ["a", 2]}),
            "`args[1]`: expected a string, got an integer",
        ),
        (
            "shell",
            json!({"program": "echo", "shell": true}),
            "`shell`: unknown field",
        ),
        (
            "wait",
            json!({"ms": 60_001}),
            "`ms`: must be at most 60000, got 60001",
        ),
        (
            "wait",
            json!({"ms": -1}),
            "`ms`: must be at least 0, got -1",
        ),
        (
            "wait",
            json!({"ms": "5"}),
            "`ms`: expected an integer, got a string",
        ),
        (
            "fs.write",
            json!({"path": "a"}),
            "`content`: required field is missing",
        ),
        (
            "fs.read",
            json!([]),
            "`arguments`: expected an object, got an array",
        ),
    ];
    for (skill, arguments, expected) in cases {
        let reason = reason(h.err(skill, arguments.clone()));
        assert!(
            reason.starts_with(expected),
            "{skill} {arguments}: {reason}"
        );
    }
}

#[test]
fn validation_failure_runs_nothing() {
    let h = Harness::new();
    let err = h.err("fs.write", json!({"path": "made.txt", "content": 7}));
    assert_eq!(reason(err), "`content`: expected a string, got an integer");
    assert!(!h.workspace().join("made.txt").exists());
}
