//! [`FaultStorage`]: an in-memory [`Storage`] that keeps what a power loss
//! would leave apart from what the running process sees, and fails, tears
//! or stops on demand.
//!
//! Invariants of the model:
//! - A file is an *inode* with two images of the same, fixed length:
//!   `durable` (what survives a crash) and `current` (what reads see). Every
//!   successful [`StorageFile::write_at`] changes `current` and is appended
//!   to the inode's `pending` list; [`StorageFile::sync_data`] applies
//!   `pending` to `durable` in order and clears it. So `current` is always
//!   `durable` with `pending` applied, except after a failed sync (below).
//! - A failed `sync_data` discards `pending` without applying it while
//!   `current` keeps the bytes (by default; see
//!   [`FaultStorage::set_failed_sync_drops_writes`]): Linux marks the dirty
//!   pages clean after a write-back error, so the page cache still shows the
//!   data but no later sync will write it. This is why a log must never
//!   retry a failed sync.
//! - [`Storage::create`] makes a new inode of `len` zero bytes whose length
//!   and zeroes are durable at once (block allocation is journaled with the
//!   creation, as `fallocate` is on ext4 and XFS); the *name* pointing to it
//!   is not. Creating over an existing name binds the name to a fresh inode,
//!   so until the directory is synced a crash brings the old file back with
//!   its durable contents.
//! - A directory holds `durable` entries (name to inode) and the ordered
//!   list of entry changes made since its last [`Storage::sync_dir`]
//!   (creations, renames, removals); `current` entries are `durable` with
//!   the changes applied. A rename inside one directory is one change.
//!   Directories themselves are durable as soon as they are created.
//! - An open file refers to its inode, not its name: renaming or removing
//!   the name does not affect handles, as on POSIX.
//! - [`Storage::lock`] is exclusive per directory among the clones of one
//!   storage and creates no file (unlike `FileStorage`'s `LOCK`); a crashed
//!   storage starts with no locks held.
//! - Every fallible call of [`Storage`] or [`StorageFile`] is one
//!   *operation*, numbered from 1 in call order and recorded in the
//!   operation log ([`FaultStorage::ops`]). `len` and `is_empty` cannot fail
//!   and are not counted; the provided `write_atomic` and `read_all` are not
//!   overridden, so each of their steps counts (and can fail) on its own.
//! - After [`FaultStorage::crash_after`]`(n)`, operation `n + 1` and every
//!   later one fail without any effect. After [`FaultStorage::crash`], the
//!   old storage is dead: every operation on it (or on files opened from it)
//!   fails, because the process that used it is gone.
//! - [`FaultStorage::crash`] returns the state after a power loss: the
//!   durable images of the inodes reachable from durable directory entries,
//!   nothing else. With a [`Torn`] mode, a seeded choice of the unsynced
//!   writes (cut at 512-byte sector boundaries) and a prefix of each
//!   directory's unsynced entry changes reach the disk as well.
//! - Everything is behind one mutex, so operations are atomic with respect
//!   to each other; the model has no reordering other than what [`Torn`]
//!   applies at a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tiffany_wal::{Storage, StorageFile};

use crate::Rng;

/// The sector size of the model: a torn write keeps or loses whole sectors.
pub const SECTOR: u64 = 512;

/// The kinds of operation, for fault rules and the operation log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// [`Storage::create_dir_all`].
    CreateDirAll,
    /// [`Storage::list`].
    List,
    /// [`Storage::open`].
    Open,
    /// [`Storage::create`].
    Create,
    /// [`Storage::rename`].
    Rename,
    /// [`Storage::remove`].
    Remove,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`Storage::lock`].
    Lock,
    /// [`StorageFile::read_at`].
    Read,
    /// [`StorageFile::write_at`].
    Write,
    /// [`StorageFile::sync_data`].
    Sync,
    /// [`StorageFile::view`].
    View,
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with `EIO` and has no effect.
    Eio,
    /// The operation fails with `ENOSPC` and has no effect.
    Enospc,
    /// For a write: the first half of the buffer (rounded down) is written,
    /// then the call fails with `ENOSPC`, as a disk filling up mid-write
    /// does. Any other operation fails with `EIO` and has no effect.
    ShortWrite,
    /// The call reports success but its effect is lost: a sync makes
    /// nothing durable (a disk that acknowledges a flush it never did), a
    /// write changes nothing. Any other operation fails with `EIO`. For
    /// checking that a test notices lost data.
    Lost,
}

impl Fault {
    fn error(self, kind: OpKind) -> io::Error {
        match self {
            Fault::Enospc => io::Error::from_raw_os_error(libc::ENOSPC),
            Fault::ShortWrite if kind == OpKind::Write => {
                io::Error::from_raw_os_error(libc::ENOSPC)
            }
            Fault::Eio | Fault::ShortWrite | Fault::Lost => io::Error::from_raw_os_error(libc::EIO),
        }
    }
}

