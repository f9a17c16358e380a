//! I/O errors: `EIO`, `ENOSPC` and short writes on append, on sync, on
//! rotation, on the checkpoint file and while opening. A failed write or
//! sync poisons the log (every later write, flush and checkpoint fails
//! with `Error::Poisoned`); reopening recovers; nothing acknowledged is
//! lost.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use common::{Journal, check_recovered, config, open, records};
use tiffany_testkit::{Fault, FaultRule, FaultStorage, Op, OpKind, Rng};
use tiffany_wal::format::frame_size;
use tiffany_wal::{Error, Lsn, SyncMode, Wal};

/// A log with a few durable records and a few unsynced ones.
fn setup() -> (FaultStorage, Wal<FaultStorage>, Journal) {
    let storage = FaultStorage::new();
    let (wal, _) = open(&storage).unwrap();
    let mut journal = Journal::default();
    for i in 0..10 {
        journal
            .append(&wal, 1 + i % 3, 200, SyncMode::Data)
            .unwrap();
    }
    for i in 0..5 {
        journal
            .append(&wal, 1 + i % 3, 300, SyncMode::Buffer)
            .unwrap();
    }
    (storage, wal, journal)
}

/// Appends `Buffer` records until a record of `len` bytes no longer fits
/// the active segment (the next append of that size rotates).
fn fill_until_rotation(wal: &Wal<FaultStorage>, journal: &mut Journal, len: usize) {
    loop {
        let active = wal.segments().unwrap().pop().unwrap();
        let need = frame_size(len) + frame_size(0);
        if active.used_bytes + need as u64 > active.size {
            return;
        }
        let room = active.size - active.used_bytes - frame_size(0) as u64;
        let next = (room as usize).saturating_sub(64).clamp(16, 2000);
        journal.append(wal, 4, next, SyncMode::Buffer).unwrap();
    }
}

fn is_poisoned(result: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::Poisoned { .. }))
}

/// Polls a future that must be ready at once.
fn now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("expected the future to be ready"),
    }
}

/// Every writing call of a poisoned log fails with `Error::Poisoned`;
/// reads still work.
fn assert_poisoned(wal: &Wal<FaultStorage>) {
    let payload = [7u8; 64];
    for mode in [SyncMode::None, SyncMode::Buffer, SyncMode::Data] {
        assert!(
            is_poisoned(wal.append(1, &payload, mode)),
            "{mode:?} append"
        );
        assert!(
            is_poisoned(wal.try_append(1, &payload, mode)),
            "{mode:?} try_append"
        );
        assert!(
            is_poisoned(now(wal.append_async(1, &payload, mode))),
            "{mode:?} append_async"
        );
    }
    assert!(is_poisoned(wal.append_batch(
        1,
        [&payload[..], &payload[..]],
        SyncMode::Buffer
    )));
    assert!(is_poisoned(wal.flush()));
    assert!(is_poisoned(wal.checkpoint(Lsn(1), b"snap")));
    // Reading is still allowed.
    assert!(!records(wal).is_empty());
}

#[test]
fn io_write_failure_on_append_poisons_and_reopen_recovers() {
    for fault in [Fault::Eio, Fault::Enospc, Fault::ShortWrite] {
        let (storage, wal, mut journal) = setup();
        storage.fail_next(OpKind::Write, fault);
        let err = journal.append(&wal, 2, 3000, SyncMode::Data).unwrap_err();
        assert!(
            matches!(err, Error::Poisoned { .. } | Error::Io { .. }),
            "{fault:?}: {err}"
        );
        assert_poisoned(&wal);
        drop(wal);

        // Reopened as it is (the process restarted): the short write's
        // half frame is cut and reported.
        let (wal, report) = open(&storage).unwrap();
        assert_eq!(
            report.torn_tail.is_some(),
            fault == Fault::ShortWrite,
            "{fault:?}: {report:?}"
        );
        let recs = check_recovered(&wal, &report, &journal, &format!("{fault:?} reopen"));
        assert_eq!(recs.len(), 15, "{fault:?}: every record before the failure");
        journal.append(&wal, 2, 100, SyncMode::Data).unwrap();
        drop(wal);

        // And after a power loss.
        let (wal, report) = open(&storage.crash()).unwrap();
        let recs = check_recovered(&wal, &report, &journal, &format!("{fault:?} crash"));
        assert_eq!(
            recs.last().unwrap().payload,
            journal.entries.last().unwrap().payload
        );
    }
}

