//! Program tasks: registered functions over a `Ctx`, journaled call by
//! call, re-run after a restart without repeating any journaled call.
//! Restarts in the same process stand in for crashes (the journal is in
//! the page cache, as after a SIGKILL).
#![allow(
    clippy::disallowed_methods,
    reason = "the test thread polls and reads files; no task blocks"
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{Counting, WAIT, config, last_of};
use tiffany_agent::{
    AgentOptions, CtxError, Effect, Node, NodeError, Programs, TaskState, TaskStatus, WaitOn,
};
use tiffany_llm::{BoxFuture, LlmRequest, Message, Role, Scripted};
use tiffany_skills::{BuiltinConfig, Registry, Skill, SkillCtx, SkillError, SkillOutput};

/// A non-idempotent skill that counts its runs; while `hold` is set a run
/// never returns (a skill in flight when the node stops).
struct Bump {
    runs: AtomicUsize,
    hold: AtomicBool,
    schema: serde_json::Value,
}

impl Bump {
    fn new() -> Arc<Bump> {
        Arc::new(Bump {
            runs: AtomicUsize::new(0),
            hold: AtomicBool::new(false),
            schema: serde_json::json!({"type": "object"}),
        })
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Skill for Bump {
    fn name(&self) -> &str {
        "bump"
    }

    fn description(&self) -> &str {
        "counts its runs"
    }

    fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn execute<'a>(
        &'a self,
        _: SkillCtx<'a>,
        _: serde_json::Value,
    ) -> BoxFuture<'a, Result<SkillOutput, SkillError>> {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if self.hold.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(SkillOutput {
                content: run.to_string(),
            })
        })
    }
}

fn registry(bump: &Arc<Bump>) -> Arc<Registry> {
    let mut registry = Registry::with_builtins(BuiltinConfig::default());
    registry.register(bump.clone()).unwrap();
    Arc::new(registry)
}

/// A planner that echoes the last user message.
fn echo() -> Arc<Counting> {
    Counting::new(Scripted::from_fn(|request| {
        let last = last_of(request, Role::User);
        Ok(Message::assistant(format!("echo: {last}")))
    }))
}

fn ask(text: &str) -> LlmRequest {
    LlmRequest {
        messages: vec![Message::user(text)],
        tools: Default::default(),
        max_tokens: None,
    }
}

fn open(dir: &Path, llm: Arc<Counting>, bump: &Arc<Bump>, programs: Programs) -> Node {
    Node::open_with(config(dir), llm, registry(bump), programs)
        .expect("open the node")
        .0
}