/// Which operations a fault hits. Build one with [`FaultRule::new`] and the
/// narrowing methods; every set condition must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// Only operations of this kind.
    pub kind: Option<OpKind>,
    /// Only operations on a path containing this text.
    pub path_contains: Option<String>,
    /// Only the operation with this number (see [`FaultStorage::ops`]).
    pub op_index: Option<u64>,
    /// Let this many matching operations through before firing.
    pub skip: u64,
    /// Fire this many times, then never again (`None`: every time).
    pub times: Option<u64>,
    /// What happens to a hit operation.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule hitting every operation with `fault`; narrow it down with the
    /// other methods.
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            kind: None,
            path_contains: None,
            op_index: None,
            skip: 0,
            times: None,
            fault,
        }
    }

    /// Only operations of `kind`.
    pub fn kind(mut self, kind: OpKind) -> FaultRule {
        self.kind = Some(kind);
        self
    }

    /// Only operations on paths containing `text`.
    pub fn path(mut self, text: &str) -> FaultRule {
        self.path_contains = Some(text.to_owned());
        self
    }

    /// Only operation number `index`.
    pub fn op(mut self, index: u64) -> FaultRule {
        self.op_index = Some(index);
        self
    }

    /// Let `n` matching operations through first.
    pub fn skip(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Fire `n` times only.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }

    fn matches(&self, index: u64, kind: OpKind, path: &Path) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.op_index.is_none_or(|i| i == index)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|text| path.to_string_lossy().contains(text))
    }
}

/// How much of the unsynced state a crash lets reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Torn {
    /// Nothing unsynced survives: durable images and durable entries only.
    None,
    /// Each file's unsynced writes reach the disk in order up to a random
    /// point; the write at that point is cut at a random sector boundary
    /// (possibly keeping none of it), later ones are lost. Each directory
    /// keeps a random prefix of its unsynced entry changes. This is a disk
    /// and file system that write back in order.
    Prefix {
        /// Seed of the choices.
        seed: u64,
    },
    /// Each unsynced write independently is kept whole, lost, cut at a
    /// random sector boundary, or keeps a random subset of its sectors: the
    /// page cache writes dirty pages back in any order and a power loss
    /// interrupts it anywhere. Directories keep a random prefix of their
    /// unsynced changes (the journal commits them in order).
    Scattered {
        /// Seed of the choices.
        seed: u64,
    },
}

/// The outcome of an operation, in the operation log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran (it may still have failed for an ordinary reason such as a
    /// missing file).
    Ran,
    /// A fault rule hit it.
    Injected(Fault),
    /// It came after the crash point (or after [`FaultStorage::crash`]) and
    /// did nothing.
    Stopped,
}

/// One entry of the operation log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Its number, from 1.
    pub index: u64,
    /// What it was.
    pub kind: OpKind,
    /// The file or directory.
    pub path: PathBuf,
    /// What happened.
    pub outcome: Outcome,
}

type Ino = u64;

#[derive(Clone)]
struct Write {
    offset: u64,
    data: Vec<u8>,
}

#[derive(Clone)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Write>,
}

#[derive(Clone)]
enum DirChange {
    Link { name: String, ino: Ino },
    Unlink { name: String },
    Rename { from: String, to: String, ino: Ino },
}

impl DirChange {
    fn apply(&self, entries: &mut BTreeMap<String, Ino>) {
        match self {
            DirChange::Link { name, ino } => {
                entries.insert(name.clone(), *ino);
            }
            DirChange::Unlink { name } => {
                entries.remove(name);
            }
            DirChange::Rename { from, to, ino } => {
                entries.remove(from);
                entries.insert(to.clone(), *ino);
            }
        }
    }
}

#[derive(Clone, Default)]
struct Dir {
    durable: BTreeMap<String, Ino>,
    current: BTreeMap<String, Ino>,
    pending: Vec<DirChange>,
}

struct RuleState {
    rule: FaultRule,
    seen: u64,
    fired: u64,
}

struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    ops: u64,
    log: Vec<Op>,
    rules: Vec<RuleState>,
    stop_after: Option<u64>,
    dead: bool,
    failed_sync_drops_writes: bool,
    locks: BTreeSet<PathBuf>,
}

impl State {
    fn empty(failed_sync_drops_writes: bool) -> State {
        State {
            dirs: BTreeMap::new(),
            inodes: BTreeMap::new(),
            next_ino: 1,
            ops: 0,
            log: Vec::new(),
            rules: Vec::new(),
            stop_after: None,
            dead: false,
            failed_sync_drops_writes,
            locks: BTreeSet::new(),
        }
    }

    /// Counts and logs one operation and decides its fate.
    fn begin(&mut self, kind: OpKind, path: &Path) -> Result<u64, Refusal> {
        self.ops += 1;
        let index = self.ops;
        let stopped = self.dead || self.stop_after.is_some_and(|n| index > n);
        let mut outcome = Outcome::Ran;
        if stopped {
            outcome = Outcome::Stopped;
        } else {
            for state in &mut self.rules {
                if !state.rule.matches(index, kind, path) {
                    continue;
                }
                state.seen += 1;
                let exhausted = state.rule.times.is_some_and(|t| state.fired >= t);
                if state.seen > state.rule.skip && !exhausted {
                    state.fired += 1;
                    outcome = Outcome::Injected(state.rule.fault);
                    break;
                }
            }
        }
        self.log.push(Op {
            index,
            kind,
            path: path.to_path_buf(),
            outcome,
        });
        match outcome {
            Outcome::Ran => Ok(index),
            Outcome::Injected(fault) => Err(Refusal {
                injected: Some(fault),
                err: fault.error(kind),
            }),
            Outcome::Stopped => Err(Refusal {
                injected: None,
                err: io::Error::other(if self.dead {
                    "fault storage: the storage has crashed".to_owned()
                } else {
                    format!(
                        "fault storage: stopped after operation {} (simulated crash)",
                        self.stop_after.unwrap_or_default()
                    )
                }),
            }),
        }
    }

