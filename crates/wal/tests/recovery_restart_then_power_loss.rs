//! A process restart (crash of the process, page cache intact) while the
//! log held unsynced records, then a power loss before the next sync: the
//! log must still open, holding a prefix of the records.

mod common;

use common::{config, dir, records};
use tiffany_testkit::{FaultStorage, Torn};
use tiffany_wal::{SyncMode, Wal};

/// Three unsynced records, a restart, one more unsynced record (or a
/// durable one, with `sync_after_restart`), then a power loss whose
/// write-back of unsynced pages was partial and out of order (`seed`).
/// Returns the number of records recovered, or the error.
fn restart_then_power_loss(seed: u64, sync_after_restart: bool) -> Result<usize, String> {
    let storage = FaultStorage::new();
    let (wal, _) = Wal::open_in(storage.clone(), dir(), config()).unwrap();
    for i in 0..3u8 {
        wal.append(1, &[i; 24], SyncMode::Buffer).unwrap();
    }
    drop(wal);
    let (wal, report) = Wal::open_in(storage.clone(), dir(), config()).unwrap();
    assert_eq!(report.last_lsn.0, 3);
    let mode = if sync_after_restart {
        SyncMode::Data
    } else {
        SyncMode::Buffer
    };
    wal.append(1, &[9; 24], mode).unwrap();
    drop(wal);
    let after = storage.crash_with(Torn::Scattered { seed });
    let (wal, _) = Wal::open_in(after, dir(), config()).map_err(|e| e.to_string())?;
    let recs = records(&wal);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.lsn.0, i as u64 + 1, "a prefix");
    }
    Ok(recs.len())
}

#[test]
fn recovery_restart_with_unsynced_records_then_power_loss() {
    let failures: Vec<(u64, String)> = (0..200)
        .filter_map(|seed| {
            restart_then_power_loss(seed, false)
                .err()
                .map(|e| (seed, e))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 200 power losses left a log that does not open, e.g. seed {} ({})",
        failures.len(),
        failures[0].0,
        failures[0].1
    );
}

/// The window closes at the first sync after the restart.
#[test]
fn recovery_restart_then_a_durable_append_then_power_loss() {
    for seed in 0..200 {
        let kept =
            restart_then_power_loss(seed, true).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(kept, 4, "seed {seed}: the durable record and all before it");
    }
}

/// `flush` promises that every record appended so far is durable, records
/// of the previous process included.
#[test]
fn recovery_flush_after_a_restart_makes_earlier_records_durable() {
    let storage = FaultStorage::new();
    let (wal, _) = Wal::open_in(storage.clone(), dir(), config()).unwrap();
    wal.append(1, b"unsynced", SyncMode::Buffer).unwrap();
    drop(wal);
    let (wal, _) = Wal::open_in(storage.clone(), dir(), config()).unwrap();
    wal.flush().unwrap();
    assert_eq!(wal.durable_lsn().0, 1, "the log claims LSN 1 durable");
    drop(wal);
    let (wal, _) = Wal::open_in(storage.crash(), dir(), config()).unwrap();
    assert_eq!(records(&wal).len(), 1, "the flushed record was lost");
}