/// Polls until `done` holds for the task (a failure after `WAIT`).
fn wait_until(node: &Node, task: u64, what: &str, done: impl Fn(&TaskState) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !node.task(task).is_some_and(|t| done(&t)) {
        assert!(Instant::now() < deadline, "the task never {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn effect_names(state: &TaskState) -> Vec<&'static str> {
    state.effects.iter().map(|r| r.effect.name()).collect()
}

#[test]
fn every_ctx_call_is_journaled_and_children_are_joined() {
    let dir = tempfile::tempdir().unwrap();
    let mut programs = Programs::default();
    programs.register("double", |ctx, input| async move {
        ctx.now().await?;
        let n: u64 = input.parse().map_err(|_| CtxError::fail("not a number"))?;
        Ok((n * 2).to_string())
    });
    programs.register("orchestrate", |ctx, worker| async move {
        let worker: u64 = worker.parse().map_err(|_| CtxError::fail("no worker"))?;
        let started = ctx.now().await?;
        let planned = ctx.llm(ask("go")).await?;
        let wrote = ctx
            .skill("fs.write", r#"{"path": "note.txt", "content": "hi"}"#)
            .await?;
        ctx.sleep(Duration::from_millis(20)).await?;
        // Both children run while this task waits on the first.
        let react = ctx.spawn(worker, "answer at once");
        let program = ctx.spawn_program(worker, "double", "21");
        let (react, program) = (react.await?, program.await?);
        let first = ctx.join(react).await?;
        let second = ctx.join(program).await?;
        assert!(first.is_completed() && second.is_completed());
        let elapsed = ctx.now().await?.duration_since(started).unwrap();
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
        let failed = ctx.skill("fs.read", r#"{"path": "missing.txt"}"#).await;
        assert!(matches!(failed, Err(CtxError::Skill { .. })), "{failed:?}");
        Ok(format!(
            "{} | {wrote} | {} | {}",
            planned.message.content, first.text, second.text
        ))
    });
    let llm = echo();
    let bump = Bump::new();
    let node = open(dir.path(), llm.clone(), &bump, programs);
    let boss = node.create_agent(AgentOptions::new("boss")).unwrap();
    let worker = node.create_agent(AgentOptions::new("worker")).unwrap();
    let task = node
        .submit_program(boss, "orchestrate", &worker.to_string())
        .unwrap();
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    let answer = state.outcome.clone().unwrap();
    assert!(answer.starts_with("echo: go | "), "{answer}");
    assert!(answer.ends_with(" | echo: answer at once | 42"), "{answer}");
    assert_eq!(
        effect_names(&state),
        [
            "clock", "answered", "ran", "timer", "spawned", "spawned", "joined", "joined", "clock",
            "ran"
        ]
    );
    assert_eq!(state.steps, 1, "one planner answer");
    assert_eq!(state.program.as_deref(), Some("orchestrate"));
    // The planner was asked twice: once by the program, once by the ReAct
    // child.
    assert_eq!(llm.count(), 2);
    let table = node.table();
    let children: Vec<&TaskState> = table
        .tasks
        .values()
        .filter(|t| t.parent == Some(task))
        .collect();
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|c| c.agent == worker));
    assert!(children.iter().all(|c| c.status == TaskStatus::Completed));
    let note = dir.path().join("workspaces/boss/note.txt");
    assert_eq!(std::fs::read_to_string(note).unwrap(), "hi");
    node.shutdown().unwrap();

    // The journal alone gives the same table.
    let (replayed, _) = tiffany_agent::inspect(dir.path()).unwrap();
    assert_eq!(replayed.tasks[&task].effects, state.effects);
    assert_eq!(replayed.tasks[&task].outcome, state.outcome);
}

fn long_program(programs: &mut Programs, sleep: Duration) {
    programs.register("long", move |ctx, _| async move {
        let first = ctx.skill("bump", "{}").await?;
        let planned = ctx.llm(ask("plan")).await?;
        ctx.sleep(sleep).await?;
        let second = ctx.skill("bump", "{}").await?;
        Ok(format!("{first} {} {second}", planned.message.content))
    });
}

#[test]
fn a_reopened_node_reruns_the_program_without_repeating_journaled_calls() {
    let dir = tempfile::tempdir().unwrap();
    let sleep = Duration::from_millis(600);
    let mut programs = Programs::default();
    long_program(&mut programs, sleep);
    let (llm, bump) = (echo(), Bump::new());
    let node = open(dir.path(), llm.clone(), &bump, programs.clone());
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let task = node.submit_program(agent, "long", "").unwrap();
    wait_until(&node, task, "reached its timer", |t| {
        t.status == TaskStatus::Waiting(WaitOn::Timer)
    });
    let until_ms = match node.task(task).unwrap().effects[2].effect {
        Effect::Timer { until_ms } => until_ms,
        ref other => panic!("{other:?}"),
    };
    drop(node);
    assert_eq!((bump.runs(), llm.count()), (1, 1));

    let second_llm = echo();
    let (node, recovery) = Node::open_with(
        config(dir.path()),
        second_llm.clone(),
        registry(&bump),
        programs,
    )
    .unwrap();
    assert_eq!((recovery.resumed, recovery.missing_programs), (1, 0));
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Completed, "{state:?}");
    // The first bump and the planner answer came from the journal; the
    // timer kept its deadline.
    assert_eq!(state.outcome.as_deref(), Some("1 echo: plan 2"));
    assert_eq!((bump.runs(), second_llm.count()), (2, 0));
    assert_eq!(
        state.effects[2].effect,
        Effect::Timer { until_ms },
        "the deadline is journaled once"
    );
    let now_ms = UNIX_EPOCH.elapsed().unwrap().as_millis() as u64;
    assert!(now_ms >= until_ms, "woke before the journaled deadline");
}

#[test]
fn a_non_idempotent_skill_in_flight_is_reported_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut programs = Programs::default();
    programs.register("hold", |ctx, _| async move {
        match ctx.skill("bump", "{}").await {
            Err(CtxError::Interrupted { skill }) => Ok(format!("{skill} was interrupted")),
            other => Ok(format!("unexpected: {other:?}")),
        }
    });
    let (llm, bump) = (echo(), Bump::new());
    bump.hold.store(true, Ordering::SeqCst);
    let node = open(dir.path(), llm.clone(), &bump, programs.clone());
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let task = node.submit_program(agent, "hold", "").unwrap();
    wait_until(&node, task, "started its skill", |_| bump.runs() == 1);
    assert_eq!(
        node.task(task).unwrap().status,
        TaskStatus::Waiting(WaitOn::Skill)
    );
    drop(node);

    let node = open(dir.path(), llm, &bump, programs);
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.outcome.as_deref(), Some("bump was interrupted"));
    assert_eq!(bump.runs(), 1, "never run twice");
    assert_eq!(state.interrupted, 1);
}

