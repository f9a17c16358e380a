//! Damaged logs on real files: a last slot cut at every offset of its
//! records, bit flips in every byte of a record, zero and 0xFF tails,
//! absurd lengths, duplicated and skipped LSNs, stale frames, misplaced and
//! duplicated segments, foreign files, a newer format version, a locked
//! directory. Every case either opens holding exactly a prefix of the
//! records (reporting what it cut) or fails with the typed error naming the
//! place.

// Tests read, copy and damage log files with blocking std::fs calls.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::{Path, PathBuf};

use tiffany_testkit::Rng;
use tiffany_wal::format::{
    self, FRAME_HEADER, Frame, FrameHeader, HEADER_BLOCK, HEADER_LEN, SegmentHeader, frame_size,
};
use tiffany_wal::{Error, Lsn, RecoveryMode, RecoveryReport, SyncMode, Wal, WalConfig};

fn config(recovery: RecoveryMode) -> WalConfig {
    WalConfig {
        segment_size: 64 << 10,
        recovery,
        ..WalConfig::default()
    }
}

const MODES: [RecoveryMode; 2] = [
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::TolerateCorruptTail,
];

/// A record as replayed: LSN, stream, payload.
type Rec = (Lsn, u64, Vec<u8>);

/// Where a frame sits.
#[derive(Clone, Copy, Debug)]
struct Loc {
    slot: u32,
    offset: usize,
    size: usize,
    header: FrameHeader,
}

/// A small pristine log: slot 0 sealed (three small records, then large
/// ones and small ones up to the seal), slot 1 the last segment with seven
/// small records, every record appended in `Data` mode.
struct Pristine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    records: Vec<Rec>,
    frames: Vec<Loc>,
}

fn slot_path(dir: &Path, slot: u32) -> PathBuf {
    dir.join(format!("slot-{slot:04}.seg"))
}

/// A directory for a damaged copy: in memory (`/dev/shm`) where there is
/// one, since every repair syncs and this test opens a thousand logs.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn pristine() -> Pristine {
    let dir = scratch();
    let path = dir.path().join("log");
    let wal = Wal::open(&path, config(RecoveryMode::default())).unwrap();
    let mut rng = Rng::new(77);
    let mut records = Vec::new();
    let mut append = |len: usize, stream: u64| {
        let payload = rng.bytes(len);
        let lsn = wal.append(stream, &payload, SyncMode::Data).unwrap();
        records.push((lsn, stream, payload));
    };
    for i in 0..3 {
        append(40 + 30 * i, 1);
    }
    // Large records while they fit, then small ones until one rotates, so
    // that the last segment holds small records only.
    loop {
        let active = wal.segments().unwrap().pop().unwrap();
        if active.used_bytes + (frame_size(5000) + frame_size(0)) as u64 > active.size {
            break;
        }
        append(5000, 2);
    }
    while wal.segments().unwrap().len() < 2 {
        append(30, 2);
    }
    for i in 0..6 {
        append(8 + 9 * i, 3);
    }
    drop(wal);
    let frames = [0, 1].iter().flat_map(|&s| frames_of(&path, s)).collect();
    Pristine {
        _dir: dir,
        path,
        records,
        frames,
    }
}

/// The valid frames of a slot file, in order, seal included.
fn frames_of(dir: &Path, slot: u32) -> Vec<Loc> {
    let bytes = fs::read(slot_path(dir, slot)).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let mut at = HEADER_BLOCK as usize;
    let mut out = Vec::new();
    while let Frame::Valid {
        header: h, size, ..
    } = format::decode_frame(&bytes[at..])
    {
        if h.seq32 != header.seq as u32 {
            break;
        }
        out.push(Loc {
            slot,
            offset: at,
            size,
            header: h,
        });
        at += size;
    }
    out
}

impl Pristine {
    /// A fresh copy of the log in its own directory.
    fn copy(&self) -> Copy {
        let copy = Copy { dir: scratch() };
        self.restore(&copy);
        copy
    }

    /// Makes `copy` the pristine log again.
    fn restore(&self, copy: &Copy) {
        for entry in fs::read_dir(copy.path()).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for entry in fs::read_dir(&self.path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name != "LOCK" {
                fs::copy(entry.path(), copy.path().join(name)).unwrap();
            }
        }
    }

    fn in_slot(&self, slot: u32) -> Vec<Loc> {
        self.frames
            .iter()
            .filter(|f| f.slot == slot)
            .copied()
            .collect()
    }

