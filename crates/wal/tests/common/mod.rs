//! Shared by the crash, fault and model tests: a small-segment
//! configuration, self-describing payloads, a journal of what a workload
//! appended and what was acknowledged, and the checks a recovered log must
//! pass against it.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;

use tiffany_testkit::{FaultStorage, Rng};
use tiffany_wal::{
    Archiver, Compression, Error, Lsn, RecoveryReport, Storage, SyncMode, Wal, WalConfig,
};

/// The directory of the log inside a [`FaultStorage`].
pub(crate) const DIR: &str = "/wal";

/// 64 KiB segments (the minimum) so that a few hundred kilobytes rotate
/// several times and reuse slots. Watermarks far above anything a test
/// writes, so that the background syncer never runs on its own and the
/// sequence of storage operations is the same on every run.
pub(crate) fn config() -> WalConfig {
    WalConfig {
        segment_size: 64 << 10,
        soft_watermark: 1 << 40,
        hard_watermark: 1 << 41,
        ..WalConfig::default()
    }
}

/// [`config`] with compression on, archived only by `Wal::archive` calls
/// ([`Archiver::Manual`]), so that the sequence of storage operations
/// stays the same on every run.
pub(crate) fn compressed_config() -> WalConfig {
    WalConfig {
        compression: Compression::Lz4,
        archiver: Archiver::Manual,
        ..config()
    }
}

pub(crate) fn dir() -> &'static Path {
    Path::new(DIR)
}

/// A payload that names itself: its tag, its length, then bytes derived
/// from the tag. Unique per tag, so a record from an earlier pass of the
/// ring or from another position can never pass for this one.
pub(crate) fn payload(tag: u64, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&Rng::new(tag ^ 0x5EED).bytes(len - 16));
    out
}

/// Whether `bytes` is a well-formed [`payload`].
pub(crate) fn payload_is_intact(bytes: &[u8]) -> bool {
    match (bytes.get(..8), bytes.get(8..16)) {
        (Some(tag), Some(len)) => {
            let tag = u64::from_le_bytes(tag.try_into().unwrap());
            let len = u64::from_le_bytes(len.try_into().unwrap());
            len as usize == bytes.len() && payload(tag, bytes.len()) == bytes
        }
        _ => false,
    }
}

/// The payload of a checkpoint record: the checkpointed LSN, then the
/// snapshot reference.
pub(crate) fn checkpoint_payload(lsn: Lsn, snapshot_ref: &[u8]) -> Vec<u8> {
    let mut out = lsn.0.to_le_bytes().to_vec();
    out.extend_from_slice(snapshot_ref);
    out
}

/// A record as replay returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) lsn: Lsn,
    pub(crate) stream: u64,
    pub(crate) payload: Vec<u8>,
    pub(crate) checkpoint: bool,
}

/// Every record of the log, from its first LSN on.
pub(crate) fn records<S: Storage>(wal: &Wal<S>) -> Vec<Rec> {
    let first = wal.first_lsn().expect("first_lsn");
    wal.replay(first..)
        .expect("replay")
        .map(|r| {
            let r = r.expect("every record replays intact");
            Rec {
                lsn: r.lsn(),
                stream: r.stream(),
                payload: r.payload().to_vec(),
                checkpoint: r.is_checkpoint(),
            }
        })
        .collect()
}

/// One record a workload tried to append.
#[derive(Clone, Debug)]
pub(crate) struct Expect {
    /// Its LSN, when the call returned one.
    pub(crate) lsn: Option<Lsn>,
    pub(crate) stream: u64,
    pub(crate) payload: Vec<u8>,
    pub(crate) checkpoint: bool,
}

/// What a workload appended, in order, and what the log acknowledged.
#[derive(Clone, Debug, Default)]
pub(crate) struct Journal {
    pub(crate) entries: Vec<Expect>,
    /// Everything up to this LSN was acknowledged durable (a `Data`
    /// append, a flush or a checkpoint returned).
    pub(crate) durable: Lsn,
    /// The LSN of the newest checkpoint that returned.
    pub(crate) checkpoint: Option<Lsn>,
    /// The next payload tag.
    pub(crate) next_tag: u64,
}

