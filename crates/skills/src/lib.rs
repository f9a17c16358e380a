//! Tiffany's skills: what an agent can do to the world.
//!
//! # Overview
//! - [`Skill`] is the trait: a name, a description, the JSON schema of its
//!   arguments, whether it is idempotent, and an async `execute`.
//! - [`Registry`] holds a node's skills; an agent sees only the skills it
//!   was granted ([`Grants`]). [`Registry::call`] is the runtime's one entry
//!   point: grant check, JSON parsing, schema validation, timeout, execution.
//! - [`Registry::tool_specs`] lists the granted skills as [`SkillSpec`]s,
//!   which the agent turns into LLM tool specs.
//! - [`BuiltinConfig`] configures the built-ins ([`builtins`]): `shell`,
//!   `fs.read`, `fs.write`, `fs.list`, `wait` and `noop`.
//!
//! # Guarantees
//! - A skill runs only with arguments that passed its schema. Schemas are
//!   checked by a small validator for a subset of JSON Schema; a schema that
//!   uses anything else is refused at registration (see
//!   [`Registry::register`]), so no constraint is silently ignored.
//! - Every path a built-in touches is confined to the agent's workspace:
//!   relative, no `..`, and no symlink (at any depth, the final component
//!   included) that resolves outside; a refused path creates nothing. The
//!   check is made before use, not enforced by the kernel (see the
//!   `workspace` module).
//! - `shell` runs an allowlisted program, without a shell, in the
//!   workspace, with a cleared environment, in its own process group that
//!   is killed when the call ends or times out. It is not a sandbox: an
//!   allowed program may touch any path it is given.
//! - Every output is capped, and a cut is marked.
//! - Nothing here is durable: whether a call ran is the journal's business;
//!   [`Skill::idempotent`] tells it whether a call may be re-run.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use tiffany_skills::{BuiltinConfig, Grants, Registry, SkillCtx, SkillError};
//!
//! let workspace = std::env::temp_dir();
//! let registry = Registry::with_builtins(BuiltinConfig::default());
//! let grants = Grants::only(["fs.*"]);
//! assert_eq!(registry.tool_specs(&grants).len(), 3);
//!
//! let rt = tiffany_sched::Runtime::builder().workers(1).build().unwrap();
//! let result = rt.block_on(async move {
//!     let ctx = SkillCtx {
//!         workspace: &workspace,
//!         agent: "doc",
//!         timeout: Duration::from_secs(5),
//!         resumed_after: Duration::ZERO,
//!     };
//!     registry.call(&grants, "fs.read", r#"{"path": "../secret"}"#, ctx).await
//! });
//! assert_eq!(result, Err(SkillError::OutsideWorkspace("../secret".into())));
//! ```
//!
//! # Features
//! None. Unix only (process groups, `O_NOFOLLOW`). Every async function here
//! runs inside a `tiffany-sched` task.

mod builtins;
mod registry;
mod schema;
mod workspace;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

pub use builtins::{BuiltinConfig, DEFAULT_SHELL_ALLOW, builtins};
pub use registry::{Grants, RegisterError, Registry, SkillSpec};

/// A boxed, sendable future, the return type of [`Skill::execute`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a skill gets besides its arguments.
#[derive(Clone, Copy, Debug)]
pub struct SkillCtx<'a> {
    /// The agent's workspace: every path a skill touches must resolve inside
    /// it.
    pub workspace: &'a Path,
    /// The agent's name, for logs.
    pub agent: &'a str,
    /// How long the call may take at most.
    pub timeout: Duration,
    /// For a skill that [`Skill::waits`]: how long ago this call first
    /// started, when a restart resumed it (zero on its first run), so that
    /// it waits only for what is left. Zero for every other skill.
    pub resumed_after: Duration,
}

/// A successful result: the observation the planner sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillOutput {
    /// What the skill reports (a command's output, a file's text, ...).
    pub content: String,
}

/// Why a skill call failed. Every variant becomes an error observation for
/// the planner; none of them stops the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkillError {
    /// No skill of that name is registered, or the agent was not granted it.
    #[error("unknown skill `{0}`")]
    Unknown(String),
    /// The arguments do not match the skill's schema.
    #[error("invalid arguments for `{skill}`: {reason}")]
    InvalidArguments {
        /// The skill.
        skill: String,
        /// What is wrong, naming the offending field.
        reason: String,
    },
    /// A path leaves the agent's workspace.
    #[error("path `{0}` is outside the workspace")]
    OutsideWorkspace(String),
    /// The program is not on the shell skill's allowlist.
    #[error("program `{0}` is not allowed")]
    NotAllowed(String),
    /// The call took longer than its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The skill ran and failed (I/O error, non-zero exit, ...).
    #[error("{0}")]
    Failed(String),
}

/// A skill.
pub trait Skill: Send + Sync {
    /// The name the planner calls it by (`"shell"`, `"fs.read"`).
    fn name(&self) -> &str;

    /// What it does, for the planner.
    fn description(&self) -> &str;

    /// JSON schema of the arguments object.
    fn schema(&self) -> &serde_json::Value;

    /// Whether running it twice has the same effect as once. A
    /// non-idempotent skill in flight at a crash is reported, not re-run.
    fn idempotent(&self) -> bool;

    /// Whether this call, with these (validated) arguments, is idempotent.
    /// Defaults to [`Skill::idempotent`]; a skill whose calls differ (a
    /// read-only command against a commit) may decide per call.
    fn idempotent_call(&self, args: &serde_json::Value) -> bool {
        let _ = args;
        self.idempotent()
    }

    /// Whether the call's whole effect is letting time pass (`wait`): the
    /// runtime then journals when the call first started, and a call that
    /// a restart resumes is told how long ago that was
    /// ([`SkillCtx::resumed_after`]), so a wait survives a crash with its
    /// deadline. Defaults to false.
    fn waits(&self) -> bool {
        false
    }

    /// Runs the skill with arguments already validated against
    /// [`Skill::schema`].
    fn execute<'a>(
        &'a self,
        ctx: SkillCtx<'a>,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<SkillOutput, SkillError>>;
}
