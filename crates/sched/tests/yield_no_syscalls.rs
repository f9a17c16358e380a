//! An explicit yield makes no system call.
//!
//! The test re-runs its own binary (this test only, in "child mode") under
//! `strace -f`, once with 100,000 yields and once with 1,000,000, in one
//! task on a runtime with the I/O driver on, and compares the system calls
//! made by the worker thread that ran the yields: if a yield made even one
//! system call in a thousand, the larger run would make hundreds more.
//!
//! Only the worker's own thread is counted. Other threads of the runtime
//! make system calls in proportion to how long the run lasts, not to how
//! many yields it makes (the long-poll watchdog wakes every half threshold
//! while a worker is busy), so the process total grows with the run time;
//! it is printed for information. `strace` is required: CI installs it
//! (`scripts/install-deps`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tiffany_sched::{Runtime, yield_now};

const TEST_NAME: &str = "yield_makes_no_system_call";
/// Set in the child's environment to the number of yields to run.
const CHILD_ENV: &str = "TIFFANY_SCHED_YIELD_CHILD_YIELDS";
/// Thread-name prefix of the child's runtime; its worker is `<prefix>-0`.
const THREAD_PREFIX: &str = "yield-probe";

/// Most extra system calls the worker may make in the 1M-yield run over the
/// 100k one (start-up and shutdown are the same in both; 900,000 more
/// yields must add none).
const TOLERANCE: u64 = 100;

#[test]
#[allow(clippy::disallowed_methods)] // runs strace from the test thread, not a task
fn yield_makes_no_system_call() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        match mode.strip_prefix("control:") {
            Some(yields) => child(yields.parse().expect("yield count"), true),
            None => child(mode.parse().expect("yield count"), false),
        }
        return;
    }
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs `strace`: install it (`apt-get install strace`; CI runs scripts/install-deps): {strace:?}"
    );
    // Negative control: the same measurement must see a task that makes one
    // system call (`sched_yield`) per iteration.
    let (few, many) = (trace("control:100"), trace("control:1100"));
    assert!(
        many.worker >= few.worker + 900,
        "the harness missed 1,000 extra sched_yield calls: {} vs {} ({:?})",
        many.worker,
        few.worker,
        many.worker_by_name
    );

    let small = trace("100000");
    let large = trace("1000000");
    eprintln!(
        "worker thread: {} calls for 100k yields, {} for 1M; whole process: {} and {}",
        small.worker, large.worker, small.process, large.process
    );
    assert!(
        small.worker > 0,
        "no system call counted for the worker at all: is strace working?"
    );
    assert!(
        large.worker < small.worker + TOLERANCE,
        "the worker made {} system calls for 1,000,000 yields and {} for 100,000: yields make system calls\n\
         1M run, worker's calls by name: {:?}",
        large.worker,
        small.worker,
        large.worker_by_name
    );
}

/// The child: a runtime with I/O on, one task yielding `yields` times (for
/// the control, also yielding the thread to the OS each time).
fn child(yields: u64, control: bool) {
    let rt = Runtime::builder()
        .workers(1)
        .io(true)
        .thread_name(THREAD_PREFIX)
        .build()
        .unwrap();
    // Warm up (first polls, lazy initialisation) the same way in both runs.
    rt.block_on(async {
        for _ in 0..1_000 {
            yield_now().await;
        }
    });
    let done = rt.block_on(async move {
        let mut done = 0u64;
        for _ in 0..yields {
            if control {
                std::thread::yield_now();
            }
            yield_now().await;
            done += 1;
        }
        done
    });
    assert_eq!(done, yields);
}

struct Trace {
    /// System calls made by the worker thread.
    worker: u64,
    worker_by_name: BTreeMap<String, u64>,
    /// System calls made by the whole child process.
    process: u64,
}

/// Runs the child in `mode` under `strace -ff` (one output file per
/// thread) and counts the system calls of the worker thread and of the whole process.
#[allow(clippy::disallowed_methods)] // the test thread waits for strace and reads its files
fn trace(mode: &str) -> Trace {
    let exe = std::env::current_exe().unwrap();
    let tag = mode.replace(':', "-");
    let dir =
        std::env::temp_dir().join(format!("tiffany-yield-strace-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new("strace")
        .arg("-ff")
        .arg("-o")
        .arg(dir.join("t"))
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .output()
        .expect("run strace");
    let files = thread_traces(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child under strace failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    let worker_name = format!("{THREAD_PREFIX}-0");
    let mut worker = None;
    let mut process = 0;
    for text in &files {
        let calls = syscalls(text);
        process += calls.len() as u64;
        if names_thread(text, &worker_name) {
            assert!(worker.is_none(), "two threads named {worker_name}");
            worker = Some(calls);
        }
    }
    let worker = worker
        .unwrap_or_else(|| panic!("no thread named {worker_name} among {} traces", files.len()));
    let mut worker_by_name = BTreeMap::new();
    for name in &worker {
        *worker_by_name.entry(name.clone()).or_insert(0) += 1;
    }
    Trace {
        worker: worker.len() as u64,
        worker_by_name,
        process,
    }
}

/// The per-thread trace files `strace -ff -o DIR/t` wrote.
#[allow(clippy::disallowed_methods)] // test thread, not a task
fn thread_traces(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect()
}

/// The names of the system calls in one thread's trace (one per line,
/// skipping signal and exit notes).
fn syscalls(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
        .filter_map(|l| l.split_once('(').map(|(name, _)| name.trim().to_owned()))
        .filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect()
}

/// Whether the thread set its own name to `name` (`prctl(PR_SET_NAME, ..)`).
fn names_thread(trace: &str, name: &str) -> bool {
    let needle = format!("prctl(PR_SET_NAME, \"{name}\"");
    trace.lines().any(|l| l.starts_with(&needle))
}

#[test]
fn yield_trace_parsing() {
    let trace = "\
prctl(PR_SET_NAME, \"yield-probe-0\") = 0
futex(0x7f, FUTEX_WAIT_BITSET_PRIVATE, 4294967295, NULL, FUTEX_BITSET_MATCH_ANY) = 0
--- SIGCHLD {si_signo=SIGCHLD} ---
sched_yield() = 0
+++ exited with 0 +++
";
    assert_eq!(syscalls(trace), vec!["prctl", "futex", "sched_yield"]);
    assert!(names_thread(trace, "yield-probe-0"));
    assert!(!names_thread(trace, "yield-probe-1"));
    assert!(!names_thread(
        "prctl(PR_SET_NAME, \"yield-probe-0x\") = 0",
        "yield-probe-0"
    ));
}
