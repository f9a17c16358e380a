//! `shell` starts only allowlisted programs, by bare name.

mod common;

use common::{Harness, failed_text};
use serde_json::json;
use tiffany_skills::{BuiltinConfig, SkillError};

#[test]
fn shell_refuses_programs_off_the_allowlist() {
    let h = Harness::new();
    for program in ["rm", "sh", "bash", "env", "python3"] {
        assert_eq!(
            h.err("shell", json!({"program": program, "args": ["-c", "true"]})),
            SkillError::NotAllowed(program.into())
        );
    }
}

#[test]
fn shell_refuses_paths_even_to_allowed_programs() {
    let h = Harness::new();
    for program in ["/bin/echo", "./echo", "../bin/echo"] {
        assert_eq!(
            h.err("shell", json!({"program": program})),
            SkillError::NotAllowed(program.into())
        );
    }
}

#[test]
fn shell_allowed_but_missing_program_fails_clearly() {
    let h = Harness::with_config(BuiltinConfig {
        shell_allow: vec!["no-such-program-xyz".into()],
        ..BuiltinConfig::default()
    });
    let text = failed_text(h.err("shell", json!({"program": "no-such-program-xyz"})));
    assert!(text.contains("not found in PATH"), "{text}");
}
