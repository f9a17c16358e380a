//! `tiffany wal inspect|verify|dump` on real logs: what they print, and
//! that damage makes `verify` fail with its place.

// Waiting for a child process is what these tests do.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Output;

mod common;
use common::tiffany;

use tiffany_wal::{SyncMode, Wal, WalConfig};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A log with 300 records over three streams and a checkpoint, in 64 KiB
/// segments (so it spans several).
fn make_log(dir: &Path) {
    let config = WalConfig {
        segment_size: 64 << 10,
        ..WalConfig::default()
    };
    let wal = Wal::open(dir, config).unwrap();
    for i in 0..300u64 {
        wal.append(
            i % 3,
            format!("step {i} of agent {}", i % 3).as_bytes(),
            SyncMode::Buffer,
        )
        .unwrap();
    }
    wal.flush().unwrap();
    wal.checkpoint(tiffany_wal::Lsn(100), b"snap-100").unwrap();
}

#[test]
fn wal_cli_inspect_verify_dump() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path());
    let d = dir.path().to_str().unwrap();

    let out = tiffany(&["wal", "inspect", d]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("LSN 1..=301"), "{text}");
    assert!(
        text.contains("checkpoint: LSN 100 (snapshot snap-100)"),
        "{text}"
    );
    assert!(text.contains("active"), "{text}");

    let out = tiffany(&["wal", "verify", d]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("ok: 301 records"), "{}", stdout(&out));

    let out = tiffany(&[
        "wal", "dump", d, "--from", "10", "--to", "16", "--stream", "1", "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lsns: Vec<u64> = lines.iter().map(|v| v["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, [11, 14], "LSN n holds step n-1, stream (n-1) % 3");
    assert_eq!(lines[0]["payload"], "step 10 of agent 1");
    assert_eq!(lines[0]["stream"], 1);
}

#[test]
fn wal_cli_verify_reports_damage_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path());
    // Flip a byte inside the first record of the first (sealed) segment.
    let slot = dir.path().join("slot-0000.seg");
    let mut bytes = std::fs::read(&slot).unwrap();
    bytes[4096 + 45] ^= 0x40;
    std::fs::write(&slot, bytes).unwrap();
    let out = tiffany(&["wal", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("slot-0000.seg at offset 4096"), "{err}");
}

#[test]
fn wal_cli_inspect_shows_archives_and_their_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size: 64 << 10,
        compression: tiffany_wal::Compression::Lz4,
        ..WalConfig::default()
    };
    let wal = Wal::open(dir.path(), config).unwrap();
    for i in 0..2000u64 {
        let step = format!("step {i} of agent {}: observe the files", i % 3);
        wal.append(i % 3, step.as_bytes(), SyncMode::Buffer)
            .unwrap();
    }
    wal.flush().unwrap();
    // The archiver thread may have done it all already: this waits for it.
    wal.archive().unwrap();
    assert!(wal.segments().unwrap().iter().any(|s| s.archived));
    let out = tiffany(&["wal", "inspect", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("archives: "), "{text}");
    assert!(text.contains("archived, "), "{text}");
    assert!(text.contains("x smaller"), "{text}");
    let out = tiffany(&["wal", "verify", dir.path().to_str().unwrap()]);
    assert!(
        stdout(&out).contains("ok: 2000 records"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn wal_cli_missing_directory_is_a_clear_error() {
    let out = tiffany(&["wal", "inspect", "/nonexistent/tiffany-log"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a directory"), "{err}");
}
