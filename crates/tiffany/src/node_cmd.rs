//! `tiffany demo`, `tiffany run` and `tiffany tasks`: a node on the
//! command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tiffany_agent::{
    ActivityKind, AgentOptions, Filter, Node, NodeStats, Received, Table, TaskState, TaskStatus,
};
use tiffany_llm::{LlmProvider, OpenAiCompatible, OpenAiConfig, Role, Scripted, Step};
use tiffany_skills::Registry;

use crate::config::{self, LlmChoice, Settings};
use crate::demo_plan;

/// Options every node command shares.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Settings file (TOML); `TIFFANY_*` variables override it
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where the journal and workspaces go [default: a fresh directory]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How many agents (one task each)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    agents: usize,
    /// Do not draw the progress bar
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The instruction
    instruction: String,
    /// Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:11434/v1)
    #[arg(long, value_name = "URL")]
    llm: Option<String>,
    /// Model name at that server
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Where the journal and workspace go [default: a fresh directory]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the activity stream as JSON lines (one PAL event per line)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// One line per task: id, agent, status, steps
    List(TasksArgs),
    /// One task in full: its conversation and outcome
    Show {
        /// The task id
        id: u64,
        #[command(flatten)]
        args: TasksArgs,
    },
    /// What a restart would do: tasks to resume, finished, interrupted skills
    Inspect(TasksArgs),
    /// Re-ask the planner every journaled step (running nothing) and report
    /// where its answers differ from the journal; exit status 1 if any do
    Replay {
        #[command(flatten)]
        args: TasksArgs,
        /// Base URL of an OpenAI-compatible server [default: the demo's offline planner]
        #[arg(long, value_name = "URL")]
        llm: Option<String>,
        /// Model name at that server
        #[arg(long, value_name = "MODEL", requires = "llm")]
        model: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// One line per agent: id, name, priority, tasks, unfinished, tokens
    List(TasksArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// The node's data directory
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

fn settings(args: &NodeArgs) -> Result<Settings> {
    config::load(args.config.as_deref())?.resolve()
}

/// A fresh directory for a run without `--data-dir`.
#[allow(clippy::disallowed_methods, reason = "the CLI's main thread")]
fn fresh_dir(prefix: &str) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        stamp.as_secs(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn provider(
    choice: &LlmChoice,
    scripted: impl FnOnce() -> Scripted,
) -> Result<Arc<dyn LlmProvider>> {
    Ok(match choice {
        LlmChoice::Scripted => Arc::new(scripted()),
        LlmChoice::Remote {
            url,
            model,
            api_key,
            timeout,
            max_retries,
        } => {
            let mut config = OpenAiConfig::new(url.clone(), model.clone());
            config.api_key = api_key.clone();
            config.request_timeout = *timeout;
            config.max_retries = *max_retries;
            Arc::new(
                OpenAiCompatible::new(config.or_env_api_key())
                    .context("cannot set up the LLM client")?,
            )
        }
    })
}

fn open(
    settings: &Settings,
    data_dir: PathBuf,
    llm: Arc<dyn LlmProvider>,
) -> Result<(Node, tiffany_agent::Recovery)> {
    let mut config = settings.node.clone();
    config.data_dir = data_dir;
    let skills = Arc::new(Registry::with_builtins(settings.skills.clone()));
    let dir = config.data_dir.clone();
    Node::open(config, llm, skills)
        .with_context(|| format!("cannot open the node in {}", dir.display()))
}

/// Demo tasks kept active per core when `max_active_tasks` is not set.
const DEMO_ACTIVE_PER_CORE: usize = 16;

pub(crate) fn demo(node_args: &NodeArgs, args: &DemoArgs) -> Result<()> {
    let settings = settings(node_args)?;
    let data_dir = match args.data_dir.clone().or_else(|| settings.data_dir.clone()) {
        Some(dir) => dir,
        None => fresh_dir("tiffany-demo")?,
    };
    println!("data: {}", data_dir.display());
    let llm = provider(&settings.llm, demo_plan::planner)?;
    let mut settings = settings;
    if settings.node.max_active_tasks.is_none() {
        // Every demo step starts processes: past a few dozen at once per
        // core they only queue for the CPU and stretch every cycle.
        let cores = settings.node.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        });
        settings.node.max_active_tasks = Some(DEMO_ACTIVE_PER_CORE * cores);
    }
    let started = Instant::now();
    let (node, recovery) = open(&settings, data_dir.clone(), llm)?;
    if recovery.agents > 0 {
        println!(
            "resumed {} unfinished tasks ({} already finished, {} journal records replayed in {:.0?}{})",
            recovery.resumed,
            recovery.finished,
            recovery.records,
            started.elapsed(),
            if recovery.clean_shutdown {
                ""
            } else {
                "; the last run did not shut down cleanly"
            },
        );
    }
    let submitted = ensure_demo_tasks(&node, args.agents)?;
    if submitted > 0 {
        println!("submitted {submitted} new tasks to {} agents", args.agents);
    }
    let total = node.table().tasks.len();
    follow(&node, total, args.quiet);
    let stats = node.stats();
    let table = node.table();
    node.shutdown()
        .context("cannot shut the node down cleanly")?;
    print_summary(&table, &stats, started.elapsed(), &data_dir);
    Ok(())
}

/// Creates the demo's agents and tasks that do not exist yet (all of them
/// on a fresh directory, the missing ones after a crash during setup).
fn ensure_demo_tasks(node: &Node, agents: usize) -> Result<usize> {
    let table = node.table();
    let mut submitted = 0;
    for index in 0..agents {
        let name = format!("agent-{index:04}");
        let agent = match node.agent_id(&name) {
            Some(id) => id,
            None => node.create_agent(AgentOptions::new(&name))?,
        };
        if !table.tasks.values().any(|t| t.agent == agent) {
            node.submit(agent, &demo_plan::instruction(index))?;
            submitted += 1;
        }
    }
    node.flush()?;
    Ok(submitted)
}

/// Shows progress until every task is finished.
fn follow(node: &Node, total: usize, quiet: bool) {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let unfinished = node.wait_idle(Duration::from_millis(200));
        let stats = node.stats();
        bar.set_position((total - unfinished) as u64);
        bar.set_message(format!(
            "{} steps, cycle p50 {} us",
            stats.steps, stats.cycle_p50_us
        ));
        if unfinished == 0 {
            break;
        }
    }
    bar.finish_and_clear();
}

