//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tiffany_sched::Runtime;
use tiffany_skills::{BuiltinConfig, Grants, Registry, SkillCtx, SkillError, SkillOutput};

/// The timeout of calls that are not about timeouts: a guard against hangs.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(20);

/// A runtime, a registry, a workspace and, beside it, a directory standing
/// for "outside the workspace".
pub(crate) struct Harness {
    rt: Runtime,
    registry: Arc<Registry>,
    workspace: TempDir,
    outside: TempDir,
}

impl Harness {
    /// The built-ins with their default configuration.
    pub(crate) fn new() -> Harness {
        Harness::with_registry(Registry::with_builtins(BuiltinConfig::default()))
    }

    /// The built-ins configured by `config`.
    pub(crate) fn with_config(config: BuiltinConfig) -> Harness {
        Harness::with_registry(Registry::with_builtins(config))
    }

    /// The built-ins with `programs` added to the shell's default allowlist.
    pub(crate) fn allowing(programs: &[&str]) -> Harness {
        let mut config = BuiltinConfig::default();
        config
            .shell_allow
            .extend(programs.iter().map(|p| (*p).to_owned()));
        Harness::with_config(config)
    }

    pub(crate) fn with_registry(registry: Registry) -> Harness {
        Harness {
            rt: Runtime::builder().workers(1).build().unwrap(),
            registry: Arc::new(registry),
            workspace: tempfile::tempdir().unwrap(),
            outside: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn workspace(&self) -> &Path {
        self.workspace.path()
    }

    pub(crate) fn outside(&self) -> &Path {
        self.outside.path()
    }

    /// Calls `name` with the JSON text `arguments`, every skill granted.
    pub(crate) fn call(&self, name: &str, arguments: &str) -> Result<SkillOutput, SkillError> {
        self.call_with(&Grants::All, name, arguments, HANG_GUARD)
    }

    /// Calls `name` with `arguments`, the given grants and timeout.
    pub(crate) fn call_with(
        &self,
        grants: &Grants,
        name: &str,
        arguments: &str,
        timeout: Duration,
    ) -> Result<SkillOutput, SkillError> {
        self.call_resumed(grants, name, arguments, timeout, Duration::ZERO)
    }

    /// [`Harness::call_with`] for a call a restart resumed `resumed_after`
    /// after it first started.
    pub(crate) fn call_resumed(
        &self,
        grants: &Grants,
        name: &str,
        arguments: &str,
        timeout: Duration,
        resumed_after: Duration,
    ) -> Result<SkillOutput, SkillError> {
        let registry = Arc::clone(&self.registry);
        let workspace: PathBuf = self.workspace().to_owned();
        let (grants, name, arguments) = (grants.clone(), name.to_owned(), arguments.to_owned());
        self.rt.block_on(async move {
            let ctx = SkillCtx {
                workspace: &workspace,
                agent: "test",
                timeout,
                resumed_after,
            };
            registry.call(&grants, &name, &arguments, ctx).await
        })
    }

    /// Calls `name` and returns its output, panicking on an error.
    pub(crate) fn ok(&self, name: &str, arguments: serde_json::Value) -> String {
        match self.call(name, &arguments.to_string()) {
            Ok(output) => output.content,
            Err(e) => panic!("{name} {arguments}: {e:?}"),
        }
    }

    /// Calls `name` and returns its error, panicking on success.
    pub(crate) fn err(&self, name: &str, arguments: serde_json::Value) -> SkillError {
        match self.call(name, &arguments.to_string()) {
            Ok(output) => panic!("{name} {arguments}: unexpected success: {}", output.content),
            Err(e) => e,
        }
    }
}

/// The text of a `Failed` error.
pub(crate) fn failed_text(error: SkillError) -> String {
    match error {
        SkillError::Failed(text) => text,
        other => panic!("expected Failed, got {other:?}"),
    }
}
