//! The `replay` recovery mode: re-ask a planner every journaled step and
//! report where its answers diverge from the journal. Nothing is executed
//! and nothing is written: skills are not re-run (their journaled results
//! stand in for them), so an audit is safe on a live node's copy.

use std::path::Path;
use std::sync::Arc;

use tiffany_llm::{LlmProvider, LlmRequest, Message, Role, ToolSpec};
use tiffany_sched::Runtime;

use crate::node::{NodeError, inspect};

/// One step whose answer differs from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Task id.
    pub task: u64,
    /// The step.
    pub step: u32,
    /// The journaled answer.
    pub journaled: Message,
    /// What the planner answers now (or its error).
    pub replayed: Result<Message, String>,
}

/// What an audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Tasks whose conversation was available (finished tasks restored
    /// from a snapshot keep only their summary and are skipped).
    pub tasks: usize,
    /// Tasks skipped for that reason.
    pub skipped: usize,
    /// Steps re-asked.
    pub steps: u64,
    /// Steps whose answer differs.
    pub divergences: Vec<Divergence>,
}

/// Re-asks `llm` every journaled step of every task under `data_dir`, with
/// the conversation as it stood before that step, and compares the answer
/// with the journaled one (text and tool calls; token counts are not
/// compared). `tools` are offered to the planner as a live run would.
pub fn audit(
    data_dir: &Path,
    llm: &Arc<dyn LlmProvider>,
    tools: &[ToolSpec],
) -> Result<Audit, NodeError> {
    let (table, _) = inspect(data_dir)?;
    let runtime = Runtime::builder()
        .workers(1)
        .thread_name("tiffany-audit")
        .build()?;
    let mut report = Audit::default();
    let tools: Arc<[ToolSpec]> = tools.into();
    for task in table.tasks.values() {
        if task.conversation.is_empty() {
            report.skipped += 1;
            continue;
        }
        report.tasks += 1;
        let answers = task
            .conversation
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Assistant);
        for (step, (at, journaled)) in answers.enumerate() {
            let request = LlmRequest {
                messages: task.conversation[..at].to_vec(),
                tools: Arc::clone(&tools),
                max_tokens: None,
            };
            let planner = Arc::clone(llm);
            let replayed = runtime
                .block_on(async move { planner.complete(&request).await })
                .map(|r| r.message)
                .map_err(|e| e.to_string());
            report.steps += 1;
            let same = replayed.as_ref().is_ok_and(|m| {
                m.content == journaled.content && m.tool_calls == journaled.tool_calls
            });
            if !same {
                report.divergences.push(Divergence {
                    task: task.id,
                    step: step as u32,
                    journaled: journaled.clone(),
                    replayed,
                });
            }
        }
    }
    Ok(report)
}
