//! `shell`'s `cwd` follows the workspace confinement rules.

mod common;

use common::{Harness, failed_text};
use serde_json::json;
use tiffany_skills::SkillError;

#[test]
fn shell_cwd_outside_the_workspace_is_rejected() {
    let h = Harness::new();
    let outside = h.outside().to_str().unwrap().to_owned();
    std::os::unix::fs::symlink(h.outside(), h.workspace().join("out")).unwrap();
    for cwd in ["..", "../", "a/../..", outside.as_str(), "out", "out/sub"] {
        assert_eq!(
            h.err("shell", json!({"program": "pwd", "cwd": cwd})),
            SkillError::OutsideWorkspace(cwd.into()),
            "{cwd}"
        );
    }
}

#[test]
fn shell_cwd_must_be_an_existing_directory() {
    let h = Harness::new();
    let text = failed_text(h.err("shell", json!({"program": "pwd", "cwd": "missing"})));
    assert_eq!(text, "cwd `missing` is not a directory");
}
