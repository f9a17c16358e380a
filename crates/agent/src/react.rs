//! The ReAct loop of one task: plan (ask the planner), execute (run the
//! tool calls, in parallel), observe (journal the results), repeat until a
//! final answer or a budget ends it.
//!
//! The loop keeps no state of its own: each turn reads what to do next from
//! the task's journaled state ([`TaskState::next`]). That is what makes a
//! task resumable at any instant: a recovered task runs the same loop over
//! the recovered state, so a planner answer or a skill result that was
//! journaled is used, never asked for again.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tiffany_llm::{LlmRequest, ToolCall, ToolSpec};

use crate::ctx::{Ctx, DELEGATE, PlanError, delegate_tool, program_instruction, run_program};
use crate::journal::Event;
use crate::node::{NodeError, NodeInner, now_ms};
use crate::pal::ActivityKind;
use crate::state::{Next, TaskState};

/// Runs task `task` to its end: its ReAct loop, or its program. Journal
/// failures (a poisoned WAL) stop it: the task continues when the node is
/// reopened.
pub(crate) async fn run(node: Arc<NodeInner>, task: u64, resumed: bool) {
    // Held until the task ends, except while it waits on a child (see
    // `NodeConfig::max_active_tasks`).
    let admitted = match &node.admission {
        Some(permits) => Arc::clone(permits).acquire_owned().await.ok(),
        None => None,
    };
    let Some((agent, instruction, program)) = node
        .table()
        .tasks
        .get(&task)
        .map(|t| (t.agent, t.instruction.clone(), t.program.clone()))
    else {
        return;
    };
    let shown = match &program {
        Some(name) => program_instruction(name, &instruction),
        None => instruction.clone(),
    };
    node.publish(
        task,
        agent,
        ActivityKind::ReceivedInstruction {
            instruction: shown,
            resumed,
        },
    );
    let ctx = Ctx::new(Arc::clone(&node), task, agent, admitted);
    let result = match program {
        Some(name) => match run_program(ctx, &name, instruction).await {
            Ok(Some(end)) => conclude(&node, task, end).await,
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        },
        None => drive(&ctx).await,
    };
    if let Err(error) = result {
        tracing::error!(task, %error, "task stopped: its journal failed; it resumes when the node reopens");
    }
}

async fn drive(ctx: &Ctx) -> Result<(), NodeError> {
    let (node, task) = (ctx.node(), ctx.task());
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
            Next::Finished | Next::Program => return Ok(()),
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
                if let Err(error) = plan(ctx, step, messages).await {
                    let error = match error {
                        PlanError::Node(error) => return Err(error),
                        PlanError::Llm(error) => error,
                    };
                    let error = format!("the planner failed at step {step}: {error}");
                    return conclude(node, task, Event::TaskFailed { task, error }).await;
                }
            }
            Next::Execute { step, calls } => execute(ctx, step, calls).await?,
        }
    }
}

fn end_cycle(node: &NodeInner, start: &mut Option<Instant>) {
    if let Some(start) = start.take() {
        node.cycles.record(start.elapsed().as_micros() as u64);
    }
}

/// Why `state` may not ask the planner again, if its budgets are spent.
pub(crate) fn over_budget(node: &NodeInner, state: &TaskState) -> Option<String> {
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

/// The tools an agent may call, as the planner sees them: built once per
/// set of grants (the registry never changes under a node), then shared by
/// every request.
pub(crate) fn tools_for(node: &NodeInner, agent: u64) -> Arc<[ToolSpec]> {
    let grants = node.grants(agent);
    let mut cache = node.tools.lock().unwrap_or_else(PoisonError::into_inner);
    let tools = cache.entry(grants).or_insert_with_key(|grants| {
        let mut tools: Vec<ToolSpec> = node
            .skills
            .tool_specs(grants)
            .into_iter()
            .filter(|s| s.name != DELEGATE)
            .map(|s| ToolSpec {
                name: s.name.to_owned(),
                description: s.description.to_owned(),
                parameters: s.schema.clone(),
            })
            .collect();
        if grants.allows(DELEGATE) {
            tools.push(delegate_tool());
        }
        tools.into()
    });
    Arc::clone(tools)
}

async fn plan(ctx: &Ctx, step: u32, messages: Vec<tiffany_llm::Message>) -> Result<(), PlanError> {
    let tools = tools_for(ctx.node(), ctx.agent());
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let request = LlmRequest {
        messages,
        tools,
        max_tokens: None,
    };
    ctx.plan_step(step, &request, &names).await
}

/// Runs the calls of a step that have no result yet, in parallel: one
/// child task per call, each journaling its own result when it finishes.
async fn execute(ctx: &Ctx, step: u32, calls: Vec<(u32, ToolCall, bool)>) -> Result<(), NodeError> {
    let (node, task, agent) = (ctx.node(), ctx.task(), ctx.agent());
    let mut to_run = Vec::with_capacity(calls.len());
    let mut last_start = None;
    for (index, call, was_started) in calls {
        if was_started && !node.is_idempotent(&call.name, &call.arguments) {
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
        let resumed_after = if node.waits(agent, &call.name) {
            ctx.wait_resumed_after(step, index)?
        } else {
            Duration::ZERO
        };
        last_start = Some(node.journal(
            agent,
            &Event::SkillStarted {
                task,
                step,
                call: index,
            },
        )?);
        to_run.push((index, call, resumed_after));
    }
    // One sync covers every start of the step (and the plan before it).
    if let Some(lsn) = last_start {
        node.durable(lsn).await?;
    }
    if to_run.len() == 1 {
        let (index, call, resumed_after) = to_run.swap_remove(0);
        return ctx.clone().run_call(step, index, call, resumed_after).await;
    }
    let handles: Vec<_> = to_run
        .into_iter()
        .map(|(index, call, resumed_after)| {
            tiffany_sched::spawn(ctx.clone().run_call(step, index, call, resumed_after))
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
