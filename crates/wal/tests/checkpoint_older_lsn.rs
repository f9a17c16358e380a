//! A checkpoint at an LSN older than the newest checkpoint: the log either
//! refuses it or keeps every record after it, and never frees a segment
//! the newest checkpoint still needs.

mod common;

use common::{Journal, open, records};
use tiffany_testkit::FaultStorage;
use tiffany_wal::{Error, Lsn, SyncMode};

/// 100 records, a checkpoint at the last, then enough records for a few
/// more segments.
fn log_with_checkpoint() -> (FaultStorage, tiffany_wal::Wal<FaultStorage>, Lsn) {
    let storage = FaultStorage::new();
    let (wal, _) = open(&storage).unwrap();
    let mut journal = Journal::default();
    for _ in 0..100 {
        journal.append(&wal, 1, 2000, SyncMode::Buffer).unwrap();
    }
    let high = wal.last_lsn();
    wal.checkpoint(high, b"high").unwrap();
    for _ in 0..70 {
        journal.append(&wal, 1, 2000, SyncMode::Buffer).unwrap();
    }
    assert!(wal.segments().unwrap().len() >= 3);
    (storage, wal, high)
}

/// Still held: accepted, and everything after it stays replayable.
#[test]
fn checkpoint_at_an_older_lsn_still_held_keeps_what_follows() {
    let (storage, wal, high) = log_with_checkpoint();
    let first = wal.first_lsn().unwrap();
    assert!(first <= high);
    let older = Lsn(first.0.max(high.0 - 3));
    let before = records(&wal);
    wal.checkpoint(older, b"older").unwrap();
    assert_eq!(wal.latest_checkpoint().unwrap().unwrap().lsn, older);
    let after: Vec<_> = wal
        .replay(Lsn(older.0 + 1)..)
        .unwrap()
        .map(|r| r.unwrap().lsn())
        .collect();
    assert_eq!(after.first(), Some(&Lsn(older.0 + 1)));
    assert_eq!(records(&wal)[..before.len()], before[..]);
    drop(wal);
    let (wal, report) = open(&storage.crash()).unwrap();
    assert_eq!(report.checkpoint.unwrap().lsn, older);
    assert!(wal.first_lsn().unwrap().0 <= older.0 + 1);
}

/// No longer held (its records were recycled after the newer checkpoint):
/// the log cannot honour it.
#[test]
fn checkpoint_at_an_lsn_already_recycled_is_refused() {
    let (_storage, wal, high) = log_with_checkpoint();
    let first = wal.first_lsn().unwrap();
    assert!(first > Lsn(6), "records up to 5 were recycled");
    let held: Vec<_> = wal
        .replay(Lsn(high.0 + 1)..)
        .unwrap()
        .map(|r| r.unwrap().lsn())
        .collect();
    let result = wal.checkpoint(Lsn(5), b"low");
    assert!(
        matches!(result, Err(Error::OutOfRange { .. })),
        "checkpoint(5) with the log starting at {first}: {result:?}"
    );
    let still: Vec<_> = wal
        .replay(Lsn(high.0 + 1)..)
        .unwrap()
        .map(|r| r.unwrap().lsn())
        .collect();
    assert_eq!(
        still[..held.len()],
        held[..],
        "records after the newest checkpoint lost"
    );
}
