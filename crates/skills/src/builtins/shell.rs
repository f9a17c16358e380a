//! `shell`: runs one allowed program as a child process.
//!
//! Invariants:
//! - No shell interprets anything: `program` and `args` go to `execve` as
//!   given. `program` is a bare name on the allowlist (a name with `/` is
//!   refused), resolved to an executable file in the configured `PATH`.
//! - The working directory is the workspace, or `cwd` resolved inside it
//!   by the confinement rules of [`crate::workspace`].
//! - The environment is cleared, then holds only `PATH` (configured),
//!   `HOME` (the workspace) and `LANG` (configured): no secret of the node
//!   reaches the child.
//! - The child leads its own process group. The group is killed
//!   (`SIGKILL`) when the child exits (so background processes it left do
//!   not outlive the call) and when the call's future is dropped, which is
//!   how the registry's timeout ends it. A process that leaves the group
//!   (`setsid`) escapes this and holds the call open until the timeout.
//! - stdout and stderr are drained to the end (a child never blocks on a
//!   full pipe) but at most `shell-output-cap` bytes of them are kept, split
//!   between the two; a cut is marked.
//! - Exit 0 is a success; any other end is [`SkillError::Failed`] carrying
//!   the same report, so the planner sees the output either way.
//! - Not idempotent unless the call says so (`"idempotent": true`, for
//!   read-only commands): a command in flight at a crash is reported, not
//!   re-run.
//!
//! Not a sandbox: an allowed program may read or write any path it is
//! given (`cat /etc/passwd`). Confinement of programs needs OS isolation
//! (namespaces, landlock), which this skill does not set up.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use rustix::process::{Pid, Signal, kill_process_group};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{BuiltinConfig, BuiltinSkill, push_truncation_marker};
use crate::workspace::Workspace;
use crate::{SkillCtx, SkillError, SkillOutput};

/// The `shell` skill.
pub(super) struct Shell {
    allow: Vec<String>,
    path: String,
    lang: String,
    output_cap: usize,
}

impl Shell {
    pub(super) fn new(config: &BuiltinConfig) -> Shell {
        Shell {
            allow: config.shell_allow.clone(),
            path: config.shell_path.clone(),
            lang: config.shell_lang.clone(),
            output_cap: config.shell_output_cap,
        }
    }

    /// The executable for `program`, if it is allowed and found.
    async fn resolve_program(&self, program: &str) -> Result<PathBuf, SkillError> {
        if program.contains('/') || !self.allow.iter().any(|allowed| allowed == program) {
            return Err(SkillError::NotAllowed(program.to_owned()));
        }
        for dir in self.path.split(':').filter(|dir| dir.starts_with('/')) {
            let candidate = PathBuf::from(dir).join(program);
            if let Ok(metadata) = tokio::fs::metadata(&candidate).await {
                if metadata.is_file() && metadata.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
            }
        }
        Err(SkillError::Failed(format!(
            "program `{program}` not found in PATH `{}`",
            self.path
        )))
    }
}

/// Arguments of `shell`.
#[derive(Deserialize)]
pub(super) struct ShellArgs {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    cwd: String,
    stdin: Option<String>,
}

impl BuiltinSkill for Shell {
    const NAME: &'static str = "shell";
    const IDEMPOTENT: bool = false;
    type Args = ShellArgs;

