//! The crash test: `tiffany demo --agents 200` against the mock LLM server,
//! killed with SIGKILL at random moments and restarted on the same data
//! directory, again and again, then run to the end. Every task must
//! complete, and the mock must never be asked again for a step whose
//! answer the killed node had journaled.
//!
//! What may legitimately repeat: an answer the mock sent that the node had
//! not journaled before the kill. So the check is against the journal as
//! the kill left it (read in-process with `tiffany_agent::inspect`): after
//! each kill, a task with `n` journaled planner answers may only be asked
//! for steps `n` and later by the next run.
//!
//! Each run sends its own model name (`mock-gen-<g>`), so every request the
//! mock records belongs to exactly one process.
//!
//! Knobs: `TIFFANY_CRASH_SEED` (default fixed) and `TIFFANY_CRASH_KILLS`
//! (default 20).

// Spawning, waiting for and killing the node process is what this test
// does, from the test's own thread.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tiffany_testkit::{MockLlmServer, MockReply, MockRequest, Rng};

use common::tiffany;

const AGENTS: usize = 200;
/// The longest a run to the end may take before the test gives up.
const FINAL_RUN: Duration = Duration::from_secs(120);

/// One request the mock answered: which run asked, for which task
/// (its instruction), at which step.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Asked {
    generation: u32,
    instruction: String,
    step: usize,
}

/// The release number in the demo's instruction ("Maintain release 17: ...").
fn release_of(instruction: &str) -> &str {
    instruction
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .trim_end_matches(':')
}

/// The plan, a pure function of the conversation: write a file and call
/// `noop` in parallel, read the file back with an idempotent `shell`, then
/// answer whether every observation was what it should be.
fn plan(request: &MockRequest) -> MockReply {
    let instruction = request
        .messages
        .iter()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.clone())
        .unwrap_or_default();
    let release = release_of(&instruction);
    let content = format!("release {release}\n");
    match request.step() {
        0 => MockReply::ToolCalls(vec![
            (
                "fs__write".into(),
                json!({"path": "release/NOTES", "content": content}),
            ),
            ("noop".into(), json!({"release": release})),
        ]),
        1 => MockReply::ToolCalls(vec![(
            "shell".into(),
            json!({"program": "cat", "args": ["release/NOTES"], "idempotent": true}),
        )]),
        _ => {
            let results: Vec<&str> = request
                .messages
                .iter()
                .filter(|m| m.role == "tool")
                .filter_map(|m| m.content.as_deref())
                .collect();
            let good = results.len() == 3
                && !results.iter().any(|r| r.starts_with("error"))
                && results.last().is_some_and(|r| r.contains(&content));
            if good {
                MockReply::Answer(format!("ok {release}"))
            } else {
                MockReply::Answer(format!("bad {release}: {results:?}"))
            }
        }
    }
}

fn spawn(dir: &Path, url: &str, generation: u32) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tiffany"));
    // Only the settings this test gives.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TIFFANY_")) {
        command.env_remove(name);
    }
    command
        .args([
            "demo",
            "--agents",
            &AGENTS.to_string(),
            "--quiet",
            "--data-dir",
        ])
        .arg(dir)
        .env("TIFFANY_LLM_URL", url)
        .env("TIFFANY_LLM_MODEL", format!("mock-gen-{generation}"))
        .env("TIFFANY_LLM_TIMEOUT_MS", "20000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tiffany demo")
}

