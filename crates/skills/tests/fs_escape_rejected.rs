//! Every way out of the workspace is refused with `OutsideWorkspace`, and a
//! refused write leaves nothing outside.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::Harness;
use serde_json::json;
use tiffany_skills::SkillError;

fn outside_err(path: &str) -> SkillError {
    SkillError::OutsideWorkspace(path.into())
}

/// Every entry under `dir`, recursively, as paths relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path.strip_prefix(dir).unwrap().display().to_string();
        if path.is_dir() && !path.is_symlink() {
            found.extend(tree(&path).into_iter().map(|p| format!("{relative}/{p}")));
        }
        found.push(relative);
    }
    found.sort();
    found
}

/// A workspace holding a symlinked file and a symlinked directory that
/// lead outside, a dangling symlink to an outside path, and an outside
/// directory holding only `secret.txt`.
fn trapped() -> Harness {
    let h = Harness::new();
    #[allow(clippy::disallowed_methods, reason = "test fixture")]
    std::fs::write(h.outside().join("secret.txt"), "secret").unwrap();
    symlink(
        h.outside().join("secret.txt"),
        h.workspace().join("file-link"),
    )
    .unwrap();
    symlink(h.outside(), h.workspace().join("dir-link")).unwrap();
    symlink(h.outside().join("new.txt"), h.workspace().join("dangling")).unwrap();
    std::fs::create_dir(h.workspace().join("a")).unwrap();
    h
}

const ESCAPES: [&str; 8] = [
    "../x",
    "a/../../x",
    "a/../x",
    "file-link",
    "dir-link/secret.txt",
    "dir-link/new/deeper.txt",
    "dangling",
    "/etc/passwd",
];

#[test]
fn fs_escapes_are_rejected_for_read_write_and_list() {
    let h = trapped();
    let absolute = h.outside().join("secret.txt").display().to_string();
    for path in ESCAPES.iter().copied().chain([absolute.as_str()]) {
        assert_eq!(
            h.err("fs.read", json!({"path": path})),
            outside_err(path),
            "read {path}"
        );
        assert_eq!(
            h.err("fs.write", json!({"path": path, "content": "pwned"})),
            outside_err(path),
            "write {path}"
        );
    }
    for path in ["..", "dir-link", "dir-link/", "a/../..", "/"] {
        assert_eq!(
            h.err("fs.list", json!({"path": path})),
            outside_err(path),
            "list {path}"
        );
    }
}

#[test]
fn fs_failed_writes_leave_nothing_outside() {
    let h = trapped();
    for path in ESCAPES {
        let _ = h.err("fs.write", json!({"path": path, "content": "pwned"}));
    }
    assert_eq!(tree(h.outside()), ["secret.txt"]);
    #[allow(clippy::disallowed_methods, reason = "test assertion")]
    let secret = std::fs::read_to_string(h.outside().join("secret.txt")).unwrap();
    assert_eq!(secret, "secret");
    assert!(!h.outside().parent().unwrap().join("x").exists());
}

#[test]
fn fs_symlinks_inside_the_workspace_still_work() {
    let h = trapped();
    symlink("a", h.workspace().join("a-link")).unwrap();
    h.ok(
        "fs.write",
        json!({"path": "a-link/through.txt", "content": "ok"}),
    );
    assert_eq!(h.ok("fs.read", json!({"path": "a/through.txt"})), "ok");
    assert_eq!(
        h.ok("fs.list", json!({"path": "a-link"})),
        "file 2 through.txt\n"
    );
}
