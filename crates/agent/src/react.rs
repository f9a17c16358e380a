//! The ReAct loop of one task: plan (ask the planner), execute (run the
//! tool calls, in parallel), observe (journal the results), repeat until a
//! final answer or a budget ends it.
//!
//! The loop keeps no state of its own: each turn reads what to do next from
//! the task's journaled state ([`TaskState::next`]). That is what makes a
//! task resumable at any instant: a recovered task runs the same loop over
//! the recovered state, so a planner answer or a skill result that was
//! journaled is used, never asked for again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tiffany_llm::{LlmRequest, ToolCall, ToolSpec};
use tiffany_skills::{SkillCtx, SkillError};

use crate::journal::{Event, fingerprint};
use crate::node::{NodeError, NodeInner, now_ms};
use crate::pal::ActivityKind;
use crate::state::{Next, TaskState};

/// Runs task `task` to its end. Journal failures (a poisoned WAL) stop the
/// loop: the task continues when the node is reopened.
pub(crate) async fn run(node: Arc<NodeInner>, task: u64, resumed: bool) {
    // Held until the loop ends (see `NodeConfig::max_active_tasks`).
    let _admitted = match &node.admission {
        Some(permits) => Some(Arc::clone(permits).acquire_owned().await),
        None => None,
    };
    if let Err(error) = drive(&node, task, resumed).await {
        tracing::error!(task, %error, "task stopped: its journal failed; it resumes when the node reopens");
    }
}

async fn drive(node: &Arc<NodeInner>, task: u64, resumed: bool) -> Result<(), NodeError> {
    let Some((agent, instruction)) = node
        .table()
        .tasks
        .get(&task)
        .map(|t| (t.agent, t.instruction.clone()))
    else {
        return Ok(());
    };
    node.publish(
        task,
        agent,
        ActivityKind::ReceivedInstruction {
            instruction,
            resumed,
        },
    );
    // When the cycle in progress began (set when its plan step starts).
    let mut cycle_start: Option<Instant> = None;
    loop {
        // Decided under the lock, copying only what the step needs: the
        // conversation when it plans, the pending calls when it executes.
        let (next, over_budget, messages) = {
            let table = node.table();
            let Some(state) = table.tasks.get(&task) else {
                return Ok(());
            };
            let next = state.next();
            match next {
                Next::Plan { .. } => (next, over_budget(node, state), state.conversation.clone()),
                _ => (next, None, Vec::new()),
            }
        };
        match next {
            Next::Finished => return Ok(()),
            Next::Conclude(answer) => {
                end_cycle(node, &mut cycle_start);
                return conclude(node, task, Event::TaskCompleted { task, answer }).await;
            }
            Next::Plan { step } => {
                end_cycle(node, &mut cycle_start);
                if let Some(error) = over_budget {
                    return conclude(node, task, Event::TaskFailed { task, error }).await;
                }
                cycle_start = Some(Instant::now());
                if let Err(error) = plan(node, task, agent, step, messages).await {
                    let error = format!("the planner failed at step {step}: {error}");
                    return conclude(node, task, Event::TaskFailed { task, error }).await;
                }
            }
            Next::Execute { step, calls } => execute(node, task, agent, step, calls).await?,
        }
    }
}

fn end_cycle(node: &NodeInner, start: &mut Option<Instant>) {
    if let Some(start) = start.take() {
        node.cycles.record(start.elapsed().as_micros() as u64);
    }
}

fn over_budget(node: &NodeInner, state: &TaskState) -> Option<String> {
    let budgets = node.config.budgets;
    if state.steps >= budgets.max_steps {
        return Some(format!(
            "step budget exhausted: {} planner answers without a final one",
            state.steps
        ));
    }
    if state.usage.total() >= budgets.max_tokens {
        return Some(format!(
            "token budget exhausted: {} of {} tokens used",
            state.usage.total(),
            budgets.max_tokens
        ));
    }
    let elapsed = Duration::from_millis(now_ms().saturating_sub(state.started_ms));
    if elapsed >= budgets.max_wall {
        return Some(format!(
            "time budget exhausted: running for {elapsed:?} (limit {:?})",
            budgets.max_wall
        ));
    }
    None
}

async fn conclude(node: &NodeInner, task: u64, event: Event) -> Result<(), NodeError> {
    if let Some(lsn) = node.conclude(task, &event)? {
        node.durable(lsn).await?;
    }
    Ok(())
}