    fn description(&self) -> String {
        format!(
            "Runs a program with arguments (no shell: no pipes, globs or variables) \
             in the workspace and returns its exit status and output. \
             Allowed programs: {}.",
            self.allow.join(", ")
        )
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "program": {"type": "string", "description": "Name of an allowed program, e.g. `git`."},
                "args": {"type": "array", "items": {"type": "string"}, "description": "Arguments, one per element."},
                "cwd": {"type": "string", "description": "Working directory relative to the workspace (default: the workspace)."},
                "stdin": {"type": "string", "description": "Text to feed on standard input (default: none)."},
                "idempotent": {"type": "boolean", "description": "Set when running the command twice has the same effect as once (a read-only command, `git init`): after a crash it is run again instead of being reported as interrupted (default: false)."}
            },
            "required": ["program"],
            "additionalProperties": false
        })
    }

    fn idempotent_call(&self, args: &Value) -> bool {
        args.get("idempotent") == Some(&Value::Bool(true))
    }

    async fn run(&self, ctx: SkillCtx<'_>, args: ShellArgs) -> Result<SkillOutput, SkillError> {
        let program = self.resolve_program(&args.program).await?;
        let workspace = Workspace::open(ctx.workspace).await?;
        let cwd = workspace.resolve(&args.cwd).await?;
        if !tokio::fs::metadata(&cwd).await.is_ok_and(|m| m.is_dir()) {
            return Err(SkillError::Failed(format!(
                "cwd `{}` is not a directory",
                args.cwd
            )));
        }
        let mut child = Command::new(&program)
            .args(&args.args)
            .current_dir(&cwd)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", workspace.root())
            .env("LANG", &self.lang)
            .stdin(if args.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| SkillError::Failed(format!("cannot start `{}`: {e}", args.program)))?;
        let mut group = ProcessGroup(child.id().and_then(|id| Pid::from_raw(id.try_into().ok()?)));
        let (stdin_pipe, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let feed = async {
            if let (Some(mut pipe), Some(input)) = (stdin_pipe, &args.stdin) {
                // A child that exits without reading its input is not an
                // error of the call: its exit status says what happened.
                let _ = pipe.write_all(input.as_bytes()).await;
            }
        };
        let exit = async {
            let status = child.wait().await;
            group.kill();
            status
        };
        let (_, stdout, stderr, status) = tokio::join!(
            feed,
            drain(stdout, self.output_cap),
            drain(stderr, self.output_cap),
            exit
        );
        let status = status
            .map_err(|e| SkillError::Failed(format!("waiting for `{}`: {e}", args.program)))?;
        let content = report(status, stdout, stderr, self.output_cap);
        if status.success() {
            Ok(SkillOutput { content })
        } else {
            Err(SkillError::Failed(content))
        }
    }
}

/// The child's process group until it is killed; killed on drop.
///
/// After a normal exit the group is killed right after its leader is
/// reaped. If no other member remains the group id is free again by then,
/// but a new process could only take it if PIDs wrapped around in that
/// instant; ESRCH is the expected outcome.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(leader) = self.0.take() {
            let _ = kill_process_group(leader, Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What was read from one pipe: its first bytes, and how many there were.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Reads `pipe` to the end, keeping its first `cap` bytes. A read error
/// ends the capture with what was read.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, cap: usize) -> Captured {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return captured;
    };
    let mut buffer = [0u8; 8192];
    while let Ok(read @ 1..) = pipe.read(&mut buffer).await {
        let chunk = &buffer[..read];
        let room = cap.saturating_sub(captured.kept.len()).min(read);
        captured.kept.extend_from_slice(&chunk[..room]);
        captured.total += read as u64;
    }
    captured
}

/// The report the planner sees: the exit status, then each non-empty
/// stream, together at most `cap` bytes of output. Each stream gets half
/// of `cap`, plus what the other does not use.
fn report(status: ExitStatus, stdout: Captured, stderr: Captured, cap: usize) -> String {
    let mut report = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}\n"),
        (None, Some(signal)) => format!("killed by signal {signal}\n"),
        (None, None) => format!("exit status {status}\n"),
    };
    let stdout_share = stdout
        .kept
        .len()
        .min(cap.saturating_sub(stderr.kept.len().min(cap / 2)));
    let stderr_share = stderr.kept.len().min(cap - stdout_share);
    for (name, stream, share) in [
        ("stdout", stdout, stdout_share),
        ("stderr", stderr, stderr_share),
    ] {
        if stream.total == 0 {
            continue;
        }
        let shown = stream.kept.get(..share).unwrap_or_default();
        let _ = writeln!(report, "--- {name} ---");
        report.push_str(&String::from_utf8_lossy(shown));
        if stream.total > share as u64 {
            push_truncation_marker(&mut report, stream.total - share as u64, "bytes");
        }
    }
    report
}
