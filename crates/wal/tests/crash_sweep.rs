//! Power loss after every storage operation in turn: a mixed workload
//! (several streams, varied sizes, `Data`/`Buffer`/`None`, rotations over
//! 64 KiB segments, checkpoints that recycle slots) runs on a
//! [`FaultStorage`] that stops after operation `k`; the crash image, with or
//! without torn writes, must recover to a gap-free prefix of what was
//! appended holding every acknowledged-durable record, and a second crash
//! in the middle of that recovery must change nothing. The same sweep runs
//! with compression on: every step is followed by `Wal::archive`, so
//! crashes also land inside the writing of archives, between an archive
//! and the reuse of its slot, and inside retention's removals.

mod common;

use common::{Journal, Rec, check_recovered, open_with, records};
use tiffany_testkit::{Fault, FaultRule, FaultStorage, OpKind, Outcome, Rng, Torn};
use tiffany_wal::{Compression, Lsn, SyncMode, WalConfig};

#[derive(Clone, Copy, Debug)]
enum Step {
    Append {
        stream: u64,
        len: usize,
        mode: SyncMode,
    },
    Flush,
    Checkpoint,
}

/// A seeded workload of `steps` steps: mostly small records, some of a few
/// kilobytes and a few large ones, a third of them `Data`.
fn plan(seed: u64, steps: usize, big: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    (0..steps)
        .map(|_| match rng.below(100) {
            0..=5 => Step::Flush,
            6..=9 => Step::Checkpoint,
            _ => {
                let len = match rng.below(10) {
                    0..=5 => rng.range(16, 300),
                    6..=8 => rng.range(300, 4000),
                    _ => rng.range(4000, big as u64),
                } as usize;
                let mode = match rng.below(3) {
                    0 => SyncMode::Data,
                    1 => SyncMode::Buffer,
                    _ => SyncMode::None,
                };
                Step::Append {
                    stream: 1 + rng.below(4),
                    len,
                    mode,
                }
            }
        })
        .collect()
}

/// Opens a log on `storage` and runs `steps` until the first error (the
/// storage stopping), archiving after each step when `config` compresses.
/// Returns what was appended and acknowledged.
fn run(storage: &FaultStorage, steps: &[Step], config: &WalConfig) -> Journal {
    let mut journal = Journal::default();
    let Ok((wal, _)) = open_with(storage, config.clone()) else {
        return journal;
    };
    let compressed = config.compression != Compression::None;
    for step in steps {
        let result = match *step {
            Step::Append { stream, len, mode } => {
                journal.append(&wal, stream, len, mode).map(|_| ())
            }
            Step::Flush => journal.flush(&wal),
            Step::Checkpoint => journal.checkpoint(&wal),
        };
        let result = result.and_then(|()| match compressed {
            true => wal.archive().map(|_| ()),
            false => Ok(()),
        });
        if result.is_err() {
            break;
        }
    }
    journal
}

/// What the recoveries of a sweep met, to show the sweep reached the cases
/// it claims to cover.
#[derive(Debug, Default)]
struct Seen {
    points: u64,
    torn_tails: u64,
    reclaimed_slots: u64,
    fresh_logs: u64,
    /// Recoveries that read archived segments.
    archived: u64,
    /// Recoveries that found (and removed) an unfinished archive.
    temp_archives: u64,
}

/// Recovers a crash image and checks it against the journal; returns the
/// records and the number of storage operations recovery took.
fn recover(
    image: &FaultStorage,
    journal: &Journal,
    config: &WalConfig,
    what: &str,
    seen: &mut Seen,
) -> (Vec<Rec>, u64) {
    let storage = image.fork();
    let temp = |s: &FaultStorage| {
        let names = s.names(common::dir());
        names.iter().any(|n| n.ends_with(".lz4.tmp"))
    };
    seen.temp_archives += u64::from(temp(&storage));
    let (wal, report) = open_with(&storage, config.clone())
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    assert!(!temp(&storage), "{what}: an unfinished archive is left");
    let ops = storage.op_count();
    seen.torn_tails += u64::from(report.torn_tail.is_some());
    seen.reclaimed_slots += report.reclaimed_slots.len() as u64;
    seen.fresh_logs += u64::from(report.last_lsn == Lsn(0));
    seen.archived += u64::from(wal.segments().unwrap().iter().any(|s| s.archived));
    (check_recovered(&wal, &report, journal, what), ops)
}