    fn dir(&self, dir: &Path) -> io::Result<&Dir> {
        self.dirs.get(dir).ok_or_else(|| not_found(dir))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?
            .current
            .get(&name)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn change(&mut self, dir: &Path, change: DirChange) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        change.apply(&mut d.current);
        d.pending.push(change);
        Ok(())
    }

    fn inode(&mut self, ino: Ino) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other("fault storage: file no longer exists"))
    }

    /// The state a power loss leaves.
    fn crashed(&self, torn: Torn) -> State {
        let (mut rng, scattered) = match torn {
            Torn::None => (None, false),
            Torn::Prefix { seed } => (Some(Rng::new(seed)), false),
            Torn::Scattered { seed } => (Some(Rng::new(seed)), true),
        };
        let mut out = State::empty(self.failed_sync_drops_writes);
        let mut live = BTreeSet::new();
        for (path, dir) in &self.dirs {
            let mut entries = dir.durable.clone();
            let keep = match &mut rng {
                Some(rng) => rng.index(dir.pending.len() + 1),
                None => 0,
            };
            for change in dir.pending.iter().take(keep) {
                change.apply(&mut entries);
            }
            live.extend(entries.values().copied());
            out.dirs.insert(
                path.clone(),
                Dir {
                    durable: entries.clone(),
                    current: entries,
                    pending: Vec::new(),
                },
            );
        }
        for (&ino, inode) in &self.inodes {
            if !live.contains(&ino) {
                continue;
            }
            let mut image = inode.durable.clone();
            if let Some(rng) = &mut rng {
                if scattered {
                    tear_scattered(&mut image, &inode.pending, rng);
                } else {
                    tear_prefix(&mut image, &inode.pending, rng);
                }
            }
            out.inodes.insert(
                ino,
                Inode {
                    durable: image.clone(),
                    current: image,
                    pending: Vec::new(),
                },
            );
        }
        out.next_ino = self.next_ino;
        out
    }
}

/// The sector-aligned pieces of a write, as ranges of its buffer.
fn pieces(w: &Write) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let len = w.data.len();
    while at < len {
        let abs = w.offset + at as u64;
        let to_boundary = (SECTOR - abs % SECTOR) as usize;
        let end = (at + to_boundary).min(len);
        out.push((at, end));
        at = end;
    }
    out
}

fn apply_piece(image: &mut [u8], w: &Write, (from, to): (usize, usize)) {
    let start = w.offset as usize + from;
    if let (Some(dst), Some(src)) = (
        image.get_mut(start..start + (to - from)),
        w.data.get(from..to),
    ) {
        dst.copy_from_slice(src);
    }
}

fn tear_prefix(image: &mut [u8], pending: &[Write], rng: &mut Rng) {
    let whole = rng.index(pending.len() + 1);
    for w in pending.iter().take(whole) {
        apply_piece(image, w, (0, w.data.len()));
    }
    if let Some(w) = pending.get(whole) {
        let pieces = pieces(w);
        let keep = rng.index(pieces.len());
        for &piece in pieces.iter().take(keep) {
            apply_piece(image, w, piece);
        }
    }
}

fn tear_scattered(image: &mut [u8], pending: &[Write], rng: &mut Rng) {
    for w in pending {
        let pieces = pieces(w);
        match rng.below(8) {
            0..=2 => apply_piece(image, w, (0, w.data.len())),
            3..=4 => {}
            5..=6 => {
                let keep = rng.index(pieces.len());
                for &piece in pieces.iter().take(keep) {
                    apply_piece(image, w, piece);
                }
            }
            _ => {
                for &piece in &pieces {
                    if rng.chance(1, 2) {
                        apply_piece(image, w, piece);
                    }
                }
            }
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("fault storage: {} not found", path.display()),
    )
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_owned())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fault storage: {} has no file name", path.display()),
        )),
    }
}

fn range(len: usize, offset: u64, n: usize) -> io::Result<usize> {
    let start = usize::try_from(offset).map_err(io::Error::other)?;
    match start.checked_add(n) {
        Some(end) if end <= len => Ok(start),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{n} outside a file of {len} bytes"),
        )),
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // state from the next assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-memory, fault-injecting, crash-simulating [`Storage`]. Clones
/// share one state: keep a clone to inject faults into, count operations of
/// and crash the storage a [`tiffany_wal::Wal`] owns. The crate docs
/// describe the model.
#[derive(Clone)]
pub struct FaultStorage {
    shared: Arc<Shared>,
}

impl fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("FaultStorage")
            .field("files", &st.inodes.len())
            .field("ops", &st.ops)
            .field("dead", &st.dead)
            .finish()
    }
}

impl Default for FaultStorage {
    fn default() -> FaultStorage {
        FaultStorage::new()
    }
}