#[test]
fn io_sync_failure_poisons_every_later_call() {
    for fault in [Fault::Eio, Fault::Enospc] {
        let (storage, wal, mut journal) = setup();
        storage.fail_next(OpKind::Sync, fault);
        let err = journal.append(&wal, 2, 100, SyncMode::Data).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{fault:?}: {err}");
        assert_poisoned(&wal);
        // The failure is sticky even though the disk works again.
        assert!(is_poisoned(wal.flush()));
        drop(wal);

        let (wal, report) = open(&storage.crash()).unwrap();
        let recs = check_recovered(&wal, &report, &journal, &format!("{fault:?}"));
        assert!(recs.len() >= 10, "the Data records before the failure");
        journal.append(&wal, 2, 100, SyncMode::Data).unwrap();
    }
}

#[test]
fn io_sync_failure_in_flush_and_checkpoint_poisons() {
    let (storage, wal, journal) = setup();
    storage.fail_next(OpKind::Sync, Fault::Eio);
    assert!(is_poisoned(wal.flush()));
    assert_poisoned(&wal);
    drop(wal);
    let (wal, report) = open(&storage.crash()).unwrap();
    check_recovered(&wal, &report, &journal, "flush");

    let (storage, wal, mut journal) = setup();
    storage.fail_next(OpKind::Sync, Fault::Eio);
    assert!(is_poisoned(journal.checkpoint(&wal)));
    assert_poisoned(&wal);
    drop(wal);
    let (wal, report) = open(&storage.crash()).unwrap();
    check_recovered(&wal, &report, &journal, "checkpoint");
    assert_eq!(report.checkpoint, None);
}

/// Which storage operation of a rotation fails.
#[derive(Clone, Copy, Debug)]
enum RotationStep {
    /// The sync of the sealed segment.
    SealSync,
    /// The creation of a new slot file.
    Create,
    /// The directory sync after it.
    SyncDir,
    /// The write of the new segment's header.
    HeaderWrite,
    /// The sync of that header.
    HeaderSync,
}

fn fail_rotation(storage: &FaultStorage, step: RotationStep, fault: Fault) {
    let rule = match step {
        RotationStep::SealSync => FaultRule::new(fault).kind(OpKind::Sync),
        RotationStep::Create => FaultRule::new(fault).kind(OpKind::Create),
        RotationStep::SyncDir => FaultRule::new(fault).kind(OpKind::SyncDir),
        RotationStep::HeaderWrite => FaultRule::new(fault).kind(OpKind::Write).path("slot-0001"),
        RotationStep::HeaderSync => FaultRule::new(fault).kind(OpKind::Sync).skip(1),
    };
    storage.inject(rule.times(1));
}

/// A failure in the middle of a rotation fails that append; whatever the
/// log does next, a power loss keeps every acknowledged record.
#[test]
fn io_failure_during_rotation_loses_nothing_acknowledged() {
    use RotationStep::*;
    for step in [SealSync, Create, SyncDir, HeaderWrite, HeaderSync] {
        for fault in [Fault::Eio, Fault::Enospc] {
            let what = format!("{step:?} {fault:?}");
            let (storage, wal, mut journal) = setup();
            fill_until_rotation(&wal, &mut journal, 1000);
            let slots = wal.segments().unwrap().len();
            fail_rotation(&storage, step, fault);
            let err = journal.append(&wal, 2, 1000, SyncMode::Data).unwrap_err();
            assert!(
                matches!(err, Error::Poisoned { .. } | Error::Io { .. }),
                "{what}: {err}"
            );
            assert_eq!(storage.injected(), 1, "{what}: the fault hit");
            assert_eq!(
                wal.segments().unwrap().len(),
                slots,
                "{what}: no new segment"
            );
            drop(wal);
            let after = storage.crash();
            let (wal, report) =
                open(&after).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
            let recs = check_recovered(&wal, &report, &journal, &what);
            journal.settle(&recs, wal.first_lsn().unwrap());
            // The recovered log rotates fine.
            for _ in 0..3 {
                journal.append(&wal, 3, 30_000, SyncMode::Data).unwrap();
            }
            drop(wal);
            let (wal, report) = open(&after.crash()).unwrap();
            check_recovered(&wal, &report, &journal, &format!("{what}, after more"));
        }
    }
}

