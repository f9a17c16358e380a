//! `tiffany run` streams its task's activity (as JSON lines with --json)
//! and fails when the task fails; `tiffany tasks replay` re-asks the
//! planner and agrees with the journal of a demo run, and `tiffany agents
//! list` sums its tasks per agent.

// Waiting for the child process is what this test does.
#![allow(clippy::disallowed_methods)]

mod common;

use serde_json::Value;

use common::tiffany;

#[test]
fn run_streams_activity_as_json_lines_and_reports_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data = data.to_str().unwrap();
    let out = tiffany(&["run", "echo hello", "--json", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"ReceivedInstruction"), "{kinds:?}");
    assert!(
        kinds.contains(&"SkillStart") && kinds.contains(&"SkillComplete"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"Completed"), "{kinds:?}");
    let complete = events
        .iter()
        .find(|e| e["event"] == "SkillComplete")
        .unwrap();
    assert_eq!(complete["ok"], true);

    // A program off the allowlist: the planner sees the error, answers,
    // and the task completes; the journal shows the refused call.
    let out = tiffany(&["run", "rm -rf x", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    let out = tiffany(&["tasks", "show", "2", "--json", "--data-dir", data]);
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let conversation = task["conversation"].as_array().unwrap();
    assert!(
        conversation.iter().any(|m| m["content"]
            .as_str()
            .unwrap_or("")
            .contains("`rm` is not allowed")),
        "{conversation:?}"
    );
}

#[test]
fn tasks_replay_agrees_with_a_demo_journal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data = data.to_str().unwrap();
    let out = tiffany(&["demo", "--agents", "3", "--quiet", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    let out = tiffany(&["tasks", "replay", "--json", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit["tasks"], 3);
    assert_eq!(audit["steps"], 21);
    assert_eq!(audit["divergences"].as_array().unwrap().len(), 0);

    // Per-agent totals are the sums of their tasks.
    let out = tiffany(&["agents", "list", "--json", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    let agents: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let out = tiffany(&["tasks", "list", "--json", "--data-dir", data]);
    let tasks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agents.len(), 3);
    for agent in &agents {
        let own: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["agent"] == agent["name"])
            .collect();
        assert_eq!(agent["tasks"], own.len());
        assert_eq!(agent["unfinished"], 0);
        let tokens: u64 = own.iter().map(|t| t["tokens"].as_u64().unwrap()).sum();
        let total =
            agent["prompt_tokens"].as_u64().unwrap() + agent["completion_tokens"].as_u64().unwrap();
        assert!(tokens > 0);
        assert_eq!(total, tokens);
    }
}
