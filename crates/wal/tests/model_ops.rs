//! Random operation sequences against a simple in-memory reference model:
//! appends (random stream, size and mode, alone or in batches), flushes,
//! checkpoints at random acknowledged LSNs, replays of random ranges with
//! and without a stream filter, reopens and power losses (torn or not).
//! After every operation the log must agree with the model.

mod common;

use common::{Rec, config, dir, records};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use tiffany_testkit::{FaultStorage, Rng, Torn};
use tiffany_wal::{Error, Lsn, RecoveryReport, SyncMode, Wal};

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: u64,
        len: usize,
        mode: SyncMode,
    },
    Batch {
        stream: u64,
        lens: Vec<usize>,
        mode: SyncMode,
    },
    Flush,
    /// At the LSN of the record picked by `pick` among all acknowledged
    /// ones (or 0), older than the newest checkpoint or not: refused when
    /// the records after it were recycled.
    Checkpoint {
        pick: u16,
    },
    Replay {
        from: u16,
        len: u16,
        stream: Option<u64>,
    },
    Reopen,
    /// A power loss: `torn` picks none, in-order or scattered tearing.
    Crash {
        torn: u8,
        seed: u64,
    },
}

fn mode() -> impl Strategy<Value = SyncMode> {
    prop_oneof![
        Just(SyncMode::Data),
        Just(SyncMode::Buffer),
        Just(SyncMode::None)
    ]
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..200,
        3 => 200usize..4000,
        1 => 4000usize..30_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (1u64..5, len(), mode()).prop_map(|(stream, len, mode)| Op::Append { stream, len, mode }),
        4 => (1u64..5, prop::collection::vec(len(), 1..6), mode())
            .prop_map(|(stream, lens, mode)| Op::Batch { stream, lens, mode }),
        3 => Just(Op::Flush),
        4 => any::<u16>().prop_map(|pick| Op::Checkpoint { pick }),
        6 => (any::<u16>(), any::<u16>(), prop::option::of(1u64..5))
            .prop_map(|(from, len, stream)| Op::Replay { from, len, stream }),
        2 => Just(Op::Reopen),
        2 => (0u8..3, any::<u64>()).prop_map(|(torn, seed)| Op::Crash { torn, seed }),
    ]
}

/// What the log must hold.
#[derive(Default)]
struct Model {
    /// Every record appended and not lost to a crash, in LSN order.
    records: Vec<Rec>,
    /// Everything up to here is durable.
    durable: Lsn,
    /// The newest checkpoint.
    checkpoint: Option<Lsn>,
    /// The log's first LSN never goes back.
    first: Lsn,
    next_tag: u64,
}

impl Model {
    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.next_tag += 1;
        Rng::new(self.next_tag).bytes(len)
    }

    fn last(&self) -> Lsn {
        self.records.last().map_or(Lsn(0), |r| r.lsn)
    }

    /// Records a returned LSN: one or two (a seal) past the previous one.
    fn push(&mut self, wal: &Wal<FaultStorage>, rec: Rec) {
        let step = rec.lsn.0 - self.last().0;
        assert!(
            step == 1 || step == 2 || self.records.is_empty(),
            "LSN {} after {}",
            rec.lsn,
            self.last()
        );
        assert!(wal.last_lsn() >= rec.lsn);
        self.records.push(rec);
    }
}

struct Harness {
    storage: FaultStorage,
    wal: Option<Wal<FaultStorage>>,
    model: Model,
}

impl Harness {
    fn wal(&self) -> &Wal<FaultStorage> {
        self.wal.as_ref().unwrap()
    }