impl FaultStorage {
    /// An empty storage with no directories.
    pub fn new() -> FaultStorage {
        FaultStorage::from_state(State::empty(true))
    }

    fn from_state(state: State) -> FaultStorage {
        FaultStorage {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The state a power loss leaves now, as a new storage: durable file
    /// images and durable directory entries only. This storage (and every
    /// file opened from it) is dead afterwards: all its operations fail.
    pub fn crash(&self) -> FaultStorage {
        self.crash_with(Torn::None)
    }

    /// Like [`FaultStorage::crash`], letting part of the unsynced state reach
    /// the disk as `torn` decides.
    pub fn crash_with(&self, torn: Torn) -> FaultStorage {
        let mut st = self.state();
        st.dead = true;
        FaultStorage::from_state(st.crashed(torn))
    }

    /// An independent copy of this storage's files and directories,
    /// unsynced state included, with a fresh operation count, no fault
    /// rules, no crash point and no locks: run two futures from one state.
    pub fn fork(&self) -> FaultStorage {
        let st = self.state();
        let mut copy = State::empty(st.failed_sync_drops_writes);
        copy.dirs = st.dirs.clone();
        copy.inodes = st.inodes.clone();
        copy.next_ino = st.next_ino;
        FaultStorage::from_state(copy)
    }

    /// Stops the storage after operation `n`: every later operation fails
    /// and does nothing (`0`: nothing runs). Call [`FaultStorage::crash`]
    /// afterwards to get what survived.
    pub fn crash_after(&self, n: u64) {
        self.state().stop_after = Some(n);
    }

    /// Whether operations are refused now (past the crash point, or dead).
    pub fn is_stopped(&self) -> bool {
        let st = self.state();
        st.dead || st.stop_after.is_some_and(|n| st.ops >= n)
    }

    /// Adds a fault rule; rules are checked in the order added, the first
    /// that fires decides.
    pub fn inject(&self, rule: FaultRule) {
        self.state().rules.push(RuleState {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// Fails operation number `index` with `fault`.
    pub fn fail_op(&self, index: u64, fault: Fault) {
        self.inject(FaultRule::new(fault).op(index));
    }

    /// Fails every operation of `kind` with `fault`, until
    /// [`FaultStorage::clear_faults`].
    pub fn fail_every(&self, kind: OpKind, fault: Fault) {
        self.inject(FaultRule::new(fault).kind(kind));
    }

    /// Fails the next operation of `kind` with `fault`, once.
    pub fn fail_next(&self, kind: OpKind, fault: Fault) {
        self.inject(FaultRule::new(fault).kind(kind).times(1));
    }

    /// Removes every fault rule (not the crash point).
    pub fn clear_faults(&self) {
        self.state().rules.clear();
    }

    /// How many faults the rules have injected so far.
    pub fn injected(&self) -> u64 {
        self.state().rules.iter().map(|r| r.fired).sum()
    }

    /// Whether a failed `sync_data` loses the unsynced writes it should have
    /// made durable (default `true`, as Linux does; see the module notes).
    /// With `false` they stay pending and a later successful sync writes
    /// them.
    pub fn set_failed_sync_drops_writes(&self, drops: bool) {
        self.state().failed_sync_drops_writes = drops;
    }

    /// Operations counted so far.
    pub fn op_count(&self) -> u64 {
        self.state().ops
    }

    /// The operation log.
    pub fn ops(&self) -> Vec<Op> {
        self.state().log.clone()
    }

    /// Unsynced writes, over all files.
    pub fn unsynced_writes(&self) -> usize {
        self.state().inodes.values().map(|i| i.pending.len()).sum()
    }

    /// Unsynced directory changes, over all directories.
    pub fn unsynced_dir_changes(&self) -> usize {
        self.state().dirs.values().map(|d| d.pending.len()).sum()
    }

    /// The names in `dir` as the running process sees them (sorted).
    pub fn names(&self, dir: &Path) -> Vec<String> {
        let st = self.state();
        st.dirs
            .get(dir)
            .map(|d| d.current.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The names in `dir` that would survive a crash now (sorted).
    pub fn durable_names(&self, dir: &Path) -> Vec<String> {
        let st = self.state();
        st.dirs
            .get(dir)
            .map(|d| d.durable.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The current bytes of `path` (`None` when there is no such file).
    /// Not an operation: it is not counted and never fails.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        let ino = st.lookup(path).ok()?;
        st.inodes.get(&ino).map(|i| i.current.clone())
    }

    /// The bytes of `path` a crash would leave now (`None` when a crash
    /// would leave no such file).
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        let (dir, name) = split(path).ok()?;
        let ino = *st.dirs.get(&dir)?.durable.get(&name)?;
        st.inodes.get(&ino).map(|i| i.durable.clone())
    }

    /// Changes bytes of an existing file both in its current and durable
    /// images, as damage on the disk itself would: for corruption tests.
    /// Not an operation.
    pub fn overwrite(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state();
        let ino = st.lookup(path)?;
        let inode = st.inode(ino)?;
        let start = range(inode.current.len(), offset, bytes.len())?;
        for image in [&mut inode.current, &mut inode.durable] {
            if let Some(dst) = image.get_mut(start..start + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// Puts a durable file with `bytes` at `path` (creating its directory),
    /// as if it had always been on the disk. Not an operation.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut st = self.state();
        add_dirs(&mut st, &dir);
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(
            ino,
            Inode {
                durable: bytes.to_vec(),
                current: bytes.to_vec(),
                pending: Vec::new(),
            },
        );
        let d = st.dir_mut(&dir)?;
        d.durable.insert(name.clone(), ino);
        d.current.insert(name, ino);
        Ok(())
    }
}

fn add_dirs(st: &mut State, dir: &Path) {
    for d in dir.ancestors() {
        st.dirs.entry(d.to_path_buf()).or_default();
    }
}

/// A file of a [`FaultStorage`]: a handle on an inode.
pub struct FaultFile {
    shared: Arc<Shared>,
    ino: Ino,
    path: PathBuf,
    len: u64,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

/// The lock of a directory of a [`FaultStorage`]; released on drop.
pub struct FaultLock {
    shared: Arc<Shared>,
    dir: PathBuf,
}

impl fmt::Debug for FaultLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLock").field("dir", &self.dir).finish()
    }
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        self.shared.lock().locks.remove(&self.dir);
    }
}

/// Why an operation did not run.
struct Refusal {
    /// The injected fault, or `None` when the storage is stopped or dead.
    injected: Option<Fault>,
    err: io::Error,
}

fn fail<T>(refusal: Refusal) -> io::Result<T> {
    Err(refusal.err)
}

impl Storage for FaultStorage {
    type File = FaultFile;
    type Lock = FaultLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::CreateDirAll, dir) {
            return fail(e);
        }
        add_dirs(&mut st, dir);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::List, dir) {
            return fail(e);
        }
        Ok(st.dir(dir)?.current.keys().cloned().collect())
    }

    fn open(&self, path: &Path) -> io::Result<FaultFile> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::Open, path) {
            return fail(e);
        }
        let ino = st.lookup(path)?;
        let len = st.inode(ino)?.current.len() as u64;
        Ok(FaultFile {
            shared: Arc::clone(&self.shared),
            ino,
            path: path.to_path_buf(),
            len,
        })
    }

    fn create(&self, path: &Path, len: u64) -> io::Result<FaultFile> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::Create, path) {
            return fail(e);
        }
        let (dir, name) = split(path)?;
        st.dir(&dir)?;
        let size = usize::try_from(len).map_err(io::Error::other)?;
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(
            ino,
            Inode {
                durable: vec![0; size],
                current: vec![0; size],
                pending: Vec::new(),
            },
        );
        st.change(&dir, DirChange::Link { name, ino })?;
        Ok(FaultFile {
            shared: Arc::clone(&self.shared),
            ino,
            path: path.to_path_buf(),
            len,
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::Rename, from) {
            return fail(e);
        }
        let ino = st.lookup(from)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        st.dir(&to_dir)?;
        if from_dir == to_dir {
            st.change(
                &from_dir,
                DirChange::Rename {
                    from: from_name,
                    to: to_name,
                    ino,
                },
            )
        } else {
            st.change(&from_dir, DirChange::Unlink { name: from_name })?;
            st.change(&to_dir, DirChange::Link { name: to_name, ino })
        }
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::Remove, path) {
            return fail(e);
        }
        st.lookup(path)?;
        let (dir, name) = split(path)?;
        st.change(&dir, DirChange::Unlink { name })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::SyncDir, dir) {
            return fail(e);
        }
        let d = st.dir_mut(dir)?;
        d.durable = d.current.clone();
        d.pending.clear();
        Ok(())
    }

    fn lock(&self, dir: &Path) -> io::Result<FaultLock> {
        let mut st = self.state();
        if let Err(e) = st.begin(OpKind::Lock, dir) {
            return fail(e);
        }
        st.dir(dir)?;
        if !st.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "fault storage: the directory is locked",
            ));
        }
        Ok(FaultLock {
            shared: Arc::clone(&self.shared),
            dir: dir.to_path_buf(),
        })
    }
}

