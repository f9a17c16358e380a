//! The demo's planner: a rule-based, offline stand-in for an LLM that turns
//! a release-maintenance instruction into real `shell` and `fs` calls and
//! checks what they report.
//!
//! It is a pure function of the conversation: the next step follows from
//! what it asked last and what that returned, so a resumed task gets the
//! same plan in any process. Each step checks the observations of the one
//! before and answers with a failure as soon as one is wrong. The `git
//! commit` is the one step that is not idempotent: when a crash interrupts
//! it, the planner is told its effect is unknown, checks the repository,
//! and commits again only if the commit did not land.

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

/// The stages of the release, named by what the planner asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Write the notes and the manifest, `git init`.
    Prepare,
    /// `sha256sum` both files, list the directory.
    Checksum,
    /// Write `SHA256SUMS`.
    RecordSums,
    /// `git add`.
    Add,
    /// `git commit` (not idempotent).
    Commit,
    /// `sha256sum -c` and `git status --porcelain`.
    Verify,
}

impl Stage {
    /// The stage whose first call is `call`, if any.
    fn of(call: &ToolCall) -> Option<Stage> {
        let args: serde_json::Value = serde_json::from_str(&call.arguments).ok()?;
        let first_arg = args["args"][0].as_str().unwrap_or("");
        Some(
            match (call.name.as_str(), args["path"].as_str(), first_arg) {
                ("fs.write", Some("release/NOTES.md"), _) => Stage::Prepare,
                ("shell", _, "release/NOTES.md") => Stage::Checksum,
                ("fs.write", Some("release/SHA256SUMS"), _) => Stage::RecordSums,
                ("shell", _, "add") => Stage::Add,
                ("shell", _, "-c") if args["program"] == "git" => Stage::Commit,
                ("shell", _, "-c") => Stage::Verify,
                _ => return None,
            },
        )
    }
}