impl Journal {
    pub(crate) fn starting_at_tag(tag: u64) -> Journal {
        Journal {
            next_tag: tag,
            ..Journal::default()
        }
    }

    /// The newest LSN a call returned.
    pub(crate) fn last_acked(&self) -> Option<Lsn> {
        self.entries.iter().rev().find_map(|e| e.lsn)
    }

    pub(crate) fn append<S: Storage>(
        &mut self,
        wal: &Wal<S>,
        stream: u64,
        len: usize,
        mode: SyncMode,
    ) -> Result<Lsn, Error> {
        let payload = payload(self.next_tag, len);
        self.next_tag += 1;
        self.entries.push(Expect {
            lsn: None,
            stream,
            payload,
            checkpoint: false,
        });
        let last = self.entries.last_mut().unwrap();
        let lsn = wal.append(stream, &last.payload, mode)?;
        last.lsn = Some(lsn);
        if mode == SyncMode::Data {
            self.durable = self.durable.max(lsn);
        }
        Ok(lsn)
    }

    pub(crate) fn flush<S: Storage>(&mut self, wal: &Wal<S>) -> Result<(), Error> {
        wal.flush()?;
        if let Some(lsn) = self.last_acked() {
            self.durable = self.durable.max(lsn);
        }
        Ok(())
    }

    /// Checkpoints at the newest acknowledged LSN (nothing when none).
    pub(crate) fn checkpoint<S: Storage>(&mut self, wal: &Wal<S>) -> Result<(), Error> {
        let Some(lsn) = self.last_acked() else {
            return Ok(());
        };
        self.checkpoint_at(wal, lsn)
    }

    pub(crate) fn checkpoint_at<S: Storage>(
        &mut self,
        wal: &Wal<S>,
        lsn: Lsn,
    ) -> Result<(), Error> {
        let snapshot_ref = format!("snap-{}", self.next_tag).into_bytes();
        self.next_tag += 1;
        self.entries.push(Expect {
            lsn: None,
            stream: 0,
            payload: checkpoint_payload(lsn, &snapshot_ref),
            checkpoint: true,
        });
        let record = wal.checkpoint(lsn, &snapshot_ref)?;
        self.entries.last_mut().unwrap().lsn = Some(record);
        self.durable = self.durable.max(record);
        self.checkpoint = Some(self.checkpoint.map_or(lsn, |c| c.max(lsn)));
        Ok(())
    }
}

impl Journal {
    /// After a recovery that found `recs` (the log starting at `first`):
    /// forgets the entries that did not survive (the check allowed it: they
    /// were not durable), so that later appends, which reuse their LSNs,
    /// are checked against what the log now holds.
    pub(crate) fn settle(&mut self, recs: &[Rec], first: Lsn) {
        match recs.last() {
            Some(last) => {
                let i = self
                    .entries
                    .iter()
                    .position(|e| e.payload == last.payload)
                    .expect("a recovered record is in the journal");
                self.entries.truncate(i + 1);
            }
            None => self.entries.retain(|e| e.lsn.is_some_and(|l| l < first)),
        }
    }
}

