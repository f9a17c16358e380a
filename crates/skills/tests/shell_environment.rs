//! `shell`'s children see a cleared environment: PATH, HOME (the
//! workspace) and LANG only, never the node's secrets.

mod common;

use common::Harness;
use serde_json::json;

#[test]
fn shell_environment_is_cleared() {
    // SAFETY: set before any runtime or other thread of this test process
    // starts (nextest runs each test in its own process, and this file has
    // one test), so nothing reads the environment concurrently.
    unsafe { std::env::set_var("TIFFANY_TEST_API_KEY", "s3cret-token") };
    let h = Harness::allowing(&["env"]);
    let out = h.ok("shell", json!({"program": "env"}));
    assert!(!out.contains("s3cret-token"), "{out}");
    let root = h.workspace().canonicalize().unwrap();
    let mut vars: Vec<&str> = out.lines().skip(2).collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        [
            format!("HOME={}", root.display()),
            "LANG=C.UTF-8".to_owned(),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        ]
    );
}
