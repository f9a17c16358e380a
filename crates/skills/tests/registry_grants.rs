//! The registry's entry point: lookup under grants, argument parsing,
//! timeouts, and what registration refuses.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HANG_GUARD, Harness};
use serde_json::json;
use tiffany_skills::{
    BoxFuture, BuiltinConfig, Grants, RegisterError, Registry, Skill, SkillCtx, SkillError,
    SkillOutput,
};

/// A skill with a given name and schema, for registration tests.
struct Custom {
    name: &'static str,
    schema: serde_json::Value,
}

impl Skill for Custom {
    fn name(&self) -> &str {
        self.name
    }

    fn description(&self) -> &str {
        "a test skill"
    }

    fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(
        &'a self,
        _ctx: SkillCtx<'a>,
        _args: serde_json::Value,
    ) -> BoxFuture<'a, Result<SkillOutput, SkillError>> {
        Box::pin(async {
            Ok(SkillOutput {
                content: "custom".into(),
            })
        })
    }
}

fn custom(name: &'static str, schema: serde_json::Value) -> Arc<dyn Skill> {
    Arc::new(Custom { name, schema })
}

#[test]
fn registry_unknown_and_ungranted_skills_are_unknown() {
    let h = Harness::new();
    assert_eq!(
        h.call("nope", "{}"),
        Err(SkillError::Unknown("nope".into()))
    );
    let fs_only = Grants::only(["fs.*"]);
    assert_eq!(
        h.call_with(&fs_only, "noop", "{}", HANG_GUARD),
        Err(SkillError::Unknown("noop".into()))
    );
    assert_eq!(
        h.call_with(
            &Grants::only(Vec::<String>::new()),
            "noop",
            "{}",
            HANG_GUARD
        ),
        Err(SkillError::Unknown("noop".into()))
    );
    assert!(h.call_with(&fs_only, "fs.list", "{}", HANG_GUARD).is_ok());
}

#[test]
fn registry_tool_specs_follow_grants_in_name_order() {
    let registry = Registry::with_builtins(BuiltinConfig::default());
    let specs = registry.tool_specs(&Grants::only(["fs.*", "wait"]));
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    assert_eq!(names, ["fs.list", "fs.read", "fs.write", "wait"]);
    assert!(specs.iter().all(|s| !s.description.is_empty()));
    assert_eq!(
        specs[3].schema["properties"]["ms"]["maximum"],
        json!(60_000)
    );
    assert_eq!(registry.tool_specs(&Grants::All).len(), 6);
    let shell = registry.get("shell").unwrap();
    assert!(!shell.idempotent());
    assert!(shell.description().contains("git"));
    assert!(registry.get("fs.read").unwrap().idempotent());
}

#[test]
fn registry_rejects_duplicates_bad_names_and_unsupported_schemas() {
    let mut registry = Registry::with_builtins(BuiltinConfig::default());
    assert_eq!(
        registry.register(custom("noop", json!({"type": "object"}))),
        Err(RegisterError::Duplicate("noop".into()))
    );
    for name in ["", "two words", "fs.*"] {
        assert_eq!(
            registry.register(custom(name, json!({"type": "object"}))),
            Err(RegisterError::InvalidName(name.into()))
        );
    }
    let pattern = json!({
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^a"}}
    });
    let err = registry.register(custom("pattern", pattern)).unwrap_err();
    assert!(
        matches!(&err, RegisterError::InvalidSchema { skill, reason }
            if skill == "pattern" && reason.contains("`pattern`")),
        "{err:?}"
    );
    assert!(registry.get("pattern").is_none());
    registry
        .register(custom("custom", json!({"type": "object"})))
        .unwrap();
    assert_eq!(registry.names().count(), 7);
}

#[test]
fn registry_arguments_must_be_json() {
    let h = Harness::new();
    let err = h.call("noop", "{not json").unwrap_err();
    assert!(
        matches!(&err, SkillError::InvalidArguments { skill, reason }
            if skill == "noop" && reason.starts_with("not valid JSON")),
        "{err:?}"
    );
    // Some providers send no text for a call without arguments.
    assert_eq!(h.call("noop", " ").unwrap().content, "{}");
    assert_eq!(
        h.call("noop", r#"{"a":[1]}"#).unwrap().content,
        r#"{"a":[1]}"#
    );
}

#[test]
fn registry_applies_the_call_timeout() {
    let h = Harness::new();
    let started = Instant::now();
    let timeout = Duration::from_millis(50);
    assert_eq!(
        h.call_with(&Grants::All, "wait", r#"{"ms": 5000}"#, timeout),
        Err(SkillError::Timeout(timeout))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        h.call("wait", r#"{"ms": 1}"#).unwrap().content,
        "waited 1 ms"
    );
}

/// A resumed `wait` sleeps only for what is left and says how much of it
/// passed before the restart; a resume later than the whole wait returns
/// at once.
#[test]
fn wait_resumed_after_a_restart_waits_only_what_is_left() {
    let h = Harness::new();
    let started = Instant::now();
    let resumed = |ms: u64| {
        h.call_resumed(
            &Grants::All,
            "wait",
            r#"{"ms": 30000}"#,
            Duration::from_secs(60),
            Duration::from_millis(ms),
        )
        .unwrap()
        .content
    };
    assert_eq!(
        resumed(29_990),
        "waited 30000 ms (29990 ms of it before a restart)"
    );
    assert_eq!(
        resumed(45_000),
        "waited 30000 ms (30000 ms of it before a restart)"
    );
    // Waiting the whole 30 s again would have taken 30 s.
    assert!(started.elapsed() < Duration::from_secs(10));
    let registry = Registry::with_builtins(BuiltinConfig::default());
    assert!(registry.get("wait").unwrap().waits());
    assert!(!registry.get("shell").unwrap().waits());
}