    /// Records with LSNs below `lsn`.
    fn before(&self, lsn: Lsn) -> Vec<Rec> {
        self.records.iter().filter(|r| r.0 < lsn).cloned().collect()
    }
}

struct Copy {
    dir: tempfile::TempDir,
}

impl Copy {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn slot(&self, slot: u32) -> PathBuf {
        slot_path(self.path(), slot)
    }

    fn patch(&self, slot: u32, offset: usize, bytes: &[u8]) {
        let mut data = fs::read(self.slot(slot)).unwrap();
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
        fs::write(self.slot(slot), data).unwrap();
    }

    fn open(&self, mode: RecoveryMode) -> Result<(Wal, RecoveryReport), Error> {
        Wal::open_with_report(self.path(), config(mode))
    }
}

fn replay_all(wal: &Wal) -> Vec<Rec> {
    let first = wal.first_lsn().unwrap();
    wal.replay(first..)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.lsn(), r.stream(), r.payload().to_vec())
        })
        .collect()
}

/// Opens, checks the records are exactly `want`, appends one record and
/// reopens (the repair held, the log goes on). Leaves the copy changed.
fn assert_opens_with(copy: &Copy, mode: RecoveryMode, want: &[Rec], what: &str) -> RecoveryReport {
    let report = assert_opens_holding(copy, mode, want, what);
    let (wal, _) = copy.open(mode).unwrap();
    let next = wal.append(9, b"after repair", SyncMode::Buffer).unwrap();
    assert_eq!(next.0, report.last_lsn.0 + 1, "{what}: next LSN");
    drop(wal);
    let (wal, again) = copy.open(mode).unwrap();
    assert_eq!(again.torn_tail, None, "{what}: the cut did not hold");
    assert_eq!(again.truncated_corruption, None, "{what}");
    let got = replay_all(&wal);
    assert_eq!(got.len(), want.len() + 1, "{what}: after the repair");
    assert!(got[..want.len()] == *want, "{what}: after the repair");
    report
}