fn plan(request: &LlmRequest) -> Result<Message, LlmError> {
    let step = request.step();
    let last = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant);
    let done = last.and_then(|m| m.tool_calls.first()).and_then(Stage::of);
    let seen = observations(request);
    let interrupted = |o: &&&str| o.contains("it is not idempotent");
    // An interrupted commit is checked by the next step, not taken as a
    // failure.
    let fatal =
        |o: &&&str| o.starts_with("error") && !(done == Some(Stage::Commit) && interrupted(o));
    if let Some(failed) = seen.iter().find(fatal) {
        return Ok(Message::assistant(format!(
            "failed at step {step}: {failed}"
        )));
    }
    let release = release_of(request);
    let next = match done {
        None => Stage::Prepare,
        Some(Stage::Prepare) => Stage::Checksum,
        Some(Stage::Checksum) => Stage::RecordSums,
        Some(Stage::RecordSums) => Stage::Add,
        Some(Stage::Add) => Stage::Commit,
        Some(Stage::Commit) => Stage::Verify,
        Some(Stage::Verify) => {
            let verified: usize = seen.iter().map(|o| o.matches(": OK").count()).sum();
            let clean = seen.iter().any(|o| o.trim() == "exit code 0");
            let staged = seen.iter().any(|o| o.contains("\nA  release/"));
            let commits = request.messages.iter().flat_map(|m| &m.tool_calls);
            let attempts = commits
                .filter(|c| Stage::of(c) == Some(Stage::Commit))
                .count();
            if verified == 2 && staged && attempts == 1 {
                // The interrupted commit did not land: commit once more.
                Stage::Commit
            } else {
                let answer = if verified == 2 && clean {
                    format!("released {release}: committed and verified 2 checksums")
                } else {
                    format!("failed: verification reported {seen:?}")
                };
                return Ok(Message::assistant(answer));
            }
        }
    };
    let calls = match next {
        Stage::Prepare => {
            let notes = format!("# Release {release}\n\nMaintenance release.\n");
            let manifest = format!("release={release}\nartifacts=2\n");
            vec![
                call(
                    step,
                    0,
                    "fs.write",
                    json!({"path": "release/NOTES.md", "content": notes}),
                ),
                call(
                    step,
                    1,
                    "fs.write",
                    json!({"path": "release/MANIFEST", "content": manifest}),
                ),
                shell(step, 2, "git", &["init", "-q", "."], true),
            ]
        }
        Stage::Checksum => vec![
            shell(
                step,
                0,
                "sha256sum",
                &["release/NOTES.md", "release/MANIFEST"],
                true,
            ),
            call(step, 1, "fs.list", json!({"path": "release"})),
        ],
        Stage::RecordSums => {
            let Some(sums) = seen.iter().find_map(|o| checksum_lines(o)) else {
                let answer = format!("failed: unexpected checksum output {seen:?}");
                return Ok(Message::assistant(answer));
            };
            let arguments = json!({"path": "release/SHA256SUMS", "content": sums});
            vec![call(step, 0, "fs.write", arguments)]
        }
        // The calls of one step run in parallel: `git add` gets a step of
        // its own, after the last file is written.
        Stage::Add => vec![shell(step, 0, "git", &["add", "release"], true)],
        Stage::Commit => {
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
            vec![shell(step, 0, "git", &args, false)]
        }
        Stage::Verify => vec![
            shell(step, 0, "sha256sum", &["-c", "release/SHA256SUMS"], true),
            shell(step, 1, "git", &["status", "--porcelain"], true),
        ],
    };
    Ok(Message::tool_calls(calls))
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

    fn conversation(messages: Vec<Message>) -> LlmRequest {
        let mut all = vec![Message::user(instruction(1))];
        all.extend(messages);
        LlmRequest {
            messages: all,
            ..LlmRequest::default()
        }
    }

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
        let request = conversation(vec![]);
        assert_eq!(release_of(&request), "1");
    }

    #[test]
    fn an_error_observation_ends_the_task_with_a_failure() {
        let request = conversation(vec![
            Message::tool_calls(vec![shell(0, 0, "git", &["init"], true)]),
            Message::tool_result("call_0_0", "error: program `git` is not allowed"),
        ]);
        let answer = plan(&request).unwrap();
        assert!(answer.tool_calls.is_empty());
        assert!(
            answer.content.starts_with("failed at step 1"),
            "{}",
            answer.content
        );
    }

    #[test]
    fn an_interrupted_commit_that_did_not_land_is_committed_again_once() {
        let commit = plan(&conversation(vec![
            Message::tool_calls(vec![shell(3, 0, "git", &["add", "release"], true)]),
            Message::tool_result("call_3_0", "exit code 0\n"),
        ]))
        .unwrap();
        assert_eq!(Stage::of(&commit.tool_calls[0]), Some(Stage::Commit));
        let interrupted = "error: the node stopped while `shell` was running; it is not idempotent";
        let verify_messages = vec![
            commit.clone(),
            Message::tool_result("call_4_0", interrupted),
        ];
        let verify = plan(&conversation(verify_messages.clone())).unwrap();
        assert_eq!(Stage::of(&verify.tool_calls[0]), Some(Stage::Verify));
        let mut after = verify_messages;
        after.extend([
            verify,
            Message::tool_result(
                "call_5_0",
                "exit code 0\n--- stdout ---\nrelease/NOTES.md: OK\nrelease/MANIFEST: OK\n",
            ),
            Message::tool_result(
                "call_5_1",
                "exit code 0\n--- stdout ---\nA  release/MANIFEST\n",
            ),
        ]);
        let again = plan(&conversation(after.clone())).unwrap();
        assert_eq!(Stage::of(&again.tool_calls[0]), Some(Stage::Commit));
        // A second failed verification after the retry is a failure.
        after.extend([again, Message::tool_result("call_6_0", "exit code 0\n")]);
        let verify = plan(&conversation(after.clone())).unwrap();
        after.extend([
            verify,
            Message::tool_result(
                "call_7_0",
                "exit code 0\n--- stdout ---\nrelease/NOTES.md: OK\nrelease/MANIFEST: OK\n",
            ),
            Message::tool_result(
                "call_7_1",
                "exit code 0\n--- stdout ---\nA  release/MANIFEST\n",
            ),
        ]);
        let answer = plan(&conversation(after)).unwrap();
        assert!(
            answer.content.starts_with("failed: verification"),
            "{}",
            answer.content
        );
    }
}