fn print_summary(table: &Table, stats: &NodeStats, elapsed: Duration, data_dir: &Path) {
    let count = |s: TaskStatus| table.tasks.values().filter(|t| t.status == s).count();
    let failed_answers = table
        .tasks
        .values()
        .filter(|t| {
            t.outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("failed"))
        })
        .count();
    println!(
        "tasks: {} completed ({} reporting a failed check), {} failed, {} cancelled",
        count(TaskStatus::Completed),
        failed_answers,
        count(TaskStatus::Failed),
        count(TaskStatus::Cancelled)
    );
    println!(
        "steps: {} planner answers journaled; {} cycles ran in this run",
        stats.steps, stats.cycles
    );
    println!(
        "cycle time: p50 {:.2} ms, p99 {:.2} ms (spec target < 1,500 ms per cycle)",
        stats.cycle_p50_us as f64 / 1000.0,
        stats.cycle_p99_us as f64 / 1000.0
    );
    println!("wall time: {elapsed:.2?}");
    println!(
        "data: {} (journal in wal/, workspaces in workspaces/)",
        data_dir.display()
    );
    println!("see: tiffany tasks list --data-dir {}", data_dir.display());
}

pub(crate) fn run(node_args: &NodeArgs, args: &RunArgs) -> Result<()> {
    let mut settings = settings(node_args)?;
    if let Some(url) = &args.llm {
        let model = args
            .model
            .clone()
            .unwrap_or_else(|| "gpt-4o-mini".to_owned());
        let (api_key, timeout, max_retries) = match &settings.llm {
            LlmChoice::Remote {
                api_key,
                timeout,
                max_retries,
                ..
            } => (api_key.clone(), *timeout, *max_retries),
            LlmChoice::Scripted => (None, Duration::from_secs(60), 3),
        };
        settings.llm = LlmChoice::Remote {
            url: url.clone(),
            model,
            api_key,
            timeout,
            max_retries,
        };
    }
    let data_dir = match args.data_dir.clone().or_else(|| settings.data_dir.clone()) {
        Some(dir) => dir,
        None => fresh_dir("tiffany-run")?,
    };
    eprintln!("data: {}", data_dir.display());
    // Offline, the instruction is run as one shell command line.
    let instruction = args.instruction.clone();
    let llm = provider(&settings.llm, || offline_planner(&instruction))?;
    let (node, _) = open(&settings, data_dir, llm)?;
    let agent = match node.agent_id("main") {
        Some(id) => id,
        None => node.create_agent(AgentOptions::new("main"))?,
    };
    let mut pal = node.pal().subscribe(Filter {
        agent: Some(agent),
        task: None,
    });
    let task = node.submit(agent, &args.instruction)?;
    let mut out = std::io::stdout().lock();
    let final_state = loop {
        match pal.blocking_recv() {
            Received::Event(a) if a.task == task => {
                if args.json {
                    serde_json::to_writer(&mut out, &a)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{}", describe(&a.kind))?;
                }
                if matches!(
                    a.kind,
                    ActivityKind::Completed { .. } | ActivityKind::Failed { .. }
                ) {
                    break node.task(task);
                }
            }
            Received::Event(_) => {}
            Received::Lagged(n) => writeln!(out, "({n} events not shown)")?,
            Received::Closed => break node.task(task),
        }
    };
    node.shutdown()?;
    match final_state {
        Some(t) if t.status == TaskStatus::Completed => Ok(()),
        Some(t) => anyhow::bail!(
            "task {} {}: {}",
            t.id,
            t.status.as_str(),
            t.outcome.unwrap_or_default()
        ),
        None => anyhow::bail!("task {task} vanished"),
    }
}

