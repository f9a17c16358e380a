//! The demo's planner: a rule-based, offline stand-in for an LLM that turns
//! a release-maintenance instruction into real `shell` and `fs` calls and
//! checks what they report.
//!
//! It is a pure function of the conversation (the step number and the
//! observations so far), so a resumed task gets the same plan in any
//! process. Each step checks the observations of the step before and
//! answers with a failure as soon as one is wrong.

use serde_json::json;
use tiffany_llm::{LlmError, LlmRequest, Message, Role, Scripted, ToolCall};

/// The instruction the demo gives agent `index`.
pub(crate) fn instruction(index: usize) -> String {
    format!(
        "Maintain release {index}: write the release notes and the build manifest, checksum them, \
         commit them to the workspace's git repository, and verify the checksums."
    )
}

/// The planner.
pub(crate) fn planner() -> Scripted {
    Scripted::from_fn(plan)
}

fn call(step: usize, i: usize, name: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        id: format!("call_{step}_{i}"),
        name: name.to_owned(),
        arguments: arguments.to_string(),
    }
}

/// A `shell` call; `idempotent` marks commands that are safe to run twice,
/// so a crash during them re-runs them instead of failing the step.
fn shell(step: usize, i: usize, program: &str, args: &[&str], idempotent: bool) -> ToolCall {
    let arguments = json!({ "program": program, "args": args, "idempotent": idempotent });
    call(step, i, "shell", arguments)
}

/// The tool results since the last assistant message.
fn observations(request: &LlmRequest) -> Vec<&str> {
    let last = request
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .unwrap_or(0);
    request.messages[last..]
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .collect()
}

fn release_of(request: &LlmRequest) -> String {
    let user = request
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
    user.split_whitespace()
        .nth(2)
        .unwrap_or("0")
        .trim_end_matches(':')
        .to_owned()
}

fn plan(request: &LlmRequest) -> Result<Message, LlmError> {
    let step = request.step();
    let seen = observations(request);
    // An interrupted commit is checked by the next step, not taken as a
    // failure.
    let fatal =
        |o: &&&str| o.starts_with("error") && !(step == 5 && o.contains("it is not idempotent"));
    if let Some(failed) = seen.iter().find(fatal) {
        return Ok(Message::assistant(format!(
            "failed at step {step}: {failed}"
        )));
    }
    let release = release_of(request);
    let notes = format!("# Release {release}\n\nMaintenance release.\n");
    let manifest = format!("release={release}\nartifacts=2\n");
    let calls = match step {
        0 => vec![
            call(
                0,
                0,
                "fs.write",
                json!({"path": "release/NOTES.md", "content": notes}),
            ),
            call(
                0,
                1,
                "fs.write",
                json!({"path": "release/MANIFEST", "content": manifest}),
            ),
            shell(0, 2, "git", &["init", "-q", "."], true),
        ],
        1 => vec![
            shell(
                1,
                0,
                "sha256sum",
                &["release/NOTES.md", "release/MANIFEST"],
                true,
            ),
            call(1, 1, "fs.list", json!({"path": "release"})),
        ],
        2 => {
            let sums = seen.iter().find_map(|o| checksum_lines(o));
            let Some(sums) = sums else {
                let answer = format!("failed: unexpected checksum output {seen:?}");
                return Ok(Message::assistant(answer));
            };
            let arguments = json!({"path": "release/SHA256SUMS", "content": sums});
            vec![call(2, 0, "fs.write", arguments)]
        }
        // The calls of one step run in parallel: `git add` gets a step of
        // its own, after the last file is written.
        3 => vec![shell(3, 0, "git", &["add", "release"], true)],
        4 => {
            let identity = [
                "-c",
                "user.name=tiffany",
                "-c",
                "user.email=agent@tiffany.invalid",
            ];
            let args: Vec<&str> = identity
                .into_iter()
                .chain(["commit", "-q", "-m", "release"])
                .collect();
            vec![shell(4, 0, "git", &args, false)]
        }
        // Verifies the checksums and that the commit took (also after a
        // crash interrupted it: its effect is unknown until checked).
        5 => vec![
            shell(5, 0, "sha256sum", &["-c", "release/SHA256SUMS"], true),
            shell(5, 1, "git", &["status", "--porcelain"], true),
        ],
        _ => {
            let verified: usize = seen.iter().map(|o| o.matches(": OK").count()).sum();
            let committed = seen.iter().any(|o| o.trim() == "exit code 0");
            let answer = if verified == 2 && committed {
                format!("released {release}: committed and verified 2 checksums")
            } else {
                format!("failed: verification reported {seen:?}")
            };
            return Ok(Message::assistant(answer));
        }
    };
    Ok(Message::tool_calls(calls))
}

/// The `sha256sum` lines of a `shell` observation, checked: two lines of a
/// 64-digit hash and a path.
fn checksum_lines(observation: &str) -> Option<String> {
    let lines: Vec<&str> = observation
        .lines()
        .filter(|l| {
            l.len() > 66
                && l.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit)
                && &l[64..66] == "  "
        })
        .collect();
    (lines.len() == 2).then(|| lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lines_accepts_only_two_well_formed_lines() {
        let h = "a".repeat(64);
        let out = format!("exit status 0\n{h}  release/NOTES.md\n{h}  release/MANIFEST\n");
        assert_eq!(
            checksum_lines(&out),
            Some(format!("{h}  release/NOTES.md\n{h}  release/MANIFEST\n"))
        );
        assert_eq!(checksum_lines(&format!("{h}  x\n")), None);
        assert_eq!(checksum_lines("zz  x\nyy  y\n"), None);
    }

    #[test]
    fn the_release_number_comes_from_the_instruction() {
        let request = LlmRequest {
            messages: vec![Message::user(instruction(42))],
            ..LlmRequest::default()
        };
        assert_eq!(release_of(&request), "42");
    }

    #[test]
    fn an_error_observation_ends_the_task_with_a_failure() {
        let request = LlmRequest {
            messages: vec![
                Message::user(instruction(1)),
                Message::tool_calls(vec![call(0, 0, "shell", json!({}))]),
                Message::tool_result("call_0_0", "error: program `git` is not allowed"),
            ],
            ..LlmRequest::default()
        };
        let answer = plan(&request).unwrap();
        assert!(answer.tool_calls.is_empty());
        assert!(
            answer.content.starts_with("failed at step 1"),
            "{}",
            answer.content
        );
    }
}
