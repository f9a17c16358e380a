//! The node's settings: built-in defaults, then a TOML file (`--config`),
//! then `TIFFANY_*` environment variables, then command-line flags; each
//! layer overrides the one before. docs/configuration.md lists every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use tiffany_agent::{Budgets, NodeConfig};
use tiffany_skills::BuiltinConfig;
use tiffany_wal::SyncMode;

/// The settings file, every key optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    data_dir: Option<PathBuf>,
    workers: Option<usize>,
    max_active_tasks: Option<usize>,
    #[serde(default)]
    journal: JournalSection,
    #[serde(default)]
    llm: LlmSection,
    #[serde(default)]
    budgets: BudgetsSection,
    #[serde(default)]
    skills: SkillsSection,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    sync: Option<String>,
    snapshot_every_mib: Option<u64>,
    snapshot_every_records: Option<u64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct LlmSection {
    url: Option<String>,
    model: Option<String>,
    api_key: Option<String>,
    timeout_ms: Option<u64>,
    max_retries: Option<u32>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct BudgetsSection {
    max_steps: Option<u32>,
    max_tokens: Option<u64>,
    max_wall_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SkillsSection {
    shell_allow: Option<Vec<String>>,
    timeout_secs: Option<u64>,
    output_cap_bytes: Option<usize>,
}

/// Where the planner comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LlmChoice {
    /// The built-in offline planner of the command.
    Scripted,
    /// An OpenAI-compatible server.
    Remote {
        url: String,
        model: String,
        api_key: Option<String>,
        timeout: Duration,
        max_retries: u32,
    },
}

/// Everything a command needs to start a node.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) node: NodeConfig,
    pub(crate) llm: LlmChoice,
    pub(crate) skills: BuiltinConfig,
}

/// Every environment variable read, with the key it overrides.
pub(crate) const ENV_KEYS: &[(&str, &str)] = &[
    ("TIFFANY_DATA_DIR", "data_dir"),
    ("TIFFANY_WORKERS", "workers"),
    ("TIFFANY_MAX_ACTIVE_TASKS", "max_active_tasks"),
    ("TIFFANY_SYNC", "journal.sync"),
    ("TIFFANY_SNAPSHOT_EVERY_MIB", "journal.snapshot_every_mib"),
    (
        "TIFFANY_SNAPSHOT_EVERY_RECORDS",
        "journal.snapshot_every_records",
    ),
    ("TIFFANY_LLM_URL", "llm.url"),
    ("TIFFANY_LLM_MODEL", "llm.model"),
    ("TIFFANY_LLM_API_KEY", "llm.api_key"),
    ("TIFFANY_LLM_TIMEOUT_MS", "llm.timeout_ms"),
    ("TIFFANY_LLM_MAX_RETRIES", "llm.max_retries"),
    ("TIFFANY_MAX_STEPS", "budgets.max_steps"),
    ("TIFFANY_MAX_TOKENS", "budgets.max_tokens"),
    ("TIFFANY_MAX_WALL_SECS", "budgets.max_wall_secs"),
    ("TIFFANY_SHELL_ALLOW", "skills.shell_allow"),
    ("TIFFANY_SKILL_TIMEOUT_SECS", "skills.timeout_secs"),
    ("TIFFANY_SKILL_OUTPUT_CAP_BYTES", "skills.output_cap_bytes"),
];