struct Sweep {
    seed: u64,
    steps: usize,
    big: usize,
    /// How each crash tears unsynced writes, from a random number.
    torn: fn(u64) -> Torn,
    /// Crash points: every operation (1) or every n-th, from a seeded
    /// offset.
    stride: u64,
    config: WalConfig,
}

impl Sweep {
    fn run(&self) -> Seen {
        let steps = plan(self.seed, self.steps, self.big);
        let reference = FaultStorage::new();
        let full = run(&reference, &steps, &self.config);
        let total = reference.op_count();
        // The workload must exercise what the sweep claims to cover.
        if self.config.compression != Compression::None {
            let ran = |kind, name: &str| {
                reference.ops().iter().any(|op| {
                    op.kind == kind
                        && op.outcome == Outcome::Ran
                        && op.path.to_string_lossy().contains(name)
                })
            };
            assert!(ran(OpKind::Rename, ".lz4.tmp"), "no archive was written");
            assert!(ran(OpKind::Remove, ".lz4"), "retention removed no archive");
        }
        let wal = open_with(&reference.crash(), self.config.clone())
            .unwrap()
            .0;
        let rotations = wal.segments().unwrap().last().unwrap().seq;
        assert!(rotations >= 3, "only {rotations} rotations");
        let slots = reference
            .names(common::dir())
            .iter()
            .filter(|n| n.starts_with("slot-"))
            .count() as u64;
        assert!(slots <= rotations, "no slot was reused ({slots} slots)");
        assert!(full.checkpoint.is_some());
        drop(wal);

        let mut rng = Rng::new(self.seed ^ 0xC0FFEE);
        let mut k = rng.below(self.stride);
        let mut seen = Seen::default();
        while k <= total {
            self.crash_at(&steps, k, &mut rng, &mut seen);
            seen.points += 1;
            k += self.stride;
        }
        seen
    }

    fn crash_at(&self, steps: &[Step], k: u64, rng: &mut Rng, seen: &mut Seen) {
        let storage = FaultStorage::new();
        storage.crash_after(k);
        let journal = run(&storage, steps, &self.config);
        let image = storage.crash_with((self.torn)(rng.next_u64()));
        let what = format!("seed {} crash after op {k}", self.seed);
        let (recs, recovery_ops) = recover(&image, &journal, &self.config, &what, seen);

        // A second crash at a random point of that recovery, torn the same
        // way, then a full recovery: the same records.
        let again = image.fork();
        let k2 = rng.below(recovery_ops + 1);
        again.crash_after(k2);
        let _ = open_with(&again, self.config.clone());
        let image2 = again.crash_with((self.torn)(rng.next_u64()));
        let what2 = format!("{what}, crash after op {k2} of its recovery");
        let (recs2, _) = recover(
            &image2,
            &journal,
            &self.config,
            &what2,
            &mut Seen::default(),
        );
        assert!(recs2 == recs, "{what2}: the records changed");

        // The recovered log takes a durable append that survives the next
        // power loss, right after everything recovered.
        let live = image.fork();
        let (wal, _) = open_with(&live, self.config.clone()).unwrap();
        let mut after = Journal::starting_at_tag(1 << 40);
        let lsn = after.append(&wal, 9, 100, SyncMode::Data).unwrap();
        let expected_lsn = Lsn(wal.last_lsn().0);
        assert_eq!(lsn, expected_lsn);
        drop(wal);
        let (wal, _) = open_with(&live.crash(), self.config.clone()).unwrap();
        let got = records(&wal);
        let tail = got
            .last()
            .unwrap_or_else(|| panic!("{what}: the new record is lost"));
        assert_eq!(tail.lsn, lsn, "{what}: the new record is lost");
        assert_eq!(tail.payload, after.entries[0].payload);
        assert!(
            got[..got.len() - 1] == recs[..],
            "{what}: the records before the new one changed"
        );
    }
}

