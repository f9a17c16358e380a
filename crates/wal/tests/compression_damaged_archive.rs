//! Damaged and unfinished archives: a bit flip in the body, a damaged
//! header, a truncated file or an archive holding the wrong segment is an
//! `Error::Corrupt` naming the archive, at open and during replay; a
//! temporary archive left by a crash is removed at open, its segment still
//! read from its slot.

mod common;

use std::path::{Path, PathBuf};

use common::{compressed_config, dir, open_with, payload, records};
use tiffany_testkit::{FaultStorage, OpKind, Outcome};
use tiffany_wal::{Error, SyncMode};

/// A log of a few archived segments and an active one; returns the
/// storage and the path of its second archive.
fn archived_log() -> (FaultStorage, PathBuf) {
    let storage = FaultStorage::new();
    assert_eq!(write_log(&storage), 300);
    let mut names = storage.names(dir());
    names.retain(|n| n.starts_with("sealed-"));
    assert!(names.len() >= 2, "{names:?}");
    (storage, dir().join(&names[1]))
}

/// Damages the archive in a storage.
type Damage<'a> = Box<dyn Fn(&FaultStorage) + 'a>;

fn assert_names(err: &Error, archive: &Path, what: &str) {
    assert!(
        matches!(err, Error::Corrupt { file, .. } if file == archive),
        "{what}: expected Corrupt naming {}, got {err}",
        archive.display()
    );
}

#[test]
fn compression_damaged_archive_is_a_typed_error_naming_it() {
    let (storage, archive) = archived_log();
    let len = storage.contents(&archive).unwrap().len();
    let damages: [(&str, Damage<'_>); 4] = [
        (
            "a bit flip in the body",
            Box::new(|s| flip(s, &archive, len - 10)),
        ),
        (
            "a bit flip in the header",
            Box::new(|s| flip(s, &archive, 20)),
        ),
        (
            "a truncated file",
            Box::new(|s| {
                let bytes = s.contents(&archive).unwrap();
                s.put_file(&archive, &bytes[..bytes.len() - 1]).unwrap();
            }),
        ),
        (
            "another segment's archive under its name",
            Box::new(|s| {
                let first = s
                    .names(dir())
                    .into_iter()
                    .find(|n| n.starts_with("sealed-"))
                    .unwrap();
                s.put_file(&archive, &s.contents(&dir().join(first)).unwrap())
                    .unwrap();
            }),
        ),
    ];
    for (what, damage) in &damages {
        // At open: recovery reads every archive after the checkpoint.
        let copy = storage.fork();
        damage(&copy);
        let err = open_with(&copy, compressed_config()).err().expect(what);
        assert_names(&err, &archive, what);

        // During replay: the damage came after the open.
        let copy = storage.fork();
        let (wal, _) = open_with(&copy, compressed_config()).unwrap();
        damage(&copy);
        let err = wal.replay(..).unwrap().find_map(Result::err).expect(what);
        assert_names(&err, &archive, what);
        assert!(err.to_string().contains("sealed-"), "{err}");
    }
}

fn flip(storage: &FaultStorage, path: &Path, at: usize) {
    let byte = storage.contents(path).unwrap()[at];
    storage.overwrite(path, at as u64, &[byte ^ 0x08]).unwrap();
}

/// The process dies after the archive's bytes are synced but before its
/// rename (a fork keeps what the page cache held, names included): the
/// temporary file is removed at open and every record is still read.
#[test]
fn compression_leftover_temp_archive_is_removed_at_open() {
    let reference = FaultStorage::new();
    write_log(&reference);
    let rename = reference
        .ops()
        .into_iter()
        .find(|op| op.kind == OpKind::Rename && op.path.to_string_lossy().ends_with(".lz4.tmp"))
        .expect("an archive was renamed into place");
    assert_eq!(rename.outcome, Outcome::Ran);

    let storage = FaultStorage::new();
    storage.crash_after(rename.index - 1);
    let written = write_log(&storage);
    let image = storage.fork();
    let temps = |s: &FaultStorage| {
        let names = s.names(dir());
        names
            .into_iter()
            .filter(|n| n.ends_with(".lz4.tmp"))
            .count()
    };
    assert_eq!(
        temps(&image),
        1,
        "the dead process left the temporary archive"
    );
    let (wal, _) = open_with(&image, compressed_config()).unwrap();
    assert_eq!(temps(&image), 0, "removed at open");
    let got = records(&wal);
    assert_eq!(got.len(), written, "every record is still there");
    assert!(wal.segments().unwrap().iter().all(|s| !s.archived));
    // The segment is archived again, and read back from the archive.
    assert!(wal.archive().unwrap() >= 1);
    assert!(records(&wal) == got);
}

/// Appends 300 records over a few rotations, archiving every 100, until
/// the storage stops; returns how many were written.
fn write_log(storage: &FaultStorage) -> usize {
    let Ok((wal, _)) = open_with(storage, compressed_config()) else {
        return 0;
    };
    let mut written = 0;
    for i in 0..300u64 {
        if wal.append(i % 2, &payload(i, 600), SyncMode::Data).is_err() {
            break;
        }
        written += 1;
        if i % 100 == 99 && wal.archive().is_err() {
            break;
        }
    }
    written
}