/// Planner answers journaled per task (by instruction), as the node in
/// `dir` left them.
fn journaled_steps(dir: &Path) -> BTreeMap<String, u32> {
    if !dir.join("wal").exists() {
        // Killed before it created its journal.
        return BTreeMap::new();
    }
    let (table, _) = tiffany_agent::inspect(dir).expect("read the killed node's journal");
    table
        .tasks
        .values()
        .map(|t| (t.instruction.clone(), t.steps))
        .collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn crash_sigkill_loop_completes_every_task_and_never_reasks_a_journaled_step() {
    let seed: u64 = env_or("TIFFANY_CRASH_SEED", 0x71ff_a11e);
    let kills: u32 = env_or("TIFFANY_CRASH_KILLS", 20);
    eprintln!("seed {seed:#x}, {kills} kills (TIFFANY_CRASH_SEED, TIFFANY_CRASH_KILLS)");
    let mut rng = Rng::new(seed);

    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    let per_generation: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let server = {
        let asked = Arc::clone(&asked);
        let per_generation = Arc::clone(&per_generation);
        MockLlmServer::with_responder(move |request| {
            let generation = request
                .model
                .strip_prefix("mock-gen-")
                .and_then(|g| g.parse().ok())
                .unwrap_or(u32::MAX);
            let instruction = request
                .messages
                .iter()
                .find(|m| m.role == "user")
                .and_then(|m| m.content.clone())
                .unwrap_or_default();
            asked.lock().unwrap().push(Asked {
                generation,
                instruction,
                step: request.step(),
            });
            *per_generation
                .lock()
                .unwrap()
                .entry(generation)
                .or_default() += 1;
            plan(request)
        })
    };
    let requests_of = |generation: u32| {
        per_generation
            .lock()
            .unwrap()
            .get(&generation)
            .copied()
            .unwrap_or(0)
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let started = Instant::now();
    // What the journal held at the latest kill, per task.
    let mut journaled: BTreeMap<String, u32> = BTreeMap::new();
    // The journal as each kill left it: the floor for the next run's steps.
    let mut floors: Vec<BTreeMap<String, u32>> = Vec::new();
    let mut generation = 0;
    while generation < kills {
        let mut child = spawn(&data, &server.url(), generation);
        // Mostly: let the run make some progress (a few planner requests),
        // then wait a random moment more (a skill, a sync, a request may be
        // in flight). Sometimes: kill it at a random moment after it
        // started, wherever it is (recovery, setup). Progress per run is
        // bounded by requests, not time, so a faster machine still gets
        // every kill in before the work runs out (about 700 requests).
        let early = rng.chance(1, 5);
        let wait_for = if early { 0 } else { rng.range(1, 12) };
        let deadline = Instant::now() + FINAL_RUN;
        let mut finished = false;
        while requests_of(generation) < wait_for && !finished {
            finished = child.try_wait().unwrap().is_some();
            assert!(
                Instant::now() < deadline,
                "run {generation} made no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if !finished {
            std::thread::sleep(Duration::from_millis(
                rng.range(0, if early { 100 } else { 15 }),
            ));
        }
        if let Some(status) = child.try_wait().unwrap() {
            // It finished every task first: no more kills are possible.
            assert!(status.success(), "run {generation} ended with {status}");
            break;
        }
        child.kill().expect("SIGKILL the node");
        child.wait().unwrap();

        let now = journaled_steps(&data);
        for (instruction, &steps) in &journaled {
            let after = now.get(instruction).copied().unwrap_or(0);
            assert!(
                after >= steps,
                "kill {generation}: `{instruction}` had {steps} journaled answers, now {after}"
            );
        }
        journaled = now;
        floors.push(journaled.clone());
        generation += 1;
    }
    let killed_in = started.elapsed();

    // The last run, to the end.
    let mut child = spawn(&data, &server.url(), generation);
    let deadline = Instant::now() + FINAL_RUN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the final run did not finish within {FINAL_RUN:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read as _;
        err.read_to_string(&mut stderr).unwrap();
    }
    assert!(status.success(), "final run: {status}\n{stderr}");
    eprintln!(
        "{} kills in {killed_in:.1?}, final run done at {:.1?}, {} requests",
        floors.len(),
        started.elapsed(),
        server.request_count()
    );
    assert!(
        floors.len() as u32 >= kills.min(20),
        "only {} kills before the run finished",
        floors.len()
    );

    // Every task completed, with the answer of a plan whose every step saw
    // the right observations.
    let out = tiffany(&[
        "tasks",
        "list",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let tasks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tasks.len(), AGENTS);
    for task in &tasks {
        let release = release_of(task["instruction"].as_str().unwrap());
        assert_eq!(task["status"], "completed", "{task:#}");
        assert_eq!(task["outcome"], format!("ok {release}"), "{task:#}");
        assert_eq!(task["steps"], 3, "{task:#}");
    }

    // No step whose answer was journaled was ever asked again, and no run
    // asked for the same step twice.
    let asked = asked.lock().unwrap();
    let mut seen: HashMap<(u32, &str, usize), usize> = HashMap::new();
    for a in asked.iter() {
        *seen
            .entry((a.generation, &a.instruction, a.step))
            .or_default() += 1;
        if a.generation == 0 {
            continue;
        }
        let floor = &floors[a.generation as usize - 1];
        let journaled = floor.get(&a.instruction).copied().unwrap_or(0) as usize;
        assert!(
            a.step >= journaled,
            "run {} asked step {} of `{}`, whose answers 0..{journaled} the journal held at the kill before",
            a.generation,
            a.step,
            release_of(&a.instruction)
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "asked twice within one run: {twice:?}");
    // Across all runs, each task's steps were answered at least once.
    assert!(asked.len() >= 3 * AGENTS, "{} requests", asked.len());
}
