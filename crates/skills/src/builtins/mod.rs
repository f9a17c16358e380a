//! The built-in skills and their configuration.
//!
//! Invariants:
//! - Each built-in implements [`BuiltinSkill`]: its arguments are a typed
//!   struct deserialized from the already validated JSON, so a skill never
//!   re-checks what its schema says, and the schema and the struct must
//!   agree (the tests call every skill through the registry).
//! - Every path a built-in touches goes through
//!   [`Workspace::resolve`](crate::workspace::Workspace::resolve).
//! - Every output that can grow with the world (a command's output, a
//!   file, a directory listing) is capped, and a cut is marked with
//!   [`push_truncation_marker`] so the planner knows it saw only part.

mod fs;
mod noop;
mod shell;
mod wait;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{BoxFuture, Skill, SkillCtx, SkillError, SkillOutput};

/// Configuration of the built-in skills. In a config file the fields are
/// kebab-case (`shell-allow = ["git", "ls"]`); missing fields take their
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct BuiltinConfig {
    /// Programs `shell` may start, by bare name, looked up in
    /// [`BuiltinConfig::shell_path`]. Default: [`DEFAULT_SHELL_ALLOW`].
    ///
    /// The allowlist picks the program, not what it does: a program that
    /// runs other programs (`sh`, `env`, `xargs`, `find -exec`, git aliases)
    /// widens it to everything, and no allowed program is confined to the
    /// workspace for the paths it is given. The default leaves out shells,
    /// `env`, `xargs`, `find` and the destructive `rm`, `mv`, `cp`.
    pub shell_allow: Vec<String>,
    /// `PATH` of `shell`'s children, and where allowed programs are looked
    /// up (relative entries are skipped). Default `/usr/local/bin:/usr/bin:/bin`.
    pub shell_path: String,
    /// `LANG` of `shell`'s children. Default `C.UTF-8`.
    pub shell_lang: String,
    /// Most bytes of a command's stdout and stderr together that `shell`
    /// reports; the rest is drained and dropped. Default 32 KiB.
    pub shell_output_cap: usize,
    /// Most bytes `fs.read` returns; a longer file is cut. Default 256 KiB.
    pub read_cap: usize,
    /// Most bytes `fs.write` accepts; more is refused. Default 1 MiB.
    pub write_cap: usize,
    /// Most entries `fs.list` reports. Default 1,000.
    pub list_cap: usize,
    /// Longest `wait`, in milliseconds. Default 60,000.
    pub wait_cap_ms: u64,
}

/// The default [`BuiltinConfig::shell_allow`]: read-only inspection, text
/// filters, `git`, and creating files and directories.
pub const DEFAULT_SHELL_ALLOW: &[&str] = &[
    "git",
    "ls",
    "cat",
    "echo",
    "printf",
    "wc",
    "grep",
    "sort",
    "uniq",
    "head",
    "tail",
    "cut",
    "tr",
    "diff",
    "sha256sum",
    "mkdir",
    "touch",
    "date",
    "pwd",
    "sleep",
    "true",
    "false",
];

impl Default for BuiltinConfig {
    fn default() -> BuiltinConfig {
        BuiltinConfig {
            shell_allow: DEFAULT_SHELL_ALLOW
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            shell_path: "/usr/local/bin:/usr/bin:/bin".into(),
            shell_lang: "C.UTF-8".into(),
            shell_output_cap: 32 * 1024,
            read_cap: 256 * 1024,
            write_cap: 1024 * 1024,
            list_cap: 1000,
            wait_cap_ms: 60_000,
        }
    }
}

/// The built-in skills, configured by `config`, for
/// [`Registry::register`](crate::Registry::register) (or use
/// [`Registry::with_builtins`](crate::Registry::with_builtins)).
pub fn builtins(config: &BuiltinConfig) -> Vec<Arc<dyn Skill>> {
    vec![
        boxed(shell::Shell::new(config)),
        boxed(fs::Read::new(config)),
        boxed(fs::Write::new(config)),
        boxed(fs::List::new(config)),
        boxed(wait::Wait::new(config)),
        boxed(noop::Noop),
    ]
}

/// A built-in skill, typed: [`Builtin`] turns it into a [`Skill`].
trait BuiltinSkill: Send + Sync + 'static {
    /// The skill's name.
    const NAME: &'static str;
    /// See [`Skill::idempotent`].
    const IDEMPOTENT: bool;
    /// See [`Skill::waits`].
    const WAITS: bool = false;
    /// The arguments, deserialized from the validated JSON.
    type Args: DeserializeOwned + Send;

    /// What it does, for the planner.
    fn description(&self) -> String;

    /// JSON schema of [`BuiltinSkill::Args`].
    fn schema(&self) -> serde_json::Value;

    /// See [`Skill::idempotent_call`].
    fn idempotent_call(&self, args: &serde_json::Value) -> bool {
        let _ = args;
        Self::IDEMPOTENT
    }

    /// Runs the skill.
    fn run(
        &self,
        ctx: SkillCtx<'_>,
        args: Self::Args,
    ) -> impl Future<Output = Result<SkillOutput, SkillError>> + Send;
}

/// A [`BuiltinSkill`] with its description and schema built once.
struct Builtin<S> {
    skill: S,
    description: String,
    schema: serde_json::Value,
}

fn boxed<S: BuiltinSkill>(skill: S) -> Arc<dyn Skill> {
    Arc::new(Builtin {
        description: skill.description(),
        schema: skill.schema(),
        skill,
    })
}

impl<S: BuiltinSkill> Skill for Builtin<S> {
    fn name(&self) -> &str {
        S::NAME
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    fn idempotent(&self) -> bool {
        S::IDEMPOTENT
    }

    fn idempotent_call(&self, args: &serde_json::Value) -> bool {
        self.skill.idempotent_call(args)
    }

    fn waits(&self) -> bool {
        S::WAITS
    }

    fn execute<'a>(
        &'a self,
        ctx: SkillCtx<'a>,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<SkillOutput, SkillError>> {
        Box::pin(async move {
            let args = serde_json::from_value(args).map_err(|e| SkillError::InvalidArguments {
                skill: S::NAME.to_owned(),
                reason: e.to_string(),
            })?;
            self.skill.run(ctx, args).await
        })
    }
}

/// Marks where output was cut, on a line of its own: says how much the
/// planner did not see.
fn push_truncation_marker(out: &mut String, omitted: u64, unit: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "[... truncated: {omitted} more {unit} not shown ...]");
}

#[cfg(test)]
mod tests {
    use super::BuiltinConfig;
    use crate::Registry;

    #[test]
    fn builtins_register_with_default_and_custom_config() {
        let names: Vec<String> = Registry::with_builtins(BuiltinConfig::default())
            .names()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            names,
            ["fs.list", "fs.read", "fs.write", "noop", "shell", "wait"]
        );
        let config = BuiltinConfig {
            shell_allow: Vec::new(),
            wait_cap_ms: 0,
            ..BuiltinConfig::default()
        };
        assert_eq!(Registry::with_builtins(config).names().count(), 6);
    }

    #[test]
    fn builtins_config_deserializes_kebab_case_with_defaults() {
        let config: BuiltinConfig =
            serde_json::from_str(r#"{"shell-allow": ["git"], "read-cap": 10}"#).unwrap();
        assert_eq!(config.shell_allow, ["git"]);
        assert_eq!(config.read_cap, 10);
        assert_eq!(config.write_cap, BuiltinConfig::default().write_cap);
        assert!(serde_json::from_str::<BuiltinConfig>(r#"{"shell-alow": []}"#).is_err());
    }
}
