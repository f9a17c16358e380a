//! Format version 1 keeps opening: `tests/fixtures/v1/` holds a small log
//! written by this crate (two 64 KiB segments, the first sealed, and a
//! checkpoint); a copy of it must open and hold exactly the records below.
//!
//! The fixture is made by `compat_v1_regenerate_fixture`, which only runs
//! when asked:
//! `TIFFANY_REGEN_FIXTURES=1 cargo test -p tiffany-wal --test compat_v1 -- --ignored compat_v1_regenerate_fixture`.
//! Regenerating is for a deliberate change of version 1 before its release;
//! after that, a failure here means the format changed and needs a new
//! version number (docs/wal-format.md, "Compatibility").

// Copying the fixture is blocking file I/O.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::{Path, PathBuf};

use tiffany_wal::format::SEGMENT_MAGIC;
use tiffany_wal::{Lsn, SyncMode, Wal, WalConfig};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn config() -> WalConfig {
    WalConfig {
        segment_size: 64 << 10,
        ..WalConfig::default()
    }
}

/// A payload that compresses well (the fixture is in git).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed ^ (i % 251) as u8).collect()
}

/// What the fixture holds, in order: (LSN, stream, payload, checkpoint).
/// LSN 6 is the seal of the first segment, which replay does not return.
fn expected() -> Vec<(u64, u64, Vec<u8>, bool)> {
    let mut checkpoint = 2u64.to_le_bytes().to_vec();
    checkpoint.extend_from_slice(b"snapshot-0002");
    vec![
        (1, 7, b"plan: list files".to_vec(), false),
        (2, 7, b"observe: 3 files".to_vec(), false),
        (3, 8, pattern(0xA1, 20_000), false),
        (4, 8, pattern(0xB2, 20_000), false),
        (5, 9, pattern(0xC3, 20_000), false),
        (7, 9, pattern(0xD4, 2_000), false),
        (8, 0, checkpoint, true),
        (9, 7, b"act: summarize".to_vec(), false),
    ]
}

/// Writes the fixture. Ignored: it only runs on purpose, and then only with
/// `TIFFANY_REGEN_FIXTURES=1`.
#[test]
#[ignore = "regenerates tests/fixtures/v1; see the module docs"]
fn compat_v1_regenerate_fixture() {
    if std::env::var_os("TIFFANY_REGEN_FIXTURES").is_none() {
        eprintln!(
            "set TIFFANY_REGEN_FIXTURES=1 to regenerate {}",
            fixture().display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for (lsn, stream, payload, checkpoint) in expected() {
        let got = if checkpoint {
            wal.checkpoint(Lsn(2), b"snapshot-0002").unwrap()
        } else {
            wal.append(stream, &payload, SyncMode::Data).unwrap()
        };
        assert_eq!(got, Lsn(lsn));
    }
    assert_eq!(wal.segments().unwrap().len(), 2);
    drop(wal);
    let out = fixture();
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    for name in ["slot-0000.seg", "slot-0001.seg", "CHECKPOINT"] {
        fs::copy(dir.path().join(name), out.join(name)).unwrap();
    }
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["CHECKPOINT", "LOCK", "slot-0000.seg", "slot-0001.seg"]
    );
}

#[test]
fn compat_v1_fixture_opens_with_its_exact_contents() {
    let copy = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        names.push(entry.file_name().into_string().unwrap());
        fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    names.sort();
    assert_eq!(names, ["CHECKPOINT", "slot-0000.seg", "slot-0001.seg"]);
    for slot in ["slot-0000.seg", "slot-0001.seg"] {
        let bytes = fs::read(copy.path().join(slot)).unwrap();
        assert_eq!(bytes.len(), 64 << 10);
        assert_eq!(bytes[..8], SEGMENT_MAGIC);
        assert_eq!(
            u16::from_le_bytes([bytes[8], bytes[9]]),
            1,
            "{slot} is version 1"
        );
    }

    let (wal, report) = Wal::open_with_report(copy.path(), config()).unwrap();
    let checkpoint = report.checkpoint.clone().unwrap();
    assert_eq!(checkpoint.lsn, Lsn(2));
    assert_eq!(checkpoint.snapshot_ref, b"snapshot-0002");
    assert!(!report.checkpoint_from_log, "read from the CHECKPOINT file");
    assert_eq!(report.first_lsn, Lsn(1));
    assert_eq!(report.last_lsn, Lsn(9));
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.truncated_corruption, None);
    assert!(report.reclaimed_slots.is_empty());
    assert_eq!(report.segments_scanned, 2);

    let segments = wal.segments().unwrap();
    let shape: Vec<_> = segments
        .iter()
        .map(|s| (s.slot, s.seq, s.first_lsn.0, s.last_lsn.0, s.sealed))
        .collect();
    assert_eq!(shape, [(Some(0), 0, 1, 6, true), (Some(1), 1, 7, 9, false)]);

    let got: Vec<_> = wal
        .replay(..)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (
                r.lsn().0,
                r.stream(),
                r.payload().to_vec(),
                r.is_checkpoint(),
            )
        })
        .collect();
    assert!(got == expected(), "the records of the fixture changed");
    let from_checkpoint: Vec<u64> = wal
        .replay(Lsn(3)..)
        .unwrap()
        .map(|r| r.unwrap().lsn().0)
        .collect();
    assert_eq!(from_checkpoint, [3, 4, 5, 7, 8, 9]);

    // The log goes on from there.
    assert_eq!(wal.append(7, b"next", SyncMode::Data).unwrap(), Lsn(10));
    drop(wal);
    let (wal, report) = Wal::open_with_report(copy.path(), config()).unwrap();
    assert_eq!(report.last_lsn, Lsn(10));
    assert_eq!(wal.replay(Lsn(10)..).unwrap().count(), 1);
    // The fixture itself is untouched.
    assert_eq!(fs::read_dir(fixture()).unwrap().count(), 3);
}