/// Without an LLM, `run` treats the instruction as a program and its
/// arguments, runs it with `shell`, and answers with its output.
fn offline_planner(instruction: &str) -> Scripted {
    let mut words = instruction.split_whitespace().map(str::to_owned);
    let program = words.next().unwrap_or_default();
    let args: Vec<String> = words.collect();
    Scripted::steps(vec![
        Step::call(
            "shell",
            serde_json::json!({ "program": program, "args": args }),
        ),
        Step::answer(format!("ran `{instruction}`")),
    ])
}

fn describe(kind: &ActivityKind) -> String {
    match kind {
        ActivityKind::ReceivedInstruction {
            instruction,
            resumed,
        } => {
            format!(
                "{} {instruction}",
                if *resumed { "resumed:" } else { "instruction:" }
            )
        }
        ActivityKind::WaitingForLlm { step } => format!("planning step {step}..."),
        ActivityKind::SkillStart { skill, arguments } => format!("  -> {skill} {arguments}"),
        ActivityKind::SkillComplete { skill, ok, micros } => {
            format!(
                "  <- {skill} {} in {:.1} ms",
                if *ok { "ok" } else { "failed" },
                *micros as f64 / 1000.0
            )
        }
        ActivityKind::SkillInterrupted { skill } => {
            format!("  !! {skill} was interrupted by a restart")
        }
        ActivityKind::Idle => "idle".to_owned(),
        ActivityKind::Parked => "parked".to_owned(),
        ActivityKind::Completed { answer } => format!("completed: {answer}"),
        ActivityKind::Failed { error } => format!("failed: {error}"),
    }
}