impl StorageFile for FaultFile {
    type View = Vec<u8>;

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut st = self.shared.lock();
        if let Err(e) = st.begin(OpKind::Read, &self.path) {
            return fail(e);
        }
        let inode = st.inode(self.ino)?;
        let start = range(inode.current.len(), offset, buf.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of file")
        })?;
        if let Some(src) = inode.current.get(start..start + buf.len()) {
            buf.copy_from_slice(src);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.shared.lock();
        let (keep, err) = match st.begin(OpKind::Write, &self.path) {
            Ok(_) => (buf.len(), None),
            Err(Refusal {
                injected: Some(Fault::ShortWrite),
                err,
            }) => (buf.len() / 2, Some(err)),
            Err(Refusal {
                injected: Some(Fault::Lost),
                ..
            }) => return Ok(()),
            Err(e) => return fail(e),
        };
        let inode = st.inode(self.ino)?;
        let start = range(inode.current.len(), offset, buf.len())?;
        let data = buf.get(..keep).unwrap_or_default();
        if let Some(dst) = inode.current.get_mut(start..start + keep) {
            dst.copy_from_slice(data);
        }
        if keep > 0 {
            inode.pending.push(Write {
                offset,
                data: data.to_vec(),
            });
        }
        match err {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.shared.lock();
        let result = st.begin(OpKind::Sync, &self.path);
        let drops = st.failed_sync_drops_writes;
        let inode = st.inode(self.ino)?;
        match result {
            Ok(_) => {
                for w in std::mem::take(&mut inode.pending) {
                    apply_piece(&mut inode.durable, &w, (0, w.data.len()));
                }
                Ok(())
            }
            Err(Refusal {
                injected: Some(Fault::Lost),
                ..
            }) => {
                inode.pending.clear();
                Ok(())
            }
            Err(refusal) => {
                if refusal.injected.is_some() && drops {
                    // An injected failure: the write-back of these pages is
                    // lost for good, though reads still see them.
                    inode.pending.clear();
                }
                Err(refusal.err)
            }
        }
    }

    fn view(&self) -> io::Result<Arc<Vec<u8>>> {
        let mut st = self.shared.lock();
        if let Err(e) = st.begin(OpKind::View, &self.path) {
            return fail(e);
        }
        Ok(Arc::new(st.inode(self.ino)?.current.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (FaultStorage, PathBuf) {
        let s = FaultStorage::new();
        let dir = PathBuf::from("/d");
        s.create_dir_all(&dir).unwrap();
        (s, dir)
    }

    #[test]
    fn fault_durable_and_unsynced_bytes_stay_apart() {
        let (s, dir) = disk();
        let path = dir.join("f");
        let f = s.create(&path, 2048).unwrap();
        s.sync_dir(&dir).unwrap();
        f.write_at(0, b"one").unwrap();
        f.sync_data().unwrap();
        f.write_at(3, b"two").unwrap();
        f.write_at(1024, b"three").unwrap();
        assert_eq!(&s.contents(&path).unwrap()[..6], b"onetwo");
        assert_eq!(&s.durable_contents(&path).unwrap()[..6], b"one\0\0\0");
        assert_eq!(s.unsynced_writes(), 2);
        let mut buf = [0u8; 5];
        f.read_at(1024, &mut buf).unwrap();
        assert_eq!(&buf, b"three", "reads see unsynced writes");

        let after = s.crash();
        let bytes = after.contents(&path).unwrap();
        assert_eq!(bytes.len(), 2048);
        assert_eq!(&bytes[..6], b"one\0\0\0");
        assert!(bytes[1024..1029].iter().all(|&b| b == 0));
        assert_eq!(after.unsynced_writes(), 0);
    }

    #[test]
    fn fault_unsynced_directory_entries_are_lost() {
        let (s, dir) = disk();
        let kept = s.create(&dir.join("kept"), 16).unwrap();
        kept.write_at(0, b"old").unwrap();
        kept.sync_data().unwrap();
        s.create(&dir.join("gone"), 16).unwrap();
        s.sync_dir(&dir).unwrap();
        // After the sync: a new file, a rename, a removal, a re-creation.
        s.create(&dir.join("new"), 16).unwrap();
        s.rename(&dir.join("kept"), &dir.join("moved")).unwrap();
        s.remove(&dir.join("gone")).unwrap();
        assert_eq!(s.names(&dir), ["moved", "new"]);
        assert_eq!(s.durable_names(&dir), ["gone", "kept"]);
        assert_eq!(s.unsynced_dir_changes(), 3);
        let after = s.crash();
        assert_eq!(after.names(&dir), ["gone", "kept"]);
        assert_eq!(&after.contents(&dir.join("kept")).unwrap()[..3], b"old");

        // Creating over a name binds a fresh inode: unsynced, the old file
        // comes back.
        let again = after.create(&dir.join("kept"), 16).unwrap();
        again.write_at(0, b"new").unwrap();
        again.sync_data().unwrap();
        assert_eq!(&after.contents(&dir.join("kept")).unwrap()[..3], b"new");
        let second = after.crash();
        assert_eq!(&second.contents(&dir.join("kept")).unwrap()[..3], b"old");

        // Synced, the changes survive.
        let f = second.create(&dir.join("x"), 8).unwrap();
        f.write_at(0, b"x").unwrap();
        f.sync_data().unwrap();
        second.rename(&dir.join("x"), &dir.join("y")).unwrap();
        second.sync_dir(&dir).unwrap();
        let third = second.crash();
        assert_eq!(third.names(&dir), ["gone", "kept", "y"]);
        assert_eq!(&third.contents(&dir.join("y")).unwrap()[..1], b"x");
    }

    #[test]
    fn fault_open_handles_follow_the_inode() {
        let (s, dir) = disk();
        let f = s.create(&dir.join("a"), 8).unwrap();
        s.rename(&dir.join("a"), &dir.join("b")).unwrap();
        f.write_at(0, b"via a").unwrap();
        assert_eq!(&s.contents(&dir.join("b")).unwrap()[..5], b"via a");
        assert!(s.open(&dir.join("a")).is_err());
        s.remove(&dir.join("b")).unwrap();
        f.write_at(0, b"still").unwrap();
        assert!(s.contents(&dir.join("b")).is_none());
    }

    /// Each sector of a torn file holds either its old bytes or the bytes of
    /// one of the writes to it: never a mix inside a sector.
    #[test]
    fn fault_torn_writes_keep_whole_sectors() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..300 {
            let (s, dir) = disk();
            let path = dir.join("f");
            let f = s.create(&path, 4096).unwrap();
            s.sync_dir(&dir).unwrap();
            // Two writes over three sectors, the first unaligned.
            f.write_at(100, &[1u8; 1000]).unwrap();
            f.write_at(1100, &[2u8; 900]).unwrap();
            let torn = if seed % 2 == 0 {
                Torn::Prefix { seed }
            } else {
                Torn::Scattered { seed }
            };
            let image = s.crash_with(torn).contents(&path).unwrap();
            let first: Vec<bool> = (100..1100).step_by(1).map(|i| image[i] == 1).collect();
            let second: Vec<bool> = (1100..2000).map(|i| image[i] == 2).collect();
            // Bytes are old (0) or the write's, sector by sector.
            for sector in 0..8 {
                let bytes = &image[sector * 512..(sector + 1) * 512];
                let mut kinds: Vec<u8> = bytes.to_vec();
                kinds.dedup();
                let inside_one_write = bytes.iter().all(|&b| b == 0)
                    || (sector * 512..(sector + 1) * 512)
                        .filter(|i| (100..1100).contains(i))
                        .all(|i| image[i] == 1)
                    || (sector * 512..(sector + 1) * 512)
                        .filter(|i| (1100..2000).contains(i))
                        .all(|i| image[i] == 2);
                assert!(
                    inside_one_write,
                    "seed {seed}: sector {sector} mixed: {kinds:?}"
                );
            }
            let whole1 = first.iter().all(|&b| b);
            let none1 = first.iter().all(|&b| !b);
            let any2 = second.iter().any(|&b| b);
            if let Torn::Prefix { .. } = torn {
                assert!(
                    !any2 || whole1,
                    "seed {seed}: in-order write-back kept the second write but not the first"
                );
            }
            outcomes.insert((matches!(torn, Torn::Prefix { .. }), whole1, none1, any2));
        }
        // Both modes produce kept, lost and cut writes; only scattered
        // lets a later write survive an earlier lost one.
        assert!(outcomes.contains(&(true, true, false, true)));
        assert!(outcomes.contains(&(true, false, true, false)));
        assert!(
            outcomes.contains(&(true, false, false, false)),
            "a cut first write"
        );
        assert!(
            outcomes.contains(&(false, false, true, true)),
            "{outcomes:?}"
        );
    }

    #[test]
    fn fault_torn_crash_is_deterministic_per_seed() {
        let image = |seed| {
            let (s, dir) = disk();
            let f = s.create(&dir.join("f"), 8192).unwrap();
            s.sync_dir(&dir).unwrap();
            for i in 0..8u8 {
                f.write_at(u64::from(i) * 700, &[i + 1; 700]).unwrap();
            }
            s.crash_with(Torn::Scattered { seed })
                .contents(&dir.join("f"))
                .unwrap()
        };
        assert_eq!(image(5), image(5));
        assert!((0..20).any(|seed| image(seed) != image(5)));
    }

    #[test]
    fn fault_torn_directory_changes_keep_a_prefix() {
        let mut seen = BTreeSet::new();
        for seed in 0..50 {
            let (s, dir) = disk();
            for name in ["a", "b", "c"] {
                s.create(&dir.join(name), 8).unwrap();
            }
            let names = s.crash_with(Torn::Prefix { seed }).names(&dir);
            let all = ["a", "b", "c"];
            assert_eq!(names, all[..names.len()], "not a prefix");
            seen.insert(names.len());
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn fault_injected_errors_hit_the_chosen_operations() {
        let (s, dir) = disk();
        let f = s.create(&dir.join("f"), 64).unwrap();
        let next = s.op_count() + 1;
        s.fail_op(next, Fault::Eio);
        let err = f.write_at(0, b"abc").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(s.contents(&dir.join("f")).unwrap()[0], 0, "no effect");
        f.write_at(0, b"abc").unwrap();

        s.fail_every(OpKind::Sync, Fault::Enospc);
        for _ in 0..3 {
            assert_eq!(
                f.sync_data().unwrap_err().raw_os_error(),
                Some(libc::ENOSPC)
            );
        }
        s.clear_faults();
        f.sync_data().unwrap();

        s.fail_next(OpKind::Write, Fault::ShortWrite);
        let err = f.write_at(8, b"12345678").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(&s.contents(&dir.join("f")).unwrap()[8..16], b"1234\0\0\0\0");
        f.write_at(16, b"ok").unwrap();

        s.inject(
            FaultRule::new(Fault::Eio)
                .kind(OpKind::Create)
                .path("tmp")
                .skip(1),
        );
        s.create(&dir.join("x.tmp"), 8).unwrap();
        s.create(&dir.join("y"), 8).unwrap();
        assert!(s.create(&dir.join("z.tmp"), 8).is_err());
        assert_eq!(s.injected(), 2, "faults fired since the last clear");
        let log = s.ops();
        assert_eq!(log.len() as u64, s.op_count());
        assert!(
            log.iter()
                .enumerate()
                .all(|(i, op)| op.index == i as u64 + 1)
        );
        assert_eq!(
            log.iter()
                .filter(|op| matches!(op.outcome, Outcome::Injected(_)))
                .count(),
            6
        );
    }

    #[test]
    fn fault_failed_sync_loses_the_unsynced_writes() {
        let (s, dir) = disk();
        let path = dir.join("f");
        let f = s.create(&path, 64).unwrap();
        s.sync_dir(&dir).unwrap();
        f.write_at(0, b"lost").unwrap();
        s.fail_next(OpKind::Sync, Fault::Eio);
        assert!(f.sync_data().is_err());
        f.write_at(8, b"kept").unwrap();
        f.sync_data().unwrap();
        assert_eq!(
            &s.contents(&path).unwrap()[..4],
            b"lost",
            "the cache still shows it"
        );
        let after = s.crash();
        let bytes = after.contents(&path).unwrap();
        assert_eq!(&bytes[..4], [0; 4], "never written back");
        assert_eq!(&bytes[8..12], b"kept");

        // The other model: a failed sync keeps the writes pending.
        let (s, dir) = disk();
        s.set_failed_sync_drops_writes(false);
        let f = s.create(&path, 64).unwrap();
        s.sync_dir(&dir).unwrap();
        f.write_at(0, b"kept").unwrap();
        s.fail_next(OpKind::Sync, Fault::Eio);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        assert_eq!(&s.crash().contents(&path).unwrap()[..4], b"kept");
    }

    #[test]
    fn fault_lost_operations_report_success_and_do_nothing() {
        let (s, dir) = disk();
        let path = dir.join("f");
        let f = s.create(&path, 64).unwrap();
        s.sync_dir(&dir).unwrap();
        s.fail_next(OpKind::Write, Fault::Lost);
        f.write_at(0, b"never").unwrap();
        assert_eq!(s.contents(&path).unwrap()[0], 0);
        f.write_at(0, b"cached").unwrap();
        s.fail_next(OpKind::Sync, Fault::Lost);
        f.sync_data().unwrap();
        assert_eq!(&s.contents(&path).unwrap()[..6], b"cached");
        assert_eq!(s.crash().contents(&path).unwrap()[0], 0, "the sync lied");
    }

    #[test]
    fn fault_crash_after_stops_everything_and_crash_kills_the_old_storage() {
        let (s, dir) = disk();
        let f = s.create(&dir.join("f"), 64).unwrap();
        s.sync_dir(&dir).unwrap();
        let n = s.op_count();
        s.crash_after(n + 1);
        f.write_at(0, b"a").unwrap();
        assert!(s.is_stopped());
        assert!(f.write_at(1, b"b").is_err());
        assert!(f.sync_data().is_err());
        assert!(s.list(&dir).is_err());
        assert_eq!(&s.contents(&dir.join("f")).unwrap()[..2], b"a\0");
        assert!(matches!(s.ops().last().unwrap().outcome, Outcome::Stopped));

        let after = s.crash();
        assert!(!after.is_stopped());
        assert_eq!(after.op_count(), 0);
        assert_eq!(after.contents(&dir.join("f")).unwrap()[0], 0);
        // The old storage and its files are dead.
        s.crash_after(u64::MAX);
        assert!(f.write_at(0, b"x").is_err());
        assert!(s.open(&dir.join("f")).is_err());
        after
            .open(&dir.join("f"))
            .unwrap()
            .write_at(0, b"x")
            .unwrap();
    }

    #[test]
    fn fault_lock_is_exclusive_per_directory() {
        let (s, dir) = disk();
        s.create_dir_all(Path::new("/other")).unwrap();
        let held = s.lock(&dir).unwrap();
        let err = s.lock(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let other = s.lock(Path::new("/other")).unwrap();
        assert!(s.clone().lock(&dir).is_err(), "clones share the lock table");
        drop(held);
        s.lock(&dir).unwrap();
        drop(other);
        // A crashed storage starts with no locks (the process is gone).
        let _again = s.lock(Path::new("/other")).unwrap();
        let after = s.crash();
        after.lock(Path::new("/other")).unwrap();
    }

    #[test]
    fn fault_view_is_a_snapshot_and_fork_is_independent() {
        let (s, dir) = disk();
        let f = s.create(&dir.join("f"), 8).unwrap();
        f.write_at(0, b"v1").unwrap();
        let view = f.view().unwrap();
        f.write_at(0, b"v2").unwrap();
        assert_eq!(&view[..2], b"v1");
        assert_eq!(&f.view().unwrap()[..2], b"v2");

        let copy = s.fork();
        assert_eq!(copy.op_count(), 0);
        f.write_at(0, b"v3").unwrap();
        assert_eq!(&copy.contents(&dir.join("f")).unwrap()[..2], b"v2");
        // The copy keeps the unsynced state: its crash loses the file,
        // whose name was never synced.
        assert!(copy.crash().contents(&dir.join("f")).is_none());
    }

    #[test]
    fn fault_writes_past_the_end_are_refused() {
        let (s, dir) = disk();
        let f = s.create(&dir.join("f"), 8).unwrap();
        assert_eq!(f.len(), 8);
        assert_eq!(
            f.write_at(6, b"abc").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut buf = [0u8; 4];
        assert!(f.read_at(6, &mut buf).is_err());
        assert!(s.create(Path::new("/missing/f"), 8).is_err());
        s.put_file(Path::new("/p/q"), b"raw").unwrap();
        assert_eq!(s.crash().contents(Path::new("/p/q")).unwrap(), b"raw");
    }
}
