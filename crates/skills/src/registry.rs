//! The registry: a node's skills by name, and the one entry point that runs
//! them.
//!
//! Invariants:
//! - Names are unique, non-empty, free of whitespace and of `*` (which
//!   grant patterns use), and every registered schema compiled: a skill
//!   whose schema uses a keyword the validator does not check is refused at
//!   [`Registry::register`], never registered half-checked.
//! - [`Registry::call`] runs a skill only after the agent's [`Grants`]
//!   allow it and its arguments passed the compiled schema; an ungranted
//!   skill is indistinguishable from a missing one (`Unknown`).
//! - Skills are kept in name order, so [`Registry::names`] and
//!   [`Registry::tool_specs`] are deterministic (stable prompts).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::builtins::{self, BuiltinConfig};
use crate::schema::Schema;
use crate::{Skill, SkillCtx, SkillError, SkillOutput};

/// Which skills an agent may call.
///
/// A pattern is a skill name in which `*` matches any run of characters
/// (dots included): `fs.*` grants `fs.read`, `fs.write` and `fs.list`.
///
/// ```
/// use tiffany_skills::Grants;
///
/// let grants = Grants::only(["fs.*", "wait"]);
/// assert!(grants.allows("fs.read"));
/// assert!(grants.allows("wait"));
/// assert!(!grants.allows("shell"));
/// assert!(Grants::All.allows("shell"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grants {
    /// Every registered skill.
    All,
    /// The skills matching any of these patterns.
    Only(Vec<String>),
}

impl Grants {
    /// The skills matching any of `patterns`.
    pub fn only<I, S>(patterns: I) -> Grants
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Grants::Only(patterns.into_iter().map(Into::into).collect())
    }

    /// Whether the skill `name` is granted.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Grants::All => true,
            Grants::Only(patterns) => patterns.iter().any(|p| glob_matches(p, name)),
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut middle: Vec<&str> = parts.collect();
    let Some(last) = middle.pop() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Why a skill could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A skill of that name is already registered.
    #[error("a skill named `{0}` is already registered")]
    Duplicate(String),
    /// The name is empty, or contains whitespace or `*`.
    #[error("invalid skill name `{0}`: it must be non-empty, without whitespace or `*`")]
    InvalidName(String),
    /// The schema is not one the validator can check fully (see
    /// [`Registry::register`]).
    #[error("invalid schema for `{skill}`: {reason}")]
    InvalidSchema {
        /// The skill.
        skill: String,
        /// What is wrong, and where in the schema.
        reason: String,
    },
}

/// What the planner is told about one skill; the agent turns it into an
/// LLM tool spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkillSpec<'a> {
    /// The skill's name.
    pub name: &'a str,
    /// What it does.
    pub description: &'a str,
    /// JSON schema of its arguments object.
    pub schema: &'a serde_json::Value,
}

struct Entry {
    skill: Arc<dyn Skill>,
    schema: Schema,
}