pub(crate) fn agents(command: &AgentsCommand) -> Result<()> {
    let AgentsCommand::List(args) = command;
    let (table, _) = tiffany_agent::inspect(&args.data_dir)
        .with_context(|| format!("cannot read the node in {}", args.data_dir.display()))?;
    let mut counts: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for t in table.tasks.values() {
        *counts.entry(t.agent).or_default() += 1;
    }
    let mut out = std::io::stdout().lock();
    let rows = table.agents.values().map(|a| {
        let usage = table.usage_of(a.id);
        let tasks = counts.get(&a.id).copied().unwrap_or(0);
        (a, tasks, table.unfinished_of(a.id), usage)
    });
    if args.json {
        let rows: Vec<_> = rows
            .map(|(a, tasks, unfinished, usage)| {
                serde_json::json!({
                    "id": a.id,
                    "name": a.name,
                    "namespace": a.namespace,
                    "priority": a.priority.as_str(),
                    "grants": a.grants,
                    "workspace": a.workspace,
                    "tasks": tasks,
                    "unfinished": unfinished,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<16} {:<10} {:>6} {:>10} {:>10}",
        "id", "name", "priority", "tasks", "unfinished", "tokens"
    )?;
    for (a, tasks, unfinished, usage) in rows {
        writeln!(
            out,
            "{:>6}  {:<16} {:<10} {:>6} {:>10} {:>10}",
            a.id,
            a.name,
            a.priority.as_str(),
            tasks,
            unfinished,
            usage.total()
        )?;
    }
    Ok(())
}

pub(crate) fn tasks(command: &TasksCommand) -> Result<()> {
    let args = match command {
        TasksCommand::List(a) | TasksCommand::Inspect(a) | TasksCommand::Show { args: a, .. } => a,
        TasksCommand::Replay { args, llm, model } => {
            return replay(args, llm.as_deref(), model.as_deref());
        }
    };
    let (table, recovery) = tiffany_agent::inspect(&args.data_dir)
        .with_context(|| format!("cannot read the node in {}", args.data_dir.display()))?;
    let agent_name = |id: u64| {
        table
            .agents
            .get(&id)
            .map_or_else(|| id.to_string(), |a| a.name.clone())
    };
    let mut out = std::io::stdout().lock();
    match command {
        TasksCommand::List(_) => {
            if args.json {
                let rows: Vec<_> = table
                    .tasks
                    .values()
                    .map(|t| summary_json(t, &agent_name(t.agent)))
                    .collect();
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:>8}  {:<16} {:<10} {:>5}  outcome",
                    "id", "agent", "status", "steps"
                )?;
                for t in table.tasks.values() {
                    let outcome = t
                        .outcome
                        .as_deref()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("");
                    writeln!(
                        out,
                        "{:>8}  {:<16} {:<10} {:>5}  {outcome}",
                        t.id,
                        agent_name(t.agent),
                        t.status.as_str(),
                        t.steps
                    )?;
                }
            }
        }
        TasksCommand::Show { id, .. } => {
            let t = table
                .tasks
                .get(id)
                .with_context(|| format!("no task {id} in {}", args.data_dir.display()))?;
            if args.json {
                let mut v = summary_json(t, &agent_name(t.agent));
                v["conversation"] = serde_json::to_value(&t.conversation)?;
                v["effects"] = t.effects.iter().map(|r| r.effect.to_json()).collect();
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "task {} of {} — {} after {} steps, {} tokens",
                    t.id,
                    agent_name(t.agent),
                    t.status.as_str(),
                    t.steps,
                    t.usage.total()
                )?;
                match &t.program {
                    Some(program) => writeln!(out, "program: {program}, input: {}", t.instruction)?,
                    None => writeln!(out, "instruction: {}", t.instruction)?,
                }
                if let Some(parent) = t.parent {
                    writeln!(out, "spawned by task {parent}")?;
                }
                for (seq, record) in t.effects.iter().enumerate() {
                    writeln!(out, "  call {seq}: {}", record.effect.to_json())?;
                }
                for m in &t.conversation {
                    let who = match m.role {
                        Role::System => continue,
                        Role::User => "user",
                        Role::Assistant => "planner",
                        Role::Tool => "result",
                    };
                    for c in &m.tool_calls {
                        writeln!(out, "  {who}: call {} {}", c.name, c.arguments)?;
                    }
                    if !m.content.is_empty() {
                        let text = m.content.trim_end().replace('\n', "\n      ");
                        writeln!(out, "  {who}: {text}")?;
                    }
                }
                if let Some(outcome) = &t.outcome {
                    writeln!(out, "outcome: {outcome}")?;
                }
            }
        }
        TasksCommand::Replay { .. } => unreachable!("handled above"),
        TasksCommand::Inspect(_) => {
            let interrupted: u32 = table.tasks.values().map(|t| t.interrupted).sum();
            let v = serde_json::json!({
                "agents": recovery.agents,
                "tasks": table.tasks.len(),
                "finished": recovery.finished,
                "to_resume": recovery.resumed,
                "records_replayed": recovery.records,
                "from_snapshot_lsn": recovery.snapshot.map(|l| l.0),
                "clean_shutdown": recovery.clean_shutdown,
                "interrupted_skills": interrupted,
            });
            if args.json {
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{} agents, {} tasks: {} finished, {} would resume",
                    recovery.agents,
                    table.tasks.len(),
                    recovery.finished,
                    recovery.resumed
                )?;
                writeln!(
                    out,
                    "journal: {} records replayed{}; last shutdown {}",
                    recovery.records,
                    recovery
                        .snapshot
                        .map_or(String::new(), |l| format!(" after the snapshot at LSN {l}")),
                    if recovery.clean_shutdown {
                        "clean"
                    } else {
                        "not clean (crash or kill)"
                    }
                )?;
                writeln!(
                    out,
                    "non-idempotent skills reported after crashes: {interrupted}"
                )?;
            }
        }
    }
    Ok(())
}

