//! `fs.read`, `fs.write`, `fs.list`: files inside the agent's workspace.
//!
//! Invariants:
//! - Every path is resolved by
//!   [`Workspace::resolve`](crate::workspace::Workspace::resolve) first
//!   (relative, no `..`, no symlink leading outside; see that module), and
//!   files are opened with `O_NOFOLLOW | O_NONBLOCK`; only regular files are
//!   read or written. A rejected path creates nothing:
//!   `fs.write` makes parent directories only after its path resolved.
//! - All three are idempotent: `fs.write` replaces the whole file, so
//!   running it twice leaves the same bytes. Writes are not fsynced; after
//!   a crash the journal replays an idempotent write rather than trusting
//!   the disk.
//! - Sizes are capped: `fs.read` returns at most `read-cap` bytes (a cut is
//!   marked), `fs.write` refuses content over `write-cap`, `fs.list`
//!   reports at most `list-cap` entries (a cut is marked). Text is decoded
//!   as UTF-8, invalid bytes replaced.

use std::fmt::Write as _;
use std::io;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::fs::OpenOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BuiltinConfig, BuiltinSkill, push_truncation_marker};
use crate::workspace::{OPEN_FLAGS, Workspace};
use crate::{SkillCtx, SkillError, SkillOutput};

/// Maps an I/O error on the path the agent named.
fn io_error(path: &str) -> impl FnOnce(io::Error) -> SkillError + '_ {
    move |e| SkillError::Failed(format!("`{path}`: {e}"))
}

/// Refuses anything but a regular file (a directory, a FIFO, a device).
async fn regular_file(file: &tokio::fs::File, path: &str) -> Result<std::fs::Metadata, SkillError> {
    let metadata = file.metadata().await.map_err(io_error(path))?;
    if metadata.is_file() {
        Ok(metadata)
    } else {
        Err(SkillError::Failed(format!(
            "`{path}` is not a regular file"
        )))
    }
}

/// The schema of a single `path` argument.
fn path_property(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// Arguments naming one path.
#[derive(Deserialize)]
pub(super) struct PathArgs {
    #[serde(default)]
    path: String,
}

/// `fs.read`.
pub(super) struct Read {
    cap: usize,
}

impl Read {
    pub(super) fn new(config: &BuiltinConfig) -> Read {
        Read {
            cap: config.read_cap,
        }
    }
}

impl BuiltinSkill for Read {
    const NAME: &'static str = "fs.read";
    const IDEMPOTENT: bool = true;
    type Args = PathArgs;

    fn description(&self) -> String {
        format!(
            "Reads a text file in the workspace (at most {} bytes are returned).",
            self.cap
        )
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"path": path_property("File path, relative to the workspace.")},
            "required": ["path"],
            "additionalProperties": false
        })
    }

    async fn run(&self, ctx: SkillCtx<'_>, args: PathArgs) -> Result<SkillOutput, SkillError> {
        let path = Workspace::open(ctx.workspace)
            .await?
            .resolve(&args.path)
            .await?;
        let failed = || io_error(&args.path);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(&path)
            .await
            .map_err(failed())?;
        let metadata = regular_file(&file, &args.path).await?;
        let mut bytes = Vec::new();
        file.take(self.cap as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(failed())?;
        let cut = bytes.len() > self.cap;
        bytes.truncate(self.cap);
        let mut content = String::from_utf8_lossy(&bytes).into_owned();
        if cut {
            let omitted = metadata.len().saturating_sub(self.cap as u64);
            push_truncation_marker(&mut content, omitted, "bytes");
        }
        Ok(SkillOutput { content })
    }
}

/// `fs.write`.
pub(super) struct Write {
    cap: usize,
}

impl Write {
    pub(super) fn new(config: &BuiltinConfig) -> Write {
        Write {
            cap: config.write_cap,
        }
    }
}

/// Arguments of `fs.write`.
#[derive(Deserialize)]
pub(super) struct WriteArgs {
    path: String,
    content: String,
}

impl BuiltinSkill for Write {
    const NAME: &'static str = "fs.write";
    const IDEMPOTENT: bool = true;
    type Args = WriteArgs;

    fn description(&self) -> String {
        format!(
            "Writes a whole text file in the workspace (at most {} bytes), \
             replacing it if it exists and creating missing parent directories.",
            self.cap
        )
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": path_property("File path, relative to the workspace."),
                "content": {"type": "string", "description": "The file's new content."}
            },
            "required": ["path", "content"],
            "additionalProperties": false
        })
    }

    async fn run(&self, ctx: SkillCtx<'_>, args: WriteArgs) -> Result<SkillOutput, SkillError> {
        if args.content.len() > self.cap {
            return Err(SkillError::InvalidArguments {
                skill: Self::NAME.to_owned(),
                reason: format!(
                    "`content`: {} bytes, more than the limit of {}",
                    args.content.len(),
                    self.cap
                ),
            });
        }
        let path = Workspace::open(ctx.workspace)
            .await?
            .resolve(&args.path)
            .await?;
        let failed = || io_error(&args.path);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(failed())?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(OPEN_FLAGS)
            .open(&path)
            .await
            .map_err(failed())?;
        regular_file(&file, &args.path).await?;
        file.write_all(args.content.as_bytes())
            .await
            .map_err(failed())?;
        // tokio's File finishes writes in the background: flush to report
        // their errors here.
        file.flush().await.map_err(failed())?;
        Ok(SkillOutput {
            content: format!("wrote {} bytes to `{}`", args.content.len(), args.path),
        })
    }
}

/// `fs.list`.
pub(super) struct List {
    cap: usize,
}

impl List {
    pub(super) fn new(config: &BuiltinConfig) -> List {
        List {
            cap: config.list_cap,
        }
    }
}

impl BuiltinSkill for List {
    const NAME: &'static str = "fs.list";
    const IDEMPOTENT: bool = true;
    type Args = PathArgs;

    fn description(&self) -> String {
        format!(
            "Lists a directory of the workspace, one entry per line sorted by name: \
             type (file, dir, symlink, other), size in bytes, name (at most {} entries).",
            self.cap
        )
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"path": path_property(
                "Directory path, relative to the workspace; empty or omitted for the workspace itself."
            )},
            "additionalProperties": false
        })
    }

    async fn run(&self, ctx: SkillCtx<'_>, args: PathArgs) -> Result<SkillOutput, SkillError> {
        let path = Workspace::open(ctx.workspace)
            .await?
            .resolve(&args.path)
            .await?;
        let failed = || io_error(&args.path);
        let mut dir = tokio::fs::read_dir(&path).await.map_err(failed())?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(failed())? {
            // DirEntry::metadata does not follow symlinks.
            let metadata = entry.metadata().await.map_err(failed())?;
            let kind = if metadata.is_file() {
                "file"
            } else if metadata.is_dir() {
                "dir"
            } else if metadata.is_symlink() {
                "symlink"
            } else {
                "other"
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            entries.push((name, kind, metadata.len()));
        }
        entries.sort_unstable();
        let total = entries.len();
        let mut content = String::new();
        for (name, kind, size) in entries.iter().take(self.cap) {
            let _ = writeln!(content, "{kind} {size} {name}");
        }
        if total > self.cap {
            push_truncation_marker(&mut content, (total - self.cap) as u64, "entries");
        }
        if content.is_empty() {
            content.push_str("(empty directory)");
        }
        Ok(SkillOutput { content })
    }
}