#[test]
fn a_program_that_changes_its_calls_fails_as_nondeterministic() {
    static SECOND_RUN: AtomicBool = AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    let mut programs = Programs::default();
    programs.register("fickle", |ctx, _| async move {
        if SECOND_RUN.load(Ordering::SeqCst) {
            ctx.now().await?;
        } else {
            ctx.sleep(Duration::from_secs(3600)).await?;
        }
        Ok("done".to_owned())
    });
    let (llm, bump) = (echo(), Bump::new());
    let node = open(dir.path(), llm.clone(), &bump, programs.clone());
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let task = node.submit_program(agent, "fickle", "").unwrap();
    wait_until(&node, task, "reached its timer", |t| !t.effects.is_empty());
    drop(node);

    SECOND_RUN.store(true, Ordering::SeqCst);
    let node = open(dir.path(), llm, &bump, programs);
    let state = node.wait(task, WAIT).unwrap();
    assert_eq!(state.status, TaskStatus::Failed);
    let error = state.outcome.unwrap();
    assert!(
        error.contains("call 0 (now) differs from the journal"),
        "{error}"
    );
}

#[test]
fn unknown_and_missing_programs_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut programs = Programs::default();
    long_program(&mut programs, Duration::from_secs(3600));
    let (llm, bump) = (echo(), Bump::new());
    let node = open(dir.path(), llm.clone(), &bump, programs);
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let error = node.submit_program(agent, "nope", "").unwrap_err();
    assert!(matches!(error, NodeError::UnknownProgram(ref p) if p == "nope"));
    assert_eq!(error.to_string(), "no program `nope` is registered");
    assert!(matches!(
        node.submit_program(99, "long", ""),
        Err(NodeError::UnknownAgent(_))
    ));
    let task = node.submit_program(agent, "long", "").unwrap();
    wait_until(&node, task, "reached its timer", |t| {
        t.status == TaskStatus::Waiting(WaitOn::Timer)
    });
    node.shutdown().unwrap();

    // A node without the program keeps the task, unfinished and untouched.
    let (node, recovery) = Node::open_with(
        config(dir.path()),
        llm,
        registry(&bump),
        Programs::default(),
    )
    .unwrap();
    assert_eq!((recovery.resumed, recovery.missing_programs), (1, 1));
    std::thread::sleep(Duration::from_millis(50));
    let state = node.task(task).unwrap();
    assert_eq!(state.status, TaskStatus::Waiting(WaitOn::Timer));
    assert_eq!(state.effects.len(), 3);
    assert_eq!(bump.runs(), 1);
}

#[test]
fn a_program_asks_the_planner_within_the_task_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let mut programs = Programs::default();
    programs.register("chatty", |ctx, _| async move {
        ctx.llm(ask("one")).await?;
        match ctx.llm(ask("two")).await {
            Err(CtxError::Budget(reason)) => Ok(reason),
            other => Ok(format!("unexpected: {other:?}")),
        }
    });
    let (llm, bump) = (echo(), Bump::new());
    let mut cfg = config(dir.path());
    cfg.budgets.max_steps = 1;
    let (node, _) = Node::open_with(cfg, llm.clone(), registry(&bump), programs).unwrap();
    let agent = node.create_agent(AgentOptions::new("a")).unwrap();
    let task = node.submit_program(agent, "chatty", "").unwrap();
    let state = node.wait(task, WAIT).unwrap();
    let reason = state.outcome.unwrap();
    assert!(reason.starts_with("step budget exhausted"), "{reason}");
    assert_eq!(llm.count(), 1);
}
