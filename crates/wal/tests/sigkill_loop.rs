//! A real SIGKILL loop: this test binary re-executes itself as a child that
//! appends `Data` records to a real directory from two threads (sharing
//! syncs), checkpoints now and then, and prints every acknowledged LSN with
//! the tag its payload derives from. The parent kills it with SIGKILL at a
//! seeded moment (sometimes while it is still recovering), then reads the
//! directory read-only and checks that every acknowledged record is there,
//! intact, and that nothing else is.

// The parent waits for its child process and reads its pipe: it blocks.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{payload, payload_is_intact};
use tiffany_testkit::Rng;
use tiffany_wal::{Lsn, SyncMode, Wal, WalConfig};

const TEST: &str = "sigkill_loop_keeps_every_acknowledged_record";
/// Set in the child: the log directory.
const CHILD_DIR: &str = "TIFFANY_WAL_SIGKILL_DIR";
/// Set in the child: the first payload tag it may use.
const CHILD_TAGS: &str = "TIFFANY_WAL_SIGKILL_TAGS";
const ITERATIONS: u64 = 100;
/// A child that was not killed stops after this many records.
const CHILD_LIMIT: u64 = 400;

fn config() -> WalConfig {
    WalConfig {
        segment_size: 64 << 10,
        ..WalConfig::default()
    }
}

fn len_of(tag: u64) -> usize {
    16 + (tag.wrapping_mul(7919) % 700) as usize
}

fn stream_of(tag: u64) -> u64 {
    1 + tag % 5
}

#[test]
fn sigkill_loop_keeps_every_acknowledged_record() {
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

/// Appends until killed (or `CHILD_LIMIT`), printing `ACK <lsn> <tag>`
/// after each acknowledged record and `CKPT <lsn>` after each checkpoint.
fn child(dir: &Path) {
    let base: u64 = std::env::var(CHILD_TAGS).unwrap().parse().unwrap();
    let wal = Arc::new(Wal::open(dir, config()).unwrap());
    let next = Arc::new(AtomicU64::new(base));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let wal = Arc::clone(&wal);
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut n = 0u64;
                loop {
                    let tag = next.fetch_add(1, Ordering::Relaxed);
                    if tag >= base + CHILD_LIMIT {
                        return;
                    }
                    let lsn = wal
                        .append(stream_of(tag), &payload(tag, len_of(tag)), SyncMode::Data)
                        .unwrap();
                    println!("ACK {} {tag}", lsn.0);
                    n += 1;
                    if t == 0 && n % 16 == 0 {
                        let at = wal.durable_lsn();
                        wal.checkpoint(at, b"sigkill").unwrap();
                        println!("CKPT {}", at.0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::io::stdout().flush().unwrap();
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("child-stderr");
    let log = dir.path().join("log");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(0x051C_C111);
    // Every acknowledged record: LSN -> tag.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut checkpoint = Lsn(0);
    let mut killed_early = 0;
    let mut torn_tails = 0;
    for iteration in 0..ITERATIONS {
        // Kill after this many acknowledgements (0: while it may still be
        // recovering), and a little later still.
        let after = match rng.below(10) {
            0 => 0,
            _ => rng.range(1, 40),
        };
        let delay = Duration::from_micros(rng.below(1500));
        let mut child = Command::new(&exe)
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &log)
            .env(CHILD_TAGS, (iteration * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        if after == 0 {
            killed_early += 1;
        } else {
            for line in lines.by_ref() {
                let line = line.unwrap();
                record(&line, &mut acked, &mut checkpoint);
                if line.starts_with("ACK ") {
                    seen += 1;
                    if seen == after {
                        break;
                    }
                }
            }
        }
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        // Killed, or done after CHILD_LIMIT records; anything else is a
        // failure of the child.
        assert!(
            status.code().is_none() || status.success(),
            "child {iteration} failed ({status}): {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        // Whatever the child printed before it died was acknowledged.
        for line in lines {
            record(&line.unwrap(), &mut acked, &mut checkpoint);
        }
        torn_tails += check(&log, &acked, checkpoint, iteration);
    }
    assert!(
        acked.len() > 1000,
        "only {} records acknowledged over {ITERATIONS} runs",
        acked.len()
    );
    assert!(killed_early > 0);
    // Not asserted (it depends on timing), but worth seeing on failure.
    eprintln!(
        "{} records acknowledged, {killed_early} children killed early, {torn_tails} torn tails",
        acked.len()
    );
}

fn record(line: &str, acked: &mut BTreeMap<u64, u64>, checkpoint: &mut Lsn) {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("ACK"), Some(lsn), Some(tag)) => {
            let previous = acked.insert(lsn.parse().unwrap(), tag.parse().unwrap());
            assert_eq!(previous, None, "LSN {lsn} acknowledged twice");
        }
        (Some("CKPT"), Some(lsn), None) => {
            *checkpoint = (*checkpoint).max(Lsn(lsn.parse().unwrap()));
        }
        _ => {}
    }
}

/// Reads the log without repairing it and checks it against what was
/// acknowledged. Returns 1 when recovery saw a torn tail.
fn check(dir: &Path, acked: &BTreeMap<u64, u64>, checkpoint: Lsn, iteration: u64) -> usize {
    let what = format!("after kill {iteration}");
    let (wal, report) =
        Wal::open_read_only(dir, config()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    let first = wal.first_lsn().unwrap();
    let recovered_checkpoint = report.checkpoint.as_ref().map_or(Lsn(0), |c| c.lsn);
    assert!(
        recovered_checkpoint >= checkpoint,
        "{what}: checkpoint {checkpoint} acknowledged, {recovered_checkpoint} recovered"
    );
    let mut held = BTreeMap::new();
    let mut prev: Option<Lsn> = None;
    for r in wal.replay(first..).unwrap() {
        let r = r.unwrap_or_else(|e| panic!("{what}: replay: {e}"));
        if let Some(p) = prev {
            assert!(r.lsn().0 - p.0 <= 2, "{what}: hole after {p}");
        }
        prev = Some(r.lsn());
        if !r.is_checkpoint() {
            assert!(
                payload_is_intact(r.payload()),
                "{what}: record {} damaged",
                r.lsn()
            );
            held.insert(r.lsn().0, r.payload().to_vec());
        }
    }
    for (&lsn, &tag) in acked {
        if lsn < first.0 {
            assert!(
                lsn <= recovered_checkpoint.0,
                "{what}: acknowledged record {lsn} recycled, not behind the checkpoint"
            );
            continue;
        }
        let got = held
            .get(&lsn)
            .unwrap_or_else(|| panic!("{what}: acknowledged record {lsn} (tag {tag}) is missing"));
        assert!(
            *got == payload(tag, len_of(tag)),
            "{what}: record {lsn} is not the payload acknowledged"
        );
    }
    usize::from(report.torn_tail.is_some())
}