    fn reopen(&mut self, storage: FaultStorage) -> RecoveryReport {
        self.wal = None;
        self.storage = storage;
        let (wal, report) = Wal::open_in(self.storage.clone(), dir(), config()).unwrap();
        self.wal = Some(wal);
        report
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { stream, len, mode } => {
                let payload = self.model.payload(*len);
                let lsn = self.wal().append(*stream, &payload, *mode).unwrap();
                assert_eq!(self.wal().last_lsn(), lsn);
                if *mode == SyncMode::Data {
                    self.model.durable = lsn;
                }
                let wal = self.wal.as_ref().unwrap();
                self.model.push(
                    wal,
                    Rec {
                        lsn,
                        stream: *stream,
                        payload,
                        checkpoint: false,
                    },
                );
            }
            Op::Batch { stream, lens, mode } => {
                let payloads: Vec<Vec<u8>> = lens.iter().map(|&l| self.model.payload(l)).collect();
                let last = self
                    .wal()
                    .append_batch(*stream, payloads.iter().map(Vec::as_slice), *mode)
                    .unwrap()
                    .unwrap();
                // The batch's LSNs are not returned one by one: read them
                // back (the batch holds the append lock, so they are the
                // newest records of the stream).
                let got: Vec<Lsn> = self
                    .wal()
                    .replay(Lsn(self.model.last().0 + 1)..)
                    .unwrap()
                    .map(|r| r.unwrap().lsn())
                    .collect();
                assert_eq!(got.len(), payloads.len());
                assert_eq!(got.last(), Some(&last));
                for (lsn, payload) in got.into_iter().zip(payloads) {
                    let wal = self.wal.as_ref().unwrap();
                    self.model.push(
                        wal,
                        Rec {
                            lsn,
                            stream: *stream,
                            payload,
                            checkpoint: false,
                        },
                    );
                }
                if *mode == SyncMode::Data {
                    self.model.durable = last;
                }
            }
            Op::Flush => {
                self.wal().flush().unwrap();
                self.model.durable = self.model.last();
                assert!(self.wal().durable_lsn() >= self.model.durable);
            }
            Op::Checkpoint { pick } => {
                let mut candidates: Vec<Lsn> = self.model.records.iter().map(|r| r.lsn).collect();
                candidates.push(Lsn(0));
                let lsn = candidates[*pick as usize % candidates.len()];
                let snapshot_ref = format!("snap-{}", self.model.next_tag).into_bytes();
                let first = self.wal().first_lsn().unwrap();
                let result = self.wal().checkpoint(lsn, &snapshot_ref);
                if lsn.0 + 1 < first.0 {
                    assert!(
                        matches!(result, Err(Error::OutOfRange { .. })),
                        "checkpoint {lsn} with the log starting at {first}: {result:?}"
                    );
                    return self.check_invariants();
                }
                let record = result.unwrap();
                assert_eq!(self.wal().last_lsn(), record);
                let mut payload = lsn.0.to_le_bytes().to_vec();
                payload.extend_from_slice(&snapshot_ref);
                let wal = self.wal.as_ref().unwrap();
                self.model.push(
                    wal,
                    Rec {
                        lsn: record,
                        stream: 0,
                        payload,
                        checkpoint: true,
                    },
                );
                self.model.durable = record;
                self.model.checkpoint = Some(lsn);
                let latest = self.wal().latest_checkpoint().unwrap().unwrap();
                assert_eq!(latest.lsn, lsn);
                assert_eq!(latest.snapshot_ref, snapshot_ref);
            }
            Op::Replay { from, len, stream } => self.check_replay(*from, *len, *stream),
            Op::Reopen => {
                let storage = self.storage.clone();
                let report = self.reopen(storage);
                assert_eq!(report.last_lsn.0, self.wal().last_lsn().0);
                assert!(report.last_lsn >= self.model.last());
                assert_eq!(report.checkpoint.map(|c| c.lsn), self.model.checkpoint);
                assert_eq!(self.everything(), self.expected_from_first());
            }
            Op::Crash { torn, seed } => {
                let torn = match torn {
                    0 => Torn::None,
                    1 => Torn::Prefix { seed: *seed },
                    _ => Torn::Scattered { seed: *seed },
                };
                self.wal = None;
                let after = self.storage.crash_with(torn);
                let report = self.reopen(after);
                let got = self.everything();
                let want = self.expected_from_first();
                // A prefix of the model, holding every durable record.
                assert!(got.len() <= want.len(), "records appeared from nowhere");
                assert!(got[..] == want[..got.len()], "recovered records differ");
                let kept = got.last().map_or(Lsn(0), |r| r.lsn);
                assert!(
                    kept >= self.model.durable
                        || self.model.durable < self.wal().first_lsn().unwrap(),
                    "durable records lost: kept up to {kept}, durable {}",
                    self.model.durable
                );
                let c = report.checkpoint.map(|c| c.lsn);
                assert_eq!(c, self.model.checkpoint, "the newest checkpoint");
                self.model.records.retain(|r| r.lsn <= kept);
                self.model.durable = kept;
                self.model.checkpoint = c;
            }
        }
        self.check_invariants();
    }

    fn everything(&self) -> Vec<Rec> {
        records(self.wal())
    }

    fn expected_from_first(&self) -> Vec<Rec> {
        let first = self.wal().first_lsn().unwrap();
        self.model
            .records
            .iter()
            .filter(|r| r.lsn >= first)
            .cloned()
            .collect()
    }

    fn check_replay(&self, from: u16, len: u16, stream: Option<u64>) {
        let last = self.wal().last_lsn().0;
        let from = Lsn(u64::from(from) % (last + 2));
        let to = Lsn(from.0 + u64::from(len) % 64);
        let first = self.wal().first_lsn().unwrap();
        let replay = self.wal().replay(from..to);
        if from < first && from < to {
            assert!(
                matches!(replay, Err(Error::OutOfRange { .. })),
                "replay from {from} before the first LSN {first}"
            );
            return;
        }
        let mut replay = replay.unwrap();
        if let Some(s) = stream {
            replay = replay.stream(s);
        }
        let got: Vec<Rec> = replay
            .map(|r| {
                let r = r.unwrap();
                Rec {
                    lsn: r.lsn(),
                    stream: r.stream(),
                    payload: r.payload().to_vec(),
                    checkpoint: r.is_checkpoint(),
                }
            })
            .collect();
        let want: Vec<Rec> = self
            .model
            .records
            .iter()
            .filter(|r| r.lsn >= from && r.lsn < to)
            .filter(|r| stream.is_none_or(|s| r.stream == s))
            .cloned()
            .collect();
        assert!(got == want, "replay {from}..{to} {stream:?} differs");
    }

    fn check_invariants(&mut self) {
        let wal = self.wal.as_ref().unwrap();
        let first = wal.first_lsn().unwrap();
        assert!(first >= self.model.first, "the first LSN went back");
        self.model.first = first;
        if let Some(c) = self.model.checkpoint {
            assert!(
                first.0 <= c.0 + 1,
                "records after checkpoint {c} recycled (first {first})"
            );
        }
        assert!(wal.last_lsn() >= self.model.last());
        assert!(wal.last_lsn().0 <= self.model.last().0 + 1);
        assert!(wal.durable_lsn() >= self.model.durable);
    }
}

fn proptest_config() -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 48;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x0715_7A11);
    }
    config
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn model_random_operations_match_the_reference(ops in prop::collection::vec(op(), 1..120)) {
        let storage = FaultStorage::new();
        let (wal, _) = Wal::open_in(storage.clone(), dir(), config()).unwrap();
        let mut h = Harness { storage, wal: Some(wal), model: Model::default() };
        for op in &ops {
            h.apply(op);
        }
        let all = h.everything();
        prop_assert!(all == h.expected_from_first());
    }
}
