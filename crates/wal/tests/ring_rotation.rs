//! Rotation, checkpoints and slot reuse: steady-state appends stop creating
//! files once checkpoints let old segments go, and reopening finds exactly
//! the records written, none from an earlier pass of the ring.

// Tests read and damage files directly, blocking on purpose.
#![allow(clippy::disallowed_methods)]

use tiffany_wal::{Lsn, SyncMode, Wal, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        segment_size: 64 << 10,
        ..WalConfig::default()
    }
}

fn payload(lsn: u64) -> Vec<u8> {
    let len = 100 + (lsn % 300) as usize;
    (0..len).map(|i| (lsn as usize + i) as u8).collect()
}

#[test]
fn ring_reuses_slots_after_checkpoints_and_recovers_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    let mut expected = Vec::new();
    let mut slot_counts = Vec::new();
    for round in 0..12u64 {
        for i in 0..200u64 {
            let stream = i % 5;
            let lsn = wal
                .append(stream, &payload(round * 1000 + i), SyncMode::Buffer)
                .unwrap();
            expected.push((lsn, stream, payload(round * 1000 + i)));
        }
        wal.flush().unwrap();
        let last = wal.last_lsn();
        wal.checkpoint(last, format!("snap-{round}").as_bytes())
            .unwrap();
        slot_counts.push(std::fs::read_dir(dir.path()).unwrap().count());
    }
    // Each round writes ~60 KiB: after a few rounds the ring stops growing.
    let steady = &slot_counts[4..];
    assert!(
        steady.iter().all(|&n| n == steady[0]),
        "slot files kept being created: {slot_counts:?}"
    );
    let checkpoint = wal.latest_checkpoint().unwrap().unwrap();
    assert_eq!(checkpoint.snapshot_ref, b"snap-11");
    let first = wal.first_lsn().unwrap();
    drop(wal);

    let (wal, report) = Wal::open_with_report(dir.path(), config()).unwrap();
    assert_eq!(
        report.checkpoint.as_ref().map(|c| c.lsn),
        Some(checkpoint.lsn)
    );
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.first_lsn().unwrap(), first);
    let got: Vec<_> = wal
        .replay(first..)
        .unwrap()
        .map(|r| r.unwrap())
        .filter(|r| !r.is_checkpoint())
        .map(|r| (r.lsn(), r.stream(), r.payload().to_vec()))
        .collect();
    let want: Vec<_> = expected
        .into_iter()
        .filter(|(lsn, _, _)| *lsn >= first)
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "replayed records differ from what was appended"
    );
    // Appends continue after the last recovered LSN.
    let next = wal.append(1, b"after reopen", SyncMode::Data).unwrap();
    assert_eq!(next, Lsn(report.last_lsn.0 + 1));
}

#[test]
fn ring_replay_filters_streams_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 1..=500u64 {
        wal.append(i % 3, &i.to_le_bytes(), SyncMode::None).unwrap();
    }
    let stream1: Vec<u64> = wal
        .replay(Lsn(100)..Lsn(200))
        .unwrap()
        .stream(1)
        .map(|r| u64::from_le_bytes(r.unwrap().payload().try_into().unwrap()))
        .collect();
    let want: Vec<u64> = (100..200).filter(|i| i % 3 == 1).collect();
    assert_eq!(stream1, want);
    let all = wal.replay(Lsn(499)..=Lsn(500)).unwrap().count();
    assert_eq!(all, 2);
    assert_eq!(wal.replay(Lsn(600)..).unwrap().count(), 0);
}

#[test]
fn ring_rejects_records_larger_than_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    let err = wal
        .append(0, &vec![0u8; 70 << 10], SyncMode::Data)
        .unwrap_err();
    assert!(matches!(err, tiffany_wal::Error::TooLarge { .. }), "{err}");
    // The log is still usable.
    assert_eq!(wal.append(0, b"fine", SyncMode::Data).unwrap(), Lsn(1));
}

#[test]
fn ring_second_open_is_refused_while_locked_and_read_only_sees_records() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    wal.append(0, b"one", SyncMode::Data).unwrap();
    let err = Wal::open(dir.path(), config()).err().unwrap();
    assert!(matches!(err, tiffany_wal::Error::Locked { .. }), "{err}");
    let (reader, _) = Wal::open_read_only(dir.path(), config()).unwrap();
    assert_eq!(reader.replay(..).unwrap().count(), 1);
    assert!(matches!(
        reader.append(0, b"x", SyncMode::None),
        Err(tiffany_wal::Error::ReadOnly)
    ));
}

#[test]
fn ring_checkpoint_is_found_in_the_log_when_its_file_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..300u64 {
        wal.append(2, &payload(i), SyncMode::Buffer).unwrap();
    }
    let at = wal.last_lsn();
    wal.checkpoint(at, b"snap-a").unwrap();
    for i in 0..10u64 {
        wal.append(2, &payload(i), SyncMode::Data).unwrap();
    }
    drop(wal);
    std::fs::write(dir.path().join("CHECKPOINT"), b"garbage").unwrap();
    let (_wal, report) = Wal::open_with_report(dir.path(), config()).unwrap();
    assert!(report.checkpoint_from_log);
    let checkpoint = report.checkpoint.unwrap();
    assert_eq!(
        (checkpoint.lsn, checkpoint.snapshot_ref.as_slice()),
        (at, &b"snap-a"[..])
    );
}
