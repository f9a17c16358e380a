//! `fs.write`, `fs.read` and `fs.list` round trip inside the workspace,
//! within their size caps.

mod common;

use common::{Harness, failed_text};
use serde_json::json;
use tiffany_skills::{BuiltinConfig, SkillError};

#[test]
fn fs_write_read_list_round_trip() {
    let h = Harness::new();
    let out = h.ok(
        "fs.write",
        json!({"path": "notes/day/one.txt", "content": "héllo\n"}),
    );
    assert_eq!(out, "wrote 7 bytes to `notes/day/one.txt`");
    assert_eq!(
        h.ok("fs.read", json!({"path": "notes/day/one.txt"})),
        "héllo\n"
    );
    // Whole-file writes: writing again replaces, so a replay is harmless.
    h.ok(
        "fs.write",
        json!({"path": "notes/day/one.txt", "content": "hi"}),
    );
    h.ok(
        "fs.write",
        json!({"path": "notes/day/one.txt", "content": "hi"}),
    );
    assert_eq!(
        h.ok("fs.read", json!({"path": "./notes/day/one.txt"})),
        "hi"
    );

    h.ok("fs.write", json!({"path": "b.txt", "content": "12345"}));
    h.ok("fs.write", json!({"path": "a.txt", "content": ""}));
    std::os::unix::fs::symlink("b.txt", h.workspace().join("c-link")).unwrap();
    let listing = h.ok("fs.list", json!({}));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines[..3],
        ["file 0 a.txt", "file 5 b.txt", "symlink 5 c-link"]
    );
    assert!(
        lines[3].starts_with("dir ") && lines[3].ends_with(" notes"),
        "{listing}"
    );
    assert_eq!(
        h.ok("fs.list", json!({"path": "notes/day"})),
        "file 2 one.txt\n"
    );
    // An inside symlink may be followed.
    assert_eq!(h.ok("fs.read", json!({"path": "c-link"})), "12345");
}

#[test]
fn fs_errors_name_the_path() {
    let h = Harness::new();
    h.ok("fs.write", json!({"path": "dir/f", "content": "x"}));
    let text = failed_text(h.err("fs.read", json!({"path": "missing.txt"})));
    assert!(text.starts_with("`missing.txt`: "), "{text}");
    assert_eq!(
        failed_text(h.err("fs.read", json!({"path": "dir"}))),
        "`dir` is not a regular file"
    );
    let text = failed_text(h.err("fs.list", json!({"path": "dir/f"})));
    assert!(text.starts_with("`dir/f`: "), "{text}");
    let text = failed_text(h.err("fs.write", json!({"path": "dir/f/g", "content": "x"})));
    assert!(text.starts_with("`dir/f/g`: "), "{text}");
}

#[test]
fn fs_caps_are_enforced_and_marked() {
    let h = Harness::with_config(BuiltinConfig {
        read_cap: 4,
        write_cap: 10,
        list_cap: 2,
        ..BuiltinConfig::default()
    });
    h.ok("fs.write", json!({"path": "f", "content": "0123456789"}));
    let err = h.err("fs.write", json!({"path": "g", "content": "0123456789a"}));
    assert!(
        matches!(&err, SkillError::InvalidArguments { reason, .. }
            if reason == "`content`: 11 bytes, more than the limit of 10"),
        "{err:?}"
    );
    assert!(!h.workspace().join("g").exists());
    assert_eq!(
        h.ok("fs.read", json!({"path": "f"})),
        "0123\n[... truncated: 6 more bytes not shown ...]\n"
    );
    h.ok("fs.write", json!({"path": "h", "content": ""}));
    h.ok("fs.write", json!({"path": "i", "content": ""}));
    assert_eq!(
        h.ok("fs.list", json!({"path": ""})),
        "file 10 f\nfile 0 h\n[... truncated: 1 more entries not shown ...]\n"
    );
}
