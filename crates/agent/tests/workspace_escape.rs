//! Workspace escapes attempted through the agent: a planner asking the
//! `fs.*` skills (and `shell`'s `cwd`) for `../x`, absolute paths and
//! symlinks that lead out of the workspace gets error observations, the
//! task carries on, and nothing outside the workspace is read or touched.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tiffany_agent::{AgentOptions, TaskStatus};
use tiffany_llm::{Role, Scripted, Step};

use common::{WAIT, open};

/// Every file under `dir` (not following symlinks) with its bytes.
#[allow(clippy::disallowed_methods, reason = "test code, not a task")]
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_symlink() {
                files.insert(
                    name,
                    std::fs::read_link(&path)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                );
            } else {
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "test code sets up files, not a task"
)]
fn workspace_escapes_through_the_agent_are_error_observations_and_touch_nothing_outside() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET-OUTSIDE").unwrap();
    let abs_target = outside.join("abs.txt").display().to_string();

    let calls: Vec<(&str, Value)> = vec![
        ("fs.read", json!({"path": "../x"})),
        ("fs.read", json!({"path": "/etc/passwd"})),
        ("fs.read", json!({"path": "link/secret.txt"})),
        ("fs.read", json!({"path": "file_link"})),
        ("fs.read", json!({"path": "sub/../../x"})),
        (
            "fs.write",
            json!({"path": "../planted.txt", "content": "x"}),
        ),
        (
            "fs.write",
            json!({"path": "link/planted.txt", "content": "x"}),
        ),
        (
            "fs.write",
            json!({"path": "link/new_dir/planted.txt", "content": "x"}),
        ),
        (
            "fs.write",
            json!({"path": "file_link", "content": "overwritten"}),
        ),
        ("fs.write", json!({"path": abs_target, "content": "x"})),
        ("fs.list", json!({"path": "link"})),
        ("fs.list", json!({"path": ".."})),
        ("shell", json!({"program": "ls", "cwd": "link"})),
    ];
    // The path each call names, which its error must name.
    let named: Vec<String> = calls
        .iter()
        .map(|(_, args)| {
            args.get("path")
                .or_else(|| args.get("cwd"))
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        })
        .collect();
    let planner = Scripted::steps(vec![
        Step::ToolCalls(
            calls
                .iter()
                .map(|(name, args)| ((*name).to_owned(), args.clone()))
                .collect(),
        ),
        // The task carries on after the errors.
        Step::call("fs.write", json!({"path": "inside.txt", "content": "ok"})),
        Step::answer("gave up escaping"),
    ]);
    let node = open(&data, Arc::new(planner));
    let agent = node.create_agent(AgentOptions::new("escaper")).unwrap();
    let workspace = node.config().workspace_of("escaper");
    // `../x` from the workspace: a real file the agent must not read.
    std::fs::write(data.join("workspaces/x"), "SECRET-SIBLING").unwrap();
    std::os::unix::fs::symlink(&outside, workspace.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), workspace.join("file_link")).unwrap();
    let outside_before = tree(&outside);
    let workspaces_before = tree(&data.join("workspaces"));

    let task = node
        .submit(agent, "read and write outside your workspace")
        .unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    assert_eq!(state.outcome.as_deref(), Some("gave up escaping"));

    let results: BTreeMap<&str, &str> = state
        .conversation
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.as_deref().unwrap(), m.content.as_str()))
        .collect();
    assert_eq!(results.len(), calls.len() + 1, "{results:#?}");
    for (i, path) in named.iter().enumerate() {
        let id = format!("call_0_{i}");
        assert_eq!(
            results[id.as_str()],
            format!("error: path `{path}` is outside the workspace"),
            "call {i}: {:?}",
            calls[i]
        );
    }
    assert_eq!(
        results["call_1_0"], "wrote 2 bytes to `inside.txt`",
        "{results:#?}"
    );
    for content in results.values() {
        assert!(!content.contains("SECRET"), "{content}");
        assert!(!content.contains("root:"), "{content}");
    }

    // Nothing outside the workspace changed; inside, only the one file the
    // agent was allowed to write appeared.
    assert_eq!(tree(&outside), outside_before);
    let mut expected = workspaces_before;
    expected.insert("escaper/inside.txt".into(), b"ok".to_vec());
    assert_eq!(tree(&data.join("workspaces")), expected);
    node.shutdown().unwrap();
}