/// A node's skills, by name.
///
/// ```
/// use std::time::Duration;
/// use tiffany_skills::{BuiltinConfig, Grants, Registry, SkillCtx};
///
/// let registry = Registry::with_builtins(BuiltinConfig::default());
/// let rt = tiffany_sched::Runtime::builder().workers(1).build().unwrap();
/// let output = rt.block_on(async move {
///     let ctx = SkillCtx {
///         workspace: std::path::Path::new("."),
///         agent: "doc",
///         timeout: Duration::from_secs(5),
///         resumed_after: Duration::ZERO,
///     };
///     registry.call(&Grants::only(["noop"]), "noop", r#"{"x": 1}"#, ctx).await
/// });
/// assert_eq!(output.unwrap().content, r#"{"x":1}"#);
/// ```
#[derive(Default)]
pub struct Registry {
    skills: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("skills", &self.skills.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry holding the built-in skills ([`crate::builtins`]: `shell`,
    /// `fs.read`, `fs.write`, `fs.list`, `wait`, `noop`), configured by
    /// `config`.
    pub fn with_builtins(config: BuiltinConfig) -> Registry {
        let mut registry = Registry::new();
        for skill in builtins::builtins(&config) {
            // The built-ins have distinct names and schemas inside the
            // validated subset; the crate's tests register them all.
            registry
                .register(skill)
                .expect("the built-in skills register cleanly");
        }
        registry
    }

    /// Adds `skill`.
    ///
    /// # Errors
    /// [`RegisterError::Duplicate`] if the name is taken,
    /// [`RegisterError::InvalidName`] for an empty name or one with
    /// whitespace or `*`, and [`RegisterError::InvalidSchema`] if the schema
    /// does not describe an object or uses anything outside the supported
    /// subset of JSON Schema: `type` (one of object, array, string, integer,
    /// number, boolean), `properties`, `required`, `additionalProperties`
    /// (a boolean), `items`, `enum`, `minimum`, `maximum`, `description`,
    /// `title`.
    pub fn register(&mut self, skill: Arc<dyn Skill>) -> Result<(), RegisterError> {
        let name = skill.name();
        if name.is_empty() || name.contains('*') || name.contains(char::is_whitespace) {
            return Err(RegisterError::InvalidName(name.to_owned()));
        }
        if self.skills.contains_key(name) {
            return Err(RegisterError::Duplicate(name.to_owned()));
        }
        let schema = Schema::compile_arguments(skill.schema()).map_err(|reason| {
            RegisterError::InvalidSchema {
                skill: name.to_owned(),
                reason,
            }
        })?;
        self.skills.insert(name.to_owned(), Entry { skill, schema });
        Ok(())
    }

    /// The skill called `name`, granted or not.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Skill>> {
        self.skills.get(name).map(|entry| &entry.skill)
    }

    /// Every registered name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.skills.keys().map(String::as_str)
    }

    /// Name, description and schema of every skill `grants` allows, in
    /// name order.
    pub fn tool_specs(&self, grants: &Grants) -> Vec<SkillSpec<'_>> {
        self.skills
            .iter()
            .filter(|(name, _)| grants.allows(name))
            .map(|(name, entry)| SkillSpec {
                name,
                description: entry.skill.description(),
                schema: entry.skill.schema(),
            })
            .collect()
    }

    /// Runs the skill `name` with `arguments`, the JSON text the planner
    /// wrote, for an agent holding `grants`.
    ///
    /// In order: the skill must be registered and granted (else
    /// [`SkillError::Unknown`]); `arguments` must parse as JSON (else
    /// [`SkillError::InvalidArguments`]; empty or blank text counts as `{}`,
    /// which some providers send for a call without arguments) and match
    /// the skill's schema (else `InvalidArguments`, naming the field); then
    /// the skill runs for at most `ctx.timeout` (else
    /// [`SkillError::Timeout`], and the skill's future is dropped, which
    /// for `shell` kills its processes).
    ///
    /// Must run inside a `tiffany-sched` task: the timeout is a scheduler
    /// timer, and the built-ins use tokio I/O.
    pub async fn call(
        &self,
        grants: &Grants,
        name: &str,
        arguments: &str,
        ctx: SkillCtx<'_>,
    ) -> Result<SkillOutput, SkillError> {
        let entry = match self.skills.get(name) {
            Some(entry) if grants.allows(name) => entry,
            _ => return Err(SkillError::Unknown(name.to_owned())),
        };
        let invalid = |reason: String| SkillError::InvalidArguments {
            skill: name.to_owned(),
            reason,
        };
        let args = if arguments.trim().is_empty() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str(arguments).map_err(|e| invalid(format!("not valid JSON: {e}")))?
        };
        entry.schema.validate(&args).map_err(invalid)?;
        match tiffany_sched::timeout(ctx.timeout, entry.skill.execute(ctx, args)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(SkillError::Timeout(ctx.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn grants_glob_patterns() {
        let cases = [
            ("fs.*", "fs.read", true),
            ("fs.*", "fs.", true),
            ("fs.*", "fsx", false),
            ("*", "anything", true),
            ("shell", "shell", true),
            ("shell", "shell2", false),
            ("*.read", "fs.read", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("ab*ba", "aba", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }
}
