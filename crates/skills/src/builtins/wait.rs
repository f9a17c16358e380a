//! `wait`: sleeps on the scheduler's timer. Idempotent (waiting again has no
//! further effect); the duration is capped by the schema's `maximum`, so
//! an over-long wait is refused before it starts. It [`waits`]: a call
//! resumed after a restart sleeps only for what is left of it.
//!
//! [`waits`]: crate::Skill::waits

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BuiltinConfig, BuiltinSkill};
use crate::{SkillCtx, SkillError, SkillOutput};

/// The `wait` skill.
pub(super) struct Wait {
    cap_ms: u64,
}

impl Wait {
    pub(super) fn new(config: &BuiltinConfig) -> Wait {
        Wait {
            cap_ms: config.wait_cap_ms,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct WaitArgs {
    ms: u64,
}

impl BuiltinSkill for Wait {
    const NAME: &'static str = "wait";
    const IDEMPOTENT: bool = true;
    const WAITS: bool = true;
    type Args = WaitArgs;

    fn description(&self) -> String {
        format!(
            "Waits `ms` milliseconds (at most {}) before the next step.",
            self.cap_ms
        )
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "ms": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": self.cap_ms,
                    "description": "How long to wait, in milliseconds."
                }
            },
            "required": ["ms"],
            "additionalProperties": false
        })
    }

    async fn run(&self, ctx: SkillCtx<'_>, args: WaitArgs) -> Result<SkillOutput, SkillError> {
        let whole = Duration::from_millis(args.ms);
        let before = ctx.resumed_after.min(whole);
        tiffany_sched::sleep(whole - before).await;
        let content = if before.is_zero() {
            format!("waited {} ms", args.ms)
        } else {
            format!(
                "waited {} ms ({} ms of it before a restart)",
                args.ms,
                before.as_millis()
            )
        };
        Ok(SkillOutput { content })
    }
}