/// The tools an agent may call, as the planner sees them.
pub(crate) fn tools_for(node: &NodeInner, agent: u64) -> Vec<ToolSpec> {
    let grants = node.grants(agent);
    node.skills
        .tool_specs(&grants)
        .into_iter()
        .map(|s| ToolSpec {
            name: s.name.to_owned(),
            description: s.description.to_owned(),
            parameters: s.schema.clone(),
        })
        .collect()
}

async fn plan(
    node: &NodeInner,
    task: u64,
    agent: u64,
    step: u32,
    messages: Vec<tiffany_llm::Message>,
) -> Result<(), PlanError> {
    let tools = tools_for(node, agent);
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let request = LlmRequest {
        messages,
        tools,
        max_tokens: None,
    };
    let fingerprint = fingerprint(&request.messages, &names);
    node.journal(
        agent,
        &Event::LlmRequested {
            task,
            step,
            fingerprint,
        },
    )?;
    node.publish(task, agent, ActivityKind::WaitingForLlm { step });
    let response = node.llm.complete(&request).await.map_err(PlanError::Llm)?;
    let event = Event::LlmResponded {
        task,
        step,
        content: response.message.content,
        tool_calls: response.message.tool_calls,
        usage: response.usage,
    };
    node.journal(agent, &event)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error(transparent)]
    Llm(tiffany_llm::LlmError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Runs the calls of a step that have no result yet, in parallel: one
/// child task per call, each journaling its own result when it finishes.
async fn execute(
    node: &Arc<NodeInner>,
    task: u64,
    agent: u64,
    step: u32,
    calls: Vec<(u32, ToolCall, bool)>,
) -> Result<(), NodeError> {
    let mut to_run = Vec::with_capacity(calls.len());
    let mut last_start = None;
    for (index, call, was_started) in calls {
        let idempotent = node.skills.get(&call.name).is_none_or(|skill| {
            serde_json::from_str(&call.arguments).is_ok_and(|args| skill.idempotent_call(&args))
        });
        if was_started && !idempotent {
            // In flight when the node stopped: its effects are unknown.
            node.journal(
                agent,
                &Event::SkillInterrupted {
                    task,
                    step,
                    call: index,
                },
            )?;
            node.publish(
                task,
                agent,
                ActivityKind::SkillInterrupted { skill: call.name },
            );
            continue;
        }
        last_start = Some(node.journal(
            agent,
            &Event::SkillStarted {
                task,
                step,
                call: index,
            },
        )?);
        to_run.push((index, call));
    }
    // One sync covers every start of the step (and the plan before it).
    if let Some(lsn) = last_start {
        node.durable(lsn).await?;
    }
    if let [(index, call)] = to_run.as_slice() {
        return run_call(Arc::clone(node), task, agent, step, *index, call.clone()).await;
    }
    let handles: Vec<_> = to_run
        .into_iter()
        .map(|(index, call)| {
            tiffany_sched::spawn(run_call(Arc::clone(node), task, agent, step, index, call))
        })
        .collect();
    for handle in handles {
        match handle.await {
            Ok(result) => result?,
            Err(join) => tracing::error!(task, %join, "a skill call task ended abnormally"),
        }
    }
    Ok(())
}

async fn run_call(
    node: Arc<NodeInner>,
    task: u64,
    agent: u64,
    step: u32,
    index: u32,
    call: ToolCall,
) -> Result<(), NodeError> {
    node.publish(
        task,
        agent,
        ActivityKind::SkillStart {
            skill: call.name.clone(),
            arguments: call.arguments.clone(),
        },
    );
    let started = Instant::now();
    let grants = node.grants(agent);
    let (workspace, name) = node.workspace_and_name(agent);
    let ctx = SkillCtx {
        workspace: &workspace,
        agent: &name,
        timeout: node.config.skill_timeout,
    };
    let result = node
        .skills
        .call(&grants, &call.name, &call.arguments, ctx)
        .await;
    let ok = result.is_ok();
    let content = match result {
        Ok(output) => output.content,
        Err(error) => observation_of(&error),
    };
    node.journal(
        agent,
        &Event::SkillFinished {
            task,
            step,
            call: index,
            ok,
            content,
        },
    )?;
    let micros = started.elapsed().as_micros() as u64;
    node.publish(
        task,
        agent,
        ActivityKind::SkillComplete {
            skill: call.name,
            ok,
            micros,
        },
    );
    Ok(())
}

/// The text the planner sees for a failed call.
fn observation_of(error: &SkillError) -> String {
    format!("error: {error}")
}