fn no_tear(_: u64) -> Torn {
    Torn::None
}

fn prefix(seed: u64) -> Torn {
    Torn::Prefix { seed }
}

fn scattered(seed: u64) -> Torn {
    Torn::Scattered { seed }
}

fn any_tear(seed: u64) -> Torn {
    match seed % 3 {
        0 => Torn::None,
        1 => Torn::Prefix { seed },
        _ => Torn::Scattered { seed },
    }
}

#[test]
fn crash_after_every_operation_of_a_small_workload() {
    let seen = Sweep {
        seed: 1,
        steps: 160,
        big: 20_000,
        torn: no_tear,
        stride: 1,
        config: common::config(),
    }
    .run();
    assert!(seen.points > 200, "{seen:?}");
    assert!(
        seen.reclaimed_slots > 0,
        "no crash between creating a slot and its header: {seen:?}"
    );
    assert!(seen.fresh_logs > 0, "{seen:?}");
}

/// A full sweep whose crashes tear unsynced writes with `torn`: it must
/// crash at enough points, and torn tails must actually reach recovery.
fn torn_sweep(seed: u64, torn: fn(u64) -> Torn) {
    let seen = Sweep {
        seed,
        steps: 160,
        big: 20_000,
        torn,
        stride: 1,
        config: common::config(),
    }
    .run();
    assert!(seen.points > 200, "{seen:?}");
    assert!(
        seen.torn_tails > 10,
        "torn writes never reached recovery: {seen:?}"
    );
}

#[test]
fn crash_after_every_operation_with_writes_torn_in_order() {
    torn_sweep(2, prefix);
}

#[test]
fn crash_after_every_operation_with_writes_torn_out_of_order() {
    torn_sweep(5, scattered);
}

#[test]
fn crash_sampled_over_a_larger_workload() {
    let seen = Sweep {
        seed: 3,
        steps: 1200,
        big: 40_000,
        torn: any_tear,
        stride: 61,
        config: common::config(),
    }
    .run();
    assert!(seen.points > 20, "{seen:?}");
}

/// The checks are sharp: a disk that acknowledges syncs it never did (after
/// the first few) loses acknowledged records, and the recovery check says
/// so.
#[test]
fn crash_checks_notice_a_disk_that_lies_about_sync() {
    let steps = plan(6, 160, 20_000);
    let storage = FaultStorage::new();
    storage.inject(FaultRule::new(Fault::Lost).kind(OpKind::Sync).skip(10));
    let journal = run(&storage, &steps, &common::config());
    assert!(
        journal.durable > Lsn(20),
        "the workload acknowledged little"
    );
    let image = storage.crash();
    let caught = std::panic::catch_unwind(|| {
        recover(
            &image,
            &journal,
            &common::config(),
            "lying disk",
            &mut Seen::default(),
        );
    });
    assert!(caught.is_err(), "lost acknowledged records went unnoticed");
}

/// The full sweep with compression on: archives are written, read back
/// after each crash, and removed by retention; torn writes of every kind.
#[test]
fn crash_after_every_operation_with_compression() {
    let seen = Sweep {
        seed: 7,
        steps: 160,
        big: 20_000,
        torn: any_tear,
        stride: 1,
        config: common::compressed_config(),
    }
    .run();
    assert!(seen.points > 200, "{seen:?}");
    assert!(
        seen.archived > seen.points / 4,
        "recoveries seldom read archives: {seen:?}"
    );
    assert!(seen.temp_archives > 0, "{seen:?}");
    assert!(seen.torn_tails > 0, "{seen:?}");
}
