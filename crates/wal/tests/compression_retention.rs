//! Retention with compression on: a checkpoint removes the archives wholly
//! before it, as it frees slots, but never one a replay still reads; that
//! one goes once the replay is dropped.

mod common;

use common::{compressed_config, dir, open_with, payload};
use tiffany_testkit::FaultStorage;
use tiffany_wal::{Lsn, SyncMode};

fn archives(storage: &FaultStorage) -> Vec<String> {
    let mut names = storage.names(dir());
    names.retain(|n| n.starts_with("sealed-"));
    names
}

#[test]
fn compression_retention_removes_archives_before_the_checkpoint() {
    let storage = FaultStorage::new();
    let (wal, _) = open_with(&storage, compressed_config()).unwrap();
    for i in 0..600u64 {
        wal.append(i % 3, &payload(i, 700), SyncMode::None).unwrap();
    }
    wal.flush().unwrap();
    wal.archive().unwrap();
    let before = archives(&storage);
    assert!(before.len() >= 5, "{before:?}");

    // A replay from the start holds every archive.
    let mut held = wal.replay(Lsn(1)..).unwrap();
    let first = held.next().unwrap().unwrap();
    assert_eq!(first.lsn(), Lsn(1));
    let last = wal.last_lsn();
    wal.checkpoint(last, b"snap").unwrap();
    assert_eq!(
        wal.segments().unwrap().len(),
        1,
        "only the active segment is live"
    );
    assert!(wal.segments().unwrap().iter().all(|s| !s.archived));
    assert_eq!(archives(&storage), before, "the replay still reads them");
    // It reads through all of them.
    let rest: Vec<Lsn> = held.map(|r| r.unwrap().lsn()).collect();
    assert!(rest.len() >= 590, "{}", rest.len());

    // Dropped: the next pass removes them.
    wal.archive().unwrap();
    assert_eq!(archives(&storage), Vec::<String>::new());

    // More records, archived, then a checkpoint with no replay: removed at once.
    for i in 600..900u64 {
        wal.append(1, &payload(i, 700), SyncMode::None).unwrap();
    }
    wal.archive().unwrap();
    assert!(!archives(&storage).is_empty());
    wal.checkpoint(wal.last_lsn(), b"snap-2").unwrap();
    assert_eq!(archives(&storage), Vec::<String>::new());
    let first = wal.first_lsn().unwrap();
    drop(wal);
    let (wal, report) = open_with(&storage, compressed_config()).unwrap();
    assert_eq!(report.first_lsn, first);
    assert_eq!(
        wal.replay(first..).unwrap().count() as u64,
        report.last_lsn.0 + 1 - first.0
    );
}

/// An archive whose removal a crash undid is removed by the next open.
#[test]
fn compression_retention_finishes_after_a_crash() {
    let storage = FaultStorage::new();
    let (wal, _) = open_with(&storage, compressed_config()).unwrap();
    for i in 0..400u64 {
        wal.append(2, &payload(i, 700), SyncMode::None).unwrap();
    }
    wal.flush().unwrap();
    wal.archive().unwrap();
    let before = archives(&storage);
    assert!(!before.is_empty());
    wal.checkpoint(wal.last_lsn(), b"snap").unwrap();
    assert!(archives(&storage).is_empty());
    // Removals are not synced: a power loss brings the archives back.
    let image = storage.crash();
    assert_eq!(archives(&image), before);
    let (_wal, report) = open_with(&image, compressed_config()).unwrap();
    assert!(report.checkpoint.is_some());
    assert!(archives(&image).is_empty());
}