/// Opens and checks the records are exactly `want`.
fn assert_opens_holding(
    copy: &Copy,
    mode: RecoveryMode,
    want: &[Rec],
    what: &str,
) -> RecoveryReport {
    let (wal, report) = copy
        .open(mode)
        .unwrap_or_else(|e| panic!("{what}: {mode:?} open failed: {e}"));
    let got = replay_all(&wal);
    assert!(
        got == want,
        "{what}: {mode:?} recovered LSNs {:?}, wanted {:?}",
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        want.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    report
}

fn assert_corrupt(
    result: Result<(Wal, RecoveryReport), Error>,
    slot: u32,
    offset: usize,
    what: &str,
) {
    match result {
        Err(Error::Corrupt {
            file, offset: o, ..
        }) => {
            assert_eq!(
                (file.file_name().unwrap().to_str().unwrap(), o),
                (format!("slot-{slot:04}.seg").as_str(), offset as u64),
                "{what}: the error names the place"
            );
        }
        Err(e) => panic!("{what}: expected Corrupt at slot {slot} offset {offset}, got {e}"),
        Ok((wal, _)) => panic!(
            "{what}: expected Corrupt at slot {slot} offset {offset}, opened with LSNs up to {}",
            wal.last_lsn()
        ),
    }
}

/// Cutting the last slot at every offset of its records (zeroes from there
/// on: the writes past it never reached the disk): the log opens with the
/// records wholly before the cut, reporting a torn tail when the cut
/// frame's header claims this segment.
#[test]
fn corrupt_last_slot_cut_at_every_offset() {
    let p = pristine();
    let last = p.in_slot(1);
    let end = last.last().map(|f| f.offset + f.size).unwrap();
    let copy = p.copy();
    for cut in HEADER_BLOCK as usize..=end {
        p.restore(&copy);
        let mut data = fs::read(copy.slot(1)).unwrap();
        data[cut..].fill(0);
        fs::write(copy.slot(1), data).unwrap();
        // The records whose checksummed bytes lie wholly before the cut.
        let covered = |f: &Loc| f.offset + FRAME_HEADER + f.header.len as usize;
        let cut_frame = last.iter().find(|f| f.offset < cut && cut < covered(f));
        let kept = last
            .iter()
            .take_while(|f| covered(f) <= cut)
            .last()
            .map_or(last[0].header.lsn, |f| Lsn(f.header.lsn.0 + 1));
        let what = format!("cut at {cut}");
        let want = p.before(kept);
        let report = if cut % 16 == 0 {
            assert_opens_with(&copy, RecoveryMode::AbsoluteConsistency, &want, &what)
        } else {
            assert_opens_holding(&copy, RecoveryMode::AbsoluteConsistency, &want, &what)
        };
        match cut_frame {
            None => assert_eq!(report.torn_tail, None, "{what}: a clean cut"),
            Some(f) if cut >= f.offset + 28 => assert_eq!(
                report.torn_tail.map(|t| (t.slot, t.offset)),
                Some((1, f.offset as u64)),
                "{what}: the torn frame is reported"
            ),
            Some(_) => {}
        }
    }
}

/// A bit flipped in any byte of a record of a sealed segment: the open
/// fails naming the slot and the frame's offset, in both modes (damage
/// before the last segment is never tolerated), except in the padding,
/// which no checksum covers and no reader uses.
#[test]
fn corrupt_bit_flip_in_every_byte_of_a_sealed_record() {
    let p = pristine();
    let target = p.in_slot(0)[1];
    let covered = FRAME_HEADER + target.header.len as usize;
    let copy = p.copy();
    for i in 0..target.size {
        for mode in MODES {
            p.restore(&copy);
            let at = target.offset + i;
            let byte = fs::read(copy.slot(0)).unwrap()[at];
            copy.patch(0, at, &[byte ^ (1 << (i % 8))]);
            let what = format!("flip at byte {i} of LSN {}", target.header.lsn);
            if i < covered {
                assert_corrupt(
                    copy.open(mode),
                    0,
                    target.offset,
                    &format!("{what} {mode:?}"),
                );
            } else {
                assert_opens_with(&copy, mode, &p.records, &what);
            }
        }
    }
}

/// A bit flipped in a record of the last segment followed by records that
/// were synced after it: `AbsoluteConsistency` fails naming the place;
/// `TolerateCorruptTail` cuts there and reports it.
#[test]
fn corrupt_bit_flip_in_every_byte_of_a_record_of_the_last_segment() {
    let p = pristine();
    let target = p.in_slot(1)[2];
    let covered = FRAME_HEADER + target.header.len as usize;
    let copy = p.copy();
    for i in 0..covered {
        p.restore(&copy);
        let at = target.offset + i;
        let byte = fs::read(copy.slot(1)).unwrap()[at];
        copy.patch(1, at, &[byte ^ (0x80 >> (i % 8))]);
        let what = format!("flip at byte {i} of LSN {}", target.header.lsn);
        assert_corrupt(
            copy.open(RecoveryMode::AbsoluteConsistency),
            1,
            target.offset,
            &what,
        );
        let report = assert_opens_with(
            &copy,
            RecoveryMode::TolerateCorruptTail,
            &p.before(target.header.lsn),
            &what,
        );
        let (cut, _) = report.truncated_corruption.expect("the cut is reported");
        assert_eq!((cut.slot, cut.offset), (1, target.offset as u64), "{what}");
    }
}

/// The newest record damaged: nothing after it claims it was synced, so it
/// is a torn tail in both modes.
#[test]
fn corrupt_damage_to_the_newest_record_is_a_torn_tail() {
    let p = pristine();
    let target = *p.in_slot(1).last().unwrap();
    for mode in MODES {
        let copy = p.copy();
        let at = target.offset + FRAME_HEADER + 1;
        copy.patch(1, at, &[0xA5]);
        let report = assert_opens_with(&copy, mode, &p.before(target.header.lsn), "newest");
        assert_eq!(
            report.torn_tail.map(|t| (t.slot, t.offset)),
            Some((1, target.offset as u64))
        );
    }
}

/// Zeroes or 0xFF bytes from a point on: zeroes after the last record are
/// the normal end; 0xFF garbage there is not ours and is ignored; either
/// from inside a record cuts that record.
#[test]
fn corrupt_zero_and_ff_tails() {
    let p = pristine();
    let last = p.in_slot(1);
    let end = last.last().map(|f| f.offset + f.size).unwrap();
    for fill in [0x00u8, 0xFF] {
        for (cut, keep) in [
            (end, Lsn(p.records.last().unwrap().0.0 + 1)),
            (end + 8, Lsn(p.records.last().unwrap().0.0 + 1)),
            (last[3].offset, last[3].header.lsn),
            (last[3].offset + 5, last[3].header.lsn),
            (last[0].offset, last[0].header.lsn),
        ] {
            let len = (64 << 10) - cut;
            let what = format!("{fill:#x} from {cut}");
            for mode in MODES {
                let copy2 = p.copy();
                copy2.patch(1, cut, &vec![fill; len]);
                assert_opens_with(&copy2, mode, &p.before(keep), &what);
            }
        }
    }
}

/// Length fields that point past the segment or far into it.
#[test]
fn corrupt_absurd_lengths() {
    let p = pristine();
    let last = p.in_slot(1);
    for len in [
        u32::MAX,
        u32::MAX / 2,
        64 << 10,
        (64 << 10) - 4096 - 40,
        1 << 20,
    ] {
        // The newest record: a torn tail in both modes.
        let newest = *last.last().unwrap();
        for mode in MODES {
            let copy = p.copy();
            copy.patch(1, newest.offset, &len.to_le_bytes());
            assert_opens_with(
                &copy,
                mode,
                &p.before(newest.header.lsn),
                &format!("len {len}"),
            );
        }
        // A record followed by synced ones: corruption, cut when tolerated.
        let middle = last[1];
        let copy = p.copy();
        copy.patch(1, middle.offset, &len.to_le_bytes());
        assert_corrupt(
            copy.open(RecoveryMode::AbsoluteConsistency),
            1,
            middle.offset,
            &format!("len {len} in the middle"),
        );
        assert_opens_with(
            &copy,
            RecoveryMode::TolerateCorruptTail,
            &p.before(middle.header.lsn),
            &format!("len {len} in the middle"),
        );
        // In a sealed segment: corruption in both modes.
        let sealed = p.in_slot(0)[0];
        for mode in MODES {
            let copy = p.copy();
            copy.patch(0, sealed.offset, &len.to_le_bytes());
            assert_corrupt(
                copy.open(mode),
                0,
                sealed.offset,
                &format!("len {len} sealed"),
            );
        }
    }
}

/// Writes a well-formed frame (valid checksum) at `offset` of `slot`.
fn put_frame(copy: &Copy, slot: u32, offset: usize, header: FrameHeader, payload: &[u8]) {
    let mut buf = vec![0; frame_size(payload.len())];
    format::encode_frame(&mut buf, &header, payload);
    copy.patch(slot, offset, &buf);
}

/// Well-formed frames of this segment with a repeated or skipped LSN after
/// the last record are not a torn write: `AbsoluteConsistency` fails naming
/// the frame; `TolerateCorruptTail` may cut there instead, never keep them.
#[test]
fn corrupt_duplicated_and_skipped_lsns() {
    let p = pristine();
    let newest = *p.in_slot(1).last().unwrap();
    let end = newest.offset + newest.size;
    let last = newest.header.lsn;
    for lsn in [last, Lsn(last.0 - 2), Lsn(last.0 + 2), Lsn(last.0 + 100)] {
        let what = format!("LSN {lsn} after {last}");
        let header = FrameHeader {
            lsn,
            ..newest.header
        };
        let copy = p.copy();
        put_frame(&copy, 1, end, header, b"crafted");
        assert_corrupt(copy.open(RecoveryMode::AbsoluteConsistency), 1, end, &what);
        match copy.open(RecoveryMode::TolerateCorruptTail) {
            Ok((wal, report)) => {
                assert!(replay_all(&wal) == p.records, "{what}: tolerated");
                assert!(report.truncated_corruption.is_some(), "{what}: reported");
            }
            Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{what}: {e}"),
        }
    }
    // The same LSN twice in a row inside the records (an overwritten
    // frame): corruption in both modes.
    let second = p.in_slot(1)[1];
    let dup = FrameHeader {
        lsn: Lsn(second.header.lsn.0 - 1),
        ..second.header
    };
    for mode in MODES {
        let copy = p.copy();
        let payload = vec![1u8; second.header.len as usize];
        put_frame(&copy, 1, second.offset, dup, &payload);
        let result = copy.open(mode);
        match mode {
            RecoveryMode::AbsoluteConsistency => {
                assert_corrupt(result, 1, second.offset, "repeated LSN inside")
            }
            RecoveryMode::TolerateCorruptTail => match result {
                Ok((wal, _)) => assert!(
                    replay_all(&wal) == p.before(second.header.lsn),
                    "repeated LSN inside, tolerated"
                ),
                Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
            },
        }
    }
}

/// A well-formed frame with the next LSN but an older segment's `seq32`
/// after the end (stale data of an earlier pass of the ring) is never read
/// as a record.
#[test]
fn corrupt_stale_frame_after_the_end_is_ignored() {
    let p = pristine();
    let newest = *p.in_slot(1).last().unwrap();
    let end = newest.offset + newest.size;
    for seq32 in [0, newest.header.seq32.wrapping_sub(1), 1234] {
        let copy = p.copy();
        let stale = FrameHeader {
            lsn: Lsn(newest.header.lsn.0 + 1),
            seq32,
            synced: newest.header.lsn,
            ..newest.header
        };
        put_frame(&copy, 1, end, stale, b"from an earlier pass");
        for mode in MODES {
            let copy2 = p.copy();
            put_frame(&copy2, 1, end, stale, b"from an earlier pass");
            let report = assert_opens_with(&copy2, mode, &p.records, "stale frame");
            assert_eq!(report.torn_tail, None);
        }
        drop(copy);
    }
}

/// Slot files renamed into each other's names: segments are ordered by
/// their sequence numbers, not their names.
#[test]
fn corrupt_swapped_slot_names_still_open() {
    let p = pristine();
    let copy = p.copy();
    let tmp = copy.path().join("swap");
    fs::rename(copy.slot(0), &tmp).unwrap();
    fs::rename(copy.slot(1), copy.slot(0)).unwrap();
    fs::rename(&tmp, copy.slot(1)).unwrap();
    let (wal, _) = copy
        .open(RecoveryMode::AbsoluteConsistency)
        .unwrap_or_else(|e| panic!("swapped names: {e}"));
    assert!(replay_all(&wal) == p.records);
    // Appends and rotations go on.
    for _ in 0..20 {
        wal.append(5, &[3u8; 5000], SyncMode::Data).unwrap();
    }
    let count = p.records.len() + 20;
    drop(wal);
    let (wal, _) = copy.open(RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(replay_all(&wal).len(), count);
}

/// A copy of a segment under another slot name (two segments with one
/// sequence number) is ambiguous: the open must fail or keep every record.
#[test]
fn corrupt_duplicated_segment_is_not_silently_resolved() {
    let p = pristine();
    let copy = p.copy();
    fs::copy(copy.slot(1), copy.slot(2)).unwrap();
    match copy.open(RecoveryMode::AbsoluteConsistency) {
        Ok((wal, _)) => assert!(
            replay_all(&wal) == p.records,
            "opened with LSNs from {}: records dropped",
            wal.first_lsn().unwrap()
        ),
        Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
    }
}

/// The segment a checkpoint needs renamed away: the open fails naming the
/// gap instead of starting after it.
#[test]
fn corrupt_missing_segment_after_the_checkpoint() {
    let p = pristine();
    let copy = p.copy();
    {
        let wal = Wal::open(copy.path(), config(RecoveryMode::default())).unwrap();
        wal.checkpoint(Lsn(2), b"early").unwrap();
        // Fill slot 1 and rotate into slot 2, so slot 1 is in the middle.
        while wal.segments().unwrap().len() < 3 {
            wal.append(2, &[4u8; 5000], SyncMode::Data).unwrap();
        }
    }
    fs::rename(copy.slot(1), copy.path().join("slot-0001.seg.bak")).unwrap();
    for mode in MODES {
        match copy.open(mode) {
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("{mode:?}: {e}"),
            Ok((wal, _)) => panic!(
                "{mode:?}: opened LSNs {}..={} without the segment in the middle",
                wal.first_lsn().unwrap(),
                wal.last_lsn()
            ),
        }
    }
}

/// A file named like a slot that is not ours is refused, whatever its
/// size, and never reused as a slot.
#[test]
fn corrupt_foreign_file_named_like_a_slot() {
    let p = pristine();
    for bytes in [
        vec![b'x'; 64 << 10],
        b"#!/bin/sh\necho not a log\n".repeat(200),
    ] {
        let copy = p.copy();
        let foreign = copy.slot(7);
        fs::write(&foreign, &bytes).unwrap();
        match copy.open(RecoveryMode::AbsoluteConsistency) {
            Err(Error::Foreign { path }) => assert_eq!(path, foreign),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a foreign file was accepted"),
        }
        assert_eq!(fs::read(&foreign).unwrap(), bytes, "left untouched");
    }
}

/// A short file (under one header block) named like a slot, not written by
/// us, must not be taken for a slot whose creation was interrupted and then
/// reused.
#[test]
fn corrupt_short_foreign_file_named_like_a_slot() {
    let p = pristine();
    let copy = p.copy();
    let foreign = copy.slot(7);
    fs::write(&foreign, b"#!/bin/sh\necho not a log\n").unwrap();
    let result = copy.open(RecoveryMode::AbsoluteConsistency);
    if let Ok((wal, report)) = &result {
        // Accepted: then using it must work and leave the file alone.
        let mut failure = None;
        for _ in 0..40 {
            if let Err(e) = wal.append(5, &[3u8; 5000], SyncMode::Data) {
                failure = Some(e);
                break;
            }
        }
        panic!(
            "a foreign file was accepted (reclaimed {:?}); appending then gave {failure:?}",
            report.reclaimed_slots
        );
    }
    assert!(matches!(result, Err(Error::Foreign { .. })));
}

/// A slot file shorter than its header says (cut by a copy or a file
/// system) holds records that must not vanish silently.
#[test]
fn corrupt_shortened_slot_file_is_not_silently_dropped() {
    let p = pristine();
    let copy = p.copy();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(copy.slot(1))
        .unwrap();
    file.set_len(8192).unwrap();
    drop(file);
    match copy.open(RecoveryMode::AbsoluteConsistency) {
        Ok((wal, report)) => {
            let got = replay_all(&wal);
            assert!(
                got == p.records,
                "opened with {} of {} records, reclaimed {:?}",
                got.len(),
                p.records.len(),
                report.reclaimed_slots
            );
        }
        Err(e) => assert!(
            matches!(&e, Error::Corrupt { file, .. } if file.ends_with("slot-0001.seg")),
            "{e}"
        ),
    }
}

/// A header from a newer format version is refused with the version.
#[test]
fn corrupt_newer_version_header() {
    let p = pristine();
    for slot in [0, 1] {
        let copy = p.copy();
        let mut head = fs::read(copy.slot(slot)).unwrap()[..HEADER_LEN].to_vec();
        head[8..10].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc_of(&head[..60]);
        head[60..64].copy_from_slice(&crc.to_le_bytes());
        copy.patch(slot, 0, &head);
        match copy.open(RecoveryMode::AbsoluteConsistency) {
            Err(Error::UnsupportedVersion {
                path,
                found,
                supported,
            }) => {
                assert_eq!((found, supported), (2, 1));
                assert_eq!(path, copy.slot(slot));
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a version-2 segment was opened"),
        }
    }
}

/// CRC32C, bit by bit (the test does not depend on the crate's).
fn crc_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A damaged `CHECKPOINT` file: recovery finds the newest checkpoint record
/// in the log instead.
#[test]
fn corrupt_checkpoint_file_falls_back_to_the_log() {
    let p = pristine();
    let copy = p.copy();
    {
        let wal = Wal::open(copy.path(), config(RecoveryMode::default())).unwrap();
        wal.checkpoint(Lsn(2), b"two").unwrap();
        wal.checkpoint(Lsn(5), b"five").unwrap();
    }
    let ckpt = copy.path().join("CHECKPOINT");
    let mut bytes = fs::read(&ckpt).unwrap();
    bytes[20] ^= 0x10;
    fs::write(&ckpt, &bytes).unwrap();
    let (_wal, report) = copy.open(RecoveryMode::AbsoluteConsistency).unwrap();
    let c = report.checkpoint.expect("the newest checkpoint record");
    assert_eq!((c.lsn, c.snapshot_ref.as_slice()), (Lsn(5), &b"five"[..]));
    assert!(report.checkpoint_from_log);
}

/// A directory a log is open in is locked: a second open fails with
/// `Error::Locked` until the first is dropped.
#[test]
fn corrupt_locked_directory() {
    let p = pristine();
    let copy = p.copy();
    let (wal, _) = copy.open(RecoveryMode::AbsoluteConsistency).unwrap();
    match copy.open(RecoveryMode::AbsoluteConsistency) {
        Err(Error::Locked { dir }) => assert_eq!(dir, copy.path()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened twice"),
    }
    drop(wal);
    copy.open(RecoveryMode::AbsoluteConsistency).unwrap();
}