/// `tasks replay`: the audit recovery mode.
fn replay(args: &TasksArgs, llm: Option<&str>, model: Option<&str>) -> Result<()> {
    let choice = match llm {
        None => LlmChoice::Scripted,
        Some(url) => LlmChoice::Remote {
            url: url.to_owned(),
            model: model.unwrap_or("gpt-4o-mini").to_owned(),
            api_key: None,
            timeout: Duration::from_secs(60),
            max_retries: 3,
        },
    };
    let planner = provider(&choice, demo_plan::planner)?;
    let skills = Registry::with_builtins(tiffany_skills::BuiltinConfig::default());
    let tools: Vec<_> = skills
        .tool_specs(&tiffany_skills::Grants::All)
        .into_iter()
        .map(|s| tiffany_llm::ToolSpec {
            name: s.name.to_owned(),
            description: s.description.to_owned(),
            parameters: s.schema.clone(),
        })
        .collect();
    let audit = tiffany_agent::audit(&args.data_dir, &planner, &tools)
        .with_context(|| format!("cannot audit the node in {}", args.data_dir.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let divergences: Vec<_> = audit
            .divergences
            .iter()
            .map(|d| {
                serde_json::json!({
                    "task": d.task, "step": d.step, "journaled": d.journaled,
                    "replayed": d.replayed.as_ref().map_or_else(|e| serde_json::json!({"error": e}), |m| serde_json::json!(m)),
                })
            })
            .collect();
        let v = serde_json::json!({
            "tasks": audit.tasks, "skipped": audit.skipped, "steps": audit.steps, "divergences": divergences,
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} tasks audited ({} skipped: finished before the oldest snapshot the log holds), {} steps re-asked, {} diverged",
            audit.tasks,
            audit.skipped,
            audit.steps,
            audit.divergences.len()
        )?;
        for d in &audit.divergences {
            let replayed = match &d.replayed {
                Ok(m) => serde_json::to_string(m)?,
                Err(e) => format!("error: {e}"),
            };
            writeln!(
                out,
                "task {} step {}:\n  journal: {}\n  now:     {replayed}",
                d.task,
                d.step,
                serde_json::to_string(&d.journaled)?
            )?;
        }
    }
    out.flush()?;
    if !audit.divergences.is_empty() {
        anyhow::bail!(
            "the planner diverged from the journal at {} steps",
            audit.divergences.len()
        );
    }
    Ok(())
}

fn summary_json(t: &TaskState, agent: &str) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "agent": agent,
        "agent_id": t.agent,
        "status": t.status.as_str(),
        "waiting_on": t.status.waiting_on(),
        "steps": t.steps,
        "tokens": t.usage.total(),
        "instruction": t.instruction,
        "outcome": t.outcome,
        "interrupted_skills": t.interrupted,
        "program": t.program,
        "parent": t.parent,
    })
}
