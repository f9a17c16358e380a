//! Tiffany's skills: what an agent can do to the world.
//!
//! # Overview
//! - [`Skill`] is the trait: a name, a description, the JSON schema of its
//!   arguments, whether it is idempotent, and an async `execute`.
//! - [`Registry`] holds a node's skills; an agent sees only the skills it
//!   was granted.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

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

    /// Runs the skill with arguments already validated against
    /// [`Skill::schema`].
    fn execute<'a>(
        &'a self,
        ctx: SkillCtx<'a>,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<SkillOutput, SkillError>>;
}