impl FileConfig {
    /// Reads and parses a settings file.
    #[allow(
        clippy::disallowed_methods,
        reason = "the CLI's main thread, before any task runs"
    )]
    pub(crate) fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Applies `TIFFANY_*` variables read through `var`.
    pub(crate) fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, v: String) -> Result<T> {
            v.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value"))
        }
        for (name, _) in ENV_KEYS {
            let Some(v) = var(name) else { continue };
            match *name {
                "TIFFANY_DATA_DIR" => self.data_dir = Some(v.into()),
                "TIFFANY_WORKERS" => self.workers = Some(parse(name, v)?),
                "TIFFANY_MAX_ACTIVE_TASKS" => self.max_active_tasks = Some(parse(name, v)?),
                "TIFFANY_SYNC" => self.journal.sync = Some(v),
                "TIFFANY_SNAPSHOT_EVERY_MIB" => {
                    self.journal.snapshot_every_mib = Some(parse(name, v)?);
                }
                "TIFFANY_SNAPSHOT_EVERY_RECORDS" => {
                    self.journal.snapshot_every_records = Some(parse(name, v)?);
                }
                "TIFFANY_LLM_URL" => self.llm.url = Some(v),
                "TIFFANY_LLM_MODEL" => self.llm.model = Some(v),
                "TIFFANY_LLM_API_KEY" => self.llm.api_key = Some(v),
                "TIFFANY_LLM_TIMEOUT_MS" => self.llm.timeout_ms = Some(parse(name, v)?),
                "TIFFANY_LLM_MAX_RETRIES" => self.llm.max_retries = Some(parse(name, v)?),
                "TIFFANY_MAX_STEPS" => self.budgets.max_steps = Some(parse(name, v)?),
                "TIFFANY_MAX_TOKENS" => self.budgets.max_tokens = Some(parse(name, v)?),
                "TIFFANY_MAX_WALL_SECS" => self.budgets.max_wall_secs = Some(parse(name, v)?),
                "TIFFANY_SHELL_ALLOW" => {
                    self.skills.shell_allow = Some(
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                    );
                }
                "TIFFANY_SKILL_TIMEOUT_SECS" => self.skills.timeout_secs = Some(parse(name, v)?),
                "TIFFANY_SKILL_OUTPUT_CAP_BYTES" => {
                    self.skills.output_cap_bytes = Some(parse(name, v)?)
                }
                _ => unreachable!("every key of ENV_KEYS is handled"),
            }
        }
        Ok(())
    }

    /// The settings these values give, over the defaults.
    pub(crate) fn resolve(self) -> Result<Settings> {
        let data_dir = self.data_dir;
        let mut node = NodeConfig::new(data_dir.clone().unwrap_or_default());
        node.workers = self.workers;
        node.max_active_tasks = self.max_active_tasks;
        if let Some(sync) = self.journal.sync {
            node.sync = match sync.to_ascii_lowercase().as_str() {
                "data" => SyncMode::Data,
                "buffer" => SyncMode::Buffer,
                "none" => SyncMode::None,
                other => bail!("journal.sync must be data, buffer or none, not {other:?}"),
            };
        }
        if let Some(mib) = self.journal.snapshot_every_mib {
            node.snapshot_every_bytes = mib.max(1) << 20;
        }
        if let Some(records) = self.journal.snapshot_every_records {
            node.snapshot_every_records = records.max(1);
        }
        let defaults = Budgets::default();
        node.budgets = Budgets {
            max_steps: self.budgets.max_steps.unwrap_or(defaults.max_steps),
            max_tokens: self.budgets.max_tokens.unwrap_or(defaults.max_tokens),
            max_wall: self
                .budgets
                .max_wall_secs
                .map_or(defaults.max_wall, Duration::from_secs),
        };
        if let Some(secs) = self.skills.timeout_secs {
            node.skill_timeout = Duration::from_secs(secs);
        }
        let mut skills = BuiltinConfig::default();
        if let Some(allow) = self.skills.shell_allow {
            skills.shell_allow = allow;
        }
        if let Some(cap) = self.skills.output_cap_bytes {
            skills.shell_output_cap = cap;
        }
        let llm = match self.llm.url {
            None => {
                if self.llm.model.is_some() {
                    bail!("llm.model is set but llm.url is not: set the server's URL too");
                }
                LlmChoice::Scripted
            }
            Some(url) => LlmChoice::Remote {
                url,
                model: self.llm.model.unwrap_or_else(|| "gpt-4o-mini".to_owned()),
                api_key: self.llm.api_key,
                timeout: Duration::from_millis(self.llm.timeout_ms.unwrap_or(60_000)),
                max_retries: self.llm.max_retries.unwrap_or(3),
            },
        };
        Ok(Settings {
            data_dir,
            node,
            llm,
            skills,
        })
    }
}

/// Defaults, then the file at `path` (if any), then the environment.
pub(crate) fn load(path: Option<&Path>) -> Result<FileConfig> {
    let mut config = match path {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    config.apply_env(|name| std::env::var(name).ok())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_the_scripted_planner_and_durable_steps() {
        let s = FileConfig::default().resolve().unwrap();
        assert_eq!(s.llm, LlmChoice::Scripted);
        assert_eq!(s.node.sync, SyncMode::Data);
        assert_eq!(s.node.budgets, Budgets::default());
        assert_eq!(s.data_dir, None);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut c: FileConfig = toml::from_str(
            "data_dir = \"/a\"\n[llm]\nurl = \"http://x/v1\"\nmodel = \"m\"\n[budgets]\nmax_steps = 3\n",
        )
        .unwrap();
        c.apply_env(|name| match name {
            "TIFFANY_DATA_DIR" => Some("/b".into()),
            "TIFFANY_MAX_STEPS" => Some("7".into()),
            "TIFFANY_SYNC" => Some("buffer".into()),
            "TIFFANY_SHELL_ALLOW" => Some("git, ls".into()),
            _ => None,
        })
        .unwrap();
        let s = c.resolve().unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/b")));
        assert_eq!(s.node.budgets.max_steps, 7);
        assert_eq!(s.node.sync, SyncMode::Buffer);
        assert_eq!(s.skills.shell_allow, ["git", "ls"]);
        assert!(matches!(s.llm, LlmChoice::Remote { ref model, .. } if model == "m"));
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors_naming_them() {
        let err = toml::from_str::<FileConfig>("[llm]\nurll = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
        let mut c = FileConfig::default();
        let err = c
            .apply_env(|n| (n == "TIFFANY_WORKERS").then(|| "two".into()))
            .unwrap_err();
        assert!(err.to_string().contains("TIFFANY_WORKERS"), "{err}");
        let c: FileConfig = toml::from_str("[journal]\nsync = \"sometimes\"\n").unwrap();
        assert!(c.resolve().unwrap_err().to_string().contains("sometimes"));
    }
}
