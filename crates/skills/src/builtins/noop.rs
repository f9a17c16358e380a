//! `noop`: returns its arguments. No effect, so idempotent; the benchmarks
//! use it to measure the call path without a skill's own cost.

use serde_json::{Value, json};

use super::BuiltinSkill;
use crate::{SkillCtx, SkillError, SkillOutput};

/// The `noop` skill.
pub(super) struct Noop;

impl BuiltinSkill for Noop {
    const NAME: &'static str = "noop";
    const IDEMPOTENT: bool = true;
    type Args = Value;

    fn description(&self) -> String {
        "Does nothing and returns its arguments as JSON.".into()
    }

    fn schema(&self) -> Value {
        json!({"type": "object"})
    }

    async fn run(&self, _ctx: SkillCtx<'_>, args: Value) -> Result<SkillOutput, SkillError> {
        Ok(SkillOutput {
            content: args.to_string(),
        })
    }
}
