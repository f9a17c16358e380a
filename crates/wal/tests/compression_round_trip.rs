//! Compression on, across many rotations: the archiver thread compresses
//! each sealed segment and frees its slot, so the ring stays small without
//! any checkpoint; replay (whole, ranges, one stream) and a reopened log
//! read archives and slots as one gap-free log.

// Tests list the directory directly, blocking on purpose.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use tiffany_wal::{Compression, Lsn, Storage, SyncMode, Wal, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        segment_size: 64 << 10,
        compression: Compression::Lz4,
        ..WalConfig::default()
    }
}

/// Text-like, compressible, and unique per LSN.
fn payload(i: u64) -> Vec<u8> {
    format!(
        "agent {} step {i}: {}",
        i % 7,
        "observe the files ".repeat(1 + (i % 20) as usize)
    )
    .into_bytes()
}

fn count(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .count()
}

fn replay<S: Storage>(
    wal: &Wal<S>,
    range: std::ops::Range<u64>,
    stream: Option<u64>,
) -> Vec<(Lsn, u64, Vec<u8>)> {
    let mut replay = wal.replay(Lsn(range.start)..Lsn(range.end)).unwrap();
    if let Some(stream) = stream {
        replay = replay.stream(stream);
    }
    replay
        .map(|r| {
            let r = r.unwrap();
            (r.lsn(), r.stream(), r.payload().to_vec())
        })
        .collect()
}

#[test]
fn compression_round_trip_over_many_rotations_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    let mut appended = Vec::new();
    for i in 0..3000u64 {
        let lsn = wal.append(i % 7, &payload(i), SyncMode::Buffer).unwrap();
        appended.push((lsn, i % 7, payload(i)));
        if i % 200 == 199 {
            // Let the thread catch up now and then, so the ring's size
            // does not depend on how fast this machine compresses.
            wal.archive().unwrap();
        }
    }
    wal.flush().unwrap();
    // Whatever the thread has not archived yet is archived now.
    wal.archive().unwrap();
    let segments = wal.segments().unwrap();
    let archived = segments.iter().filter(|s| s.archived).count();
    assert!(
        archived >= 10,
        "{archived} of {} segments archived",
        segments.len()
    );
    assert_eq!(
        archived + 1,
        segments.len(),
        "every sealed segment is archived"
    );
    assert!(segments.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    for s in segments.iter().filter(|s| s.archived) {
        assert_eq!(s.slot, None);
        let ratio = s.compression_ratio().unwrap();
        assert!(ratio > 3.0, "segment {} compressed only {ratio:.2}x", s.seq);
    }
    // Archived slots are reused: the ring did not grow with the log.
    let slots = count(dir.path(), "slot-");
    assert!(slots <= 4, "{slots} slots: they kept being created");
    assert_eq!(count(dir.path(), "sealed-"), archived);

    let last = wal.last_lsn().0;
    let records = |wal: &Wal, range, stream| replay(wal, range, stream);
    let everything: Vec<_> = appended.clone();
    assert!(records(&wal, 1..last + 1, None) == everything);
    // A range that starts and ends inside archives and crosses into the slot.
    let (from, to) = (appended[500].0.0, appended[2990].0.0);
    let want: Vec<_> = appended
        .iter()
        .filter(|r| (from..to).contains(&r.0.0))
        .cloned()
        .collect();
    assert!(records(&wal, from..to, None) == want);
    let want: Vec<_> = appended.iter().filter(|r| r.1 == 3).cloned().collect();
    assert!(records(&wal, 1..last + 1, Some(3)) == want);
    drop(wal);

    // Reopened (compression off now: archives are still read).
    let plain = WalConfig {
        compression: Compression::None,
        ..config()
    };
    let (wal, report) = Wal::open_with_report(dir.path(), plain).unwrap();
    assert_eq!(report.first_lsn, Lsn(1));
    assert_eq!(report.last_lsn, Lsn(last));
    assert_eq!(
        wal.segments()
            .unwrap()
            .iter()
            .filter(|s| s.archived)
            .count(),
        archived
    );
    assert!(records(&wal, 1..last + 1, None) == everything);
    let next = wal.append(1, b"after reopen", SyncMode::Data).unwrap();
    assert_eq!(next, Lsn(last + 1));
}