/// Checks a recovered log against the journal of what was appended before
/// the crash, and returns its records:
/// - replay is a run of the journal's entries in order (same stream,
///   payload and kind; the same LSN wherever the append returned one),
///   skipping only entries whose call failed, with nothing skipped at its
///   start and LSN steps of 1 or 2 (a seal between two records);
/// - every acknowledged-durable record at or after the log's first LSN is
///   in it, and the newest acknowledged checkpoint (or a newer one) is the
///   recovered one;
/// - nothing else: no record from an earlier pass of the ring, no damage.
pub(crate) fn check_recovered<S: Storage>(
    wal: &Wal<S>,
    report: &RecoveryReport,
    journal: &Journal,
    what: &str,
) -> Vec<Rec> {
    let recs = records(wal);
    let first = wal.first_lsn().unwrap();
    assert_eq!(
        report.last_lsn,
        wal.last_lsn(),
        "{what}: report and log disagree"
    );
    // Match the records against the journal in order. An entry whose call
    // failed (no LSN) may be missing; every other entry from the first
    // replayed one on must be there.
    let start = match recs.first() {
        Some(r) => journal
            .entries
            .iter()
            .position(|e| e.payload == r.payload)
            .unwrap_or_else(|| panic!("{what}: replayed {r:?} was never appended")),
        None => journal.entries.len(),
    };
    // Nothing missing at the start: every record that returned an LSN at
    // or after the log's first one is replayed (when any record is).
    let before = if recs.is_empty() { 0 } else { start };
    for e in journal.entries.get(..before).unwrap_or_default() {
        if let Some(lsn) = e.lsn {
            assert!(
                lsn < first,
                "{what}: record {lsn} was skipped (the log starts at {first})"
            );
        }
    }
    let mut next = before;
    let mut prev: Option<Lsn> = None;
    for r in &recs {
        let e = loop {
            let e = journal.entries.get(next).unwrap_or_else(|| {
                panic!("{what}: replayed {r:?} is not the next appended record")
            });
            next += 1;
            if e.payload == r.payload {
                break e;
            }
            assert!(
                e.lsn.is_none(),
                "{what}: record {:?} (appended before LSN {}) is missing",
                e.lsn,
                r.lsn
            );
        };
        assert!(
            e.stream == r.stream && e.checkpoint == r.checkpoint,
            "{what}: record {} has the wrong stream or kind ({e:?} vs {r:?})",
            r.lsn
        );
        if let Some(lsn) = e.lsn {
            assert_eq!(lsn, r.lsn, "{what}: record moved");
        }
        if let Some(p) = prev {
            let step = r.lsn.0 - p.0;
            assert!(
                step == 1 || step == 2,
                "{what}: LSN jumps from {p} to {} (hole)",
                r.lsn
            );
        }
        prev = Some(r.lsn);
    }
    // Everything acknowledged after the last replayed record is lost: only
    // allowed for records that were not durable.
    for e in journal.entries.get(next..).unwrap_or_default() {
        if let Some(lsn) = e.lsn {
            assert!(
                lsn > journal.durable || lsn < first,
                "{what}: acknowledged-durable record {lsn} is lost (durable mark {}, \
                 report {report:?})",
                journal.durable
            );
        }
    }
    if let Some(last) = recs.last() {
        assert!(
            wal.last_lsn() == last.lsn || wal.last_lsn() == Lsn(last.lsn.0 + 1),
            "{what}: last LSN {} vs last record {}",
            wal.last_lsn(),
            last.lsn
        );
    }
    assert!(
        wal.last_lsn() >= journal.durable,
        "{what}: last LSN {} below the durable mark {}",
        wal.last_lsn(),
        journal.durable
    );
    if let Some(c) = journal.checkpoint {
        let got = report.checkpoint.as_ref().map(|c| c.lsn);
        assert!(
            got.is_some_and(|g| g >= c),
            "{what}: checkpoint {c} acknowledged, recovered {got:?}"
        );
    }
    if let Some(c) = &report.checkpoint {
        assert!(
            first.0 <= c.lsn.0 + 1,
            "{what}: records after checkpoint {} are gone (first {first})",
            c.lsn
        );
    }
    recs
}

/// Opens the log in `storage` (recovering it).
pub(crate) fn open(storage: &FaultStorage) -> Result<(Wal<FaultStorage>, RecoveryReport), Error> {
    open_with(storage, config())
}

/// Opens the log in `storage` with `config` (recovering it).
pub(crate) fn open_with(
    storage: &FaultStorage,
    config: WalConfig,
) -> Result<(Wal<FaultStorage>, RecoveryReport), Error> {
    Wal::open_in(storage.clone(), DIR, config)
}