/// After a rotation failed on a step that does not poison the log (the new
/// slot could not be created or set up), the next appends must go to a
/// new segment, never after the seal of the old one.
#[test]
fn io_append_after_a_failed_rotation_is_not_lost() {
    use RotationStep::*;
    for step in [Create, SyncDir, HeaderWrite] {
        let what = format!("{step:?}");
        let (storage, wal, mut journal) = setup();
        fill_until_rotation(&wal, &mut journal, 1000);
        fail_rotation(&storage, step, Fault::Enospc);
        let err = journal.append(&wal, 2, 1000, SyncMode::Data).unwrap_err();
        if matches!(err, Error::Poisoned { .. }) {
            continue;
        }
        // Not poisoned: the log claims to go on. A small record and a big
        // one, both durable.
        let small = journal.append(&wal, 2, 16, SyncMode::Data);
        let big = journal.append(&wal, 2, 1000, SyncMode::Data);
        assert!(small.is_ok() && big.is_ok(), "{what}: {small:?} {big:?}");
        drop(wal);
        let (wal, report) = open(&storage).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        check_recovered(&wal, &report, &journal, &format!("{what} reopen"));
        drop(wal);
        let (wal, report) =
            open(&storage.crash()).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
        check_recovered(&wal, &report, &journal, &format!("{what} crash"));
    }
}

/// A failed sync poisons the log; reopening (without a power loss) must
/// give a log whose acknowledged records survive the next power loss.
/// Under Linux's behaviour the failed sync dropped the write-back of the
/// pages it covered, though the page cache still shows them.
#[test]
fn io_reopen_after_a_failed_sync_then_power_loss_keeps_acknowledged_records() {
    reopen_after_failed_sync(true);
}

/// The same with a disk that keeps the dirty pages after a failed sync (a
/// later sync writes them): passes, which shows the failure above is the
/// dropped write-back alone.
#[test]
fn io_reopen_after_a_failed_sync_that_kept_the_pages() {
    reopen_after_failed_sync(false);
}

fn reopen_after_failed_sync(drops: bool) {
    let (storage, wal, mut journal) = setup();
    storage.set_failed_sync_drops_writes(drops);
    storage.fail_next(OpKind::Sync, Fault::Eio);
    assert!(journal.append(&wal, 2, 100, SyncMode::Data).is_err());
    drop(wal);
    let (wal, report) = open(&storage).unwrap();
    check_recovered(&wal, &report, &journal, "reopen");
    for _ in 0..3 {
        journal.append(&wal, 3, 100, SyncMode::Data).unwrap();
    }
    drop(wal);
    let (wal, report) = open(&storage.crash())
        .unwrap_or_else(|e| panic!("recovery after the power loss failed: {e}"));
    check_recovered(&wal, &report, &journal, "power loss");
}

/// Each step of replacing `CHECKPOINT` failing in turn: the checkpoint
/// fails, the log's records are untouched, a later checkpoint succeeds, and
/// after a power loss the newest acknowledged checkpoint is recovered.
#[test]
fn io_checkpoint_file_failures_keep_the_previous_checkpoint() {
    let steps = [
        FaultRule::new(Fault::Enospc)
            .kind(OpKind::Create)
            .path("CHECKPOINT"),
        FaultRule::new(Fault::ShortWrite)
            .kind(OpKind::Write)
            .path("CHECKPOINT"),
        FaultRule::new(Fault::Eio)
            .kind(OpKind::Sync)
            .path("CHECKPOINT"),
        FaultRule::new(Fault::Eio)
            .kind(OpKind::Rename)
            .path("CHECKPOINT"),
        FaultRule::new(Fault::Eio).kind(OpKind::SyncDir),
    ];
    for rule in steps {
        let what = format!("{:?} on {:?}", rule.fault, rule.kind);
        let (storage, wal, mut journal) = setup();
        journal.checkpoint(&wal).unwrap();
        let first = journal.checkpoint.unwrap();
        journal.append(&wal, 1, 100, SyncMode::Data).unwrap();
        storage.inject(rule.times(1));
        let err = journal.checkpoint(&wal).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. } | Error::Poisoned { .. }),
            "{what}: {err}"
        );
        assert_eq!(storage.injected(), 1);
        assert_eq!(
            wal.latest_checkpoint().unwrap().map(|c| c.lsn),
            Some(first),
            "{what}: a failed checkpoint is not the latest"
        );
        let poisoned = matches!(err, Error::Poisoned { .. });
        if !poisoned {
            journal.append(&wal, 1, 100, SyncMode::Data).unwrap();
            journal.checkpoint(&wal).unwrap();
        }
        drop(wal);
        let (wal, report) = open(&storage.crash()).unwrap();
        check_recovered(&wal, &report, &journal, &what);
        assert_eq!(
            report.checkpoint.map(|c| c.lsn),
            journal.checkpoint,
            "{what}"
        );
    }
}

/// A single error at any storage operation of a workload, then a power
/// loss: recovery finds every acknowledged record.
#[test]
fn io_single_error_at_every_operation_then_power_loss() {
    let run = |storage: &FaultStorage| -> Journal {
        let mut journal = Journal::default();
        let Ok((wal, _)) = open(storage) else {
            return journal;
        };
        let mut rng = Rng::new(11);
        for i in 0..120u64 {
            let mode = [SyncMode::Data, SyncMode::Buffer, SyncMode::None][i as usize % 3];
            let len = if i % 10 == 0 {
                9000
            } else {
                rng.range(16, 1500) as usize
            };
            let result = if i % 25 == 24 {
                journal.checkpoint(&wal)
            } else {
                journal.append(&wal, 1 + i % 3, len, mode).map(|_| ())
            };
            if result.is_err() {
                break;
            }
        }
        journal
    };
    let reference = FaultStorage::new();
    run(&reference);
    let total = reference.op_count();
    let faults = [Fault::Eio, Fault::Enospc, Fault::ShortWrite];
    for k in 1..=total {
        let storage = FaultStorage::new();
        storage.fail_op(k, faults[k as usize % faults.len()]);
        let journal = run(&storage);
        let what = format!("error at op {k}");
        let (wal, report) =
            open(&storage.crash()).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
        check_recovered(&wal, &report, &journal, &what);
    }
}

/// A log with a torn tail after a rotation: what a recovery has work to
/// do on. Returns the crash image, the journal and the records a clean
/// recovery finds.
fn damaged_image() -> (FaultStorage, Journal, Vec<common::Rec>, Vec<Op>) {
    let (storage, wal, mut journal) = setup();
    fill_until_rotation(&wal, &mut journal, 1000);
    journal.append(&wal, 2, 1000, SyncMode::Data).unwrap();
    storage.fail_next(OpKind::Write, Fault::ShortWrite);
    assert!(journal.append(&wal, 2, 3000, SyncMode::Buffer).is_err());
    drop(wal);
    // As the process left it: the half-written record is there to cut.
    let image = storage.fork();
    let clean = image.fork();
    let (wal, report) = open(&clean).unwrap();
    let ops = clean.ops();
    assert!(report.torn_tail.is_some());
    let expected = check_recovered(&wal, &report, &journal, "clean");
    (image, journal, expected, ops)
}

/// An error at any operation of a recovery (of a log with a torn tail)
/// other than a read fails the open or not, and changes nothing: the next
/// open, and the one after a power loss, find the same records.
#[test]
fn io_errors_while_opening_change_nothing() {
    let (image, journal, expected, ops) = damaged_image();
    // Reads: see the next test.
    for op in ops.iter().filter(|op| op.kind != OpKind::Read) {
        for fault in [Fault::Eio, Fault::ShortWrite] {
            let what = format!("{fault:?} at op {} ({:?}) of recovery", op.index, op.kind);
            let attempt = image.fork();
            attempt.fail_op(op.index, fault);
            match Wal::open_in(attempt.clone(), common::DIR, config()) {
                Ok((wal, report)) => {
                    let recs = check_recovered(&wal, &report, &journal, &what);
                    assert!(recs == expected, "{what}: different records ({report:?})");
                }
                Err(e) => assert!(
                    matches!(e, Error::Io { .. } | Error::Poisoned { .. }),
                    "{what}: {e}"
                ),
            }
            let (wal, report) = open(&attempt).unwrap();
            let recs = check_recovered(&wal, &report, &journal, &what);
            assert!(
                recs == expected,
                "{what}: different records after the retry"
            );
            drop(wal);
            let (wal, report) = open(&attempt.crash()).unwrap();
            let recs = check_recovered(&wal, &report, &journal, &what);
            assert!(recs == expected, "{what}: different records after a crash");
        }
    }
}

/// A read error on a slot's header while opening must fail the open (or be
/// retried), never make the slot look empty.
#[test]
fn io_read_error_on_a_segment_header_fails_the_open() {
    let (image, journal, expected, ops) = damaged_image();
    for op in ops.iter().filter(|op| op.kind == OpKind::Read) {
        let what = format!("EIO at op {} (read of {})", op.index, op.path.display());
        let attempt = image.fork();
        attempt.fail_op(op.index, Fault::Eio);
        match Wal::open_in(attempt.clone(), common::DIR, config()) {
            Ok((wal, report)) => {
                let recs = check_recovered(&wal, &report, &journal, &what);
                assert!(
                    recs == expected,
                    "{what}: the open succeeded with {} of {} records ({report:?})",
                    recs.len(),
                    expected.len()
                );
            }
            Err(e) => assert!(matches!(e, Error::Io { .. }), "{what}: {e}"),
        }
    }
}
