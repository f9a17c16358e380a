//! Operating-system probes shared by the suites: the page size, the type of
//! a filesystem, and the page cache of a set of files (how much of them is
//! resident, and dropping it for cold-start measurements).
//!
//! Invariants:
//! - [`drop_page_cache`] first uses the targeted `posix_fadvise(DONTNEED)`,
//!   which touches only the named files; it falls back to
//!   `/proc/sys/vm/drop_caches` (the clean page cache of the whole machine)
//!   only when the caller allows it, the files are still more than
//!   [`COLD_ENOUGH`] resident, and the process runs as root;
//! - it never claims a cold cache without looking: the returned
//!   [`CacheDrop`] carries the resident share measured with `mincore` after
//!   the drop, whatever the method;
//! - dirty pages cannot be dropped, so every file is `fdatasync`ed first.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The largest resident share of the files at which a cache counts as cold.
pub(crate) const COLD_ENOUGH: f64 = 0.01;

/// The size of a memory page.
pub(crate) fn page_size() -> Result<u64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .context("cannot read the page size")
}

/// The type of the filesystem holding `path`: its usual name for the common
/// ones (`ext4`, `xfs`, `btrfs`, `tmpfs`, ...), else its magic number.
pub(crate) fn filesystem(path: &Path) -> Result<String> {
    let c_path = CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a writable
    // statfs, both alive for the whole call.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    // The field's integer type differs between C libraries.
    #[allow(clippy::unnecessary_cast)]
    Ok(filesystem_name(stat.f_type as u64))
}

fn filesystem_name(magic: u64) -> String {
    let name = match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x0102_1994 => "tmpfs",
        0x8584_58F6 => "ramfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        other => return format!("{other:#x}"),
    };
    name.to_owned()
}

/// Whether a filesystem named by [`filesystem`] keeps its files in memory.
pub(crate) fn in_memory(filesystem: &str) -> bool {
    matches!(filesystem, "tmpfs" | "ramfs")
}

/// How a page cache was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropMethod {
    /// `posix_fadvise(POSIX_FADV_DONTNEED)` on each file.
    Fadvise,
    /// `sync`, then `1` written to `/proc/sys/vm/drop_caches` (after the
    /// fadvise left pages resident).
    DropCaches,
}

impl DropMethod {
    /// How reports name the method.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropMethod::Fadvise => "posix_fadvise(DONTNEED)",
            DropMethod::DropCaches => "/proc/sys/vm/drop_caches",
        }
    }
}

/// The outcome of [`drop_page_cache`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CacheDrop {
    /// The last method used.
    pub(crate) method: DropMethod,
    /// The share of the files' pages still resident afterwards, `0..=1`.
    pub(crate) resident: f64,
}

/// Evicts `files` from the page cache and reports how cold they are now.
/// `allow_global` permits the machine-wide fallback (see the module docs).
pub(crate) fn drop_page_cache(files: &[PathBuf], allow_global: bool) -> Result<CacheDrop> {
    for path in files {
        fadvise_dontneed(path)?;
    }
    let resident = resident_share(files)?;
    if resident <= COLD_ENOUGH || !allow_global || !is_root() {
        return Ok(CacheDrop {
            method: DropMethod::Fadvise,
            resident,
        });
    }
    drop_all_caches()?;
    Ok(CacheDrop {
        method: DropMethod::DropCaches,
        resident: resident_share(files)?,
    })
}

/// The share of the pages of `files` that are in the page cache, `0..=1`
/// (0 when the files are empty).
pub(crate) fn resident_share(files: &[PathBuf]) -> Result<f64> {
    let (mut resident, mut total) = (0u64, 0u64);
    for path in files {
        let (r, t) = resident_pages(path)?;
        resident += r;
        total += t;
    }
    Ok(share(resident, total))
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn fadvise_dontneed(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.sync_data()
        .with_context(|| format!("cannot fdatasync {}", path.display()))?;
    // SAFETY: the descriptor stays open for the whole call; posix_fadvise
    // only gives the kernel advice about it and touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        // posix_fadvise returns the error number instead of setting errno.
        return Err(io::Error::from_raw_os_error(rc))
            .with_context(|| format!("posix_fadvise(DONTNEED) on {}", path.display()));
    }
    Ok(())
}

fn drop_all_caches() -> Result<()> {
    // SAFETY: sync has no preconditions and cannot fail.
    unsafe { libc::sync() };
    OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .and_then(|mut f| f.write_all(b"1\n"))
        .context("cannot write /proc/sys/vm/drop_caches")
}

/// `(resident pages, pages)` of one file, by `mincore` on a fresh mapping.
fn resident_pages(path: &Path) -> Result<(u64, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, 0));
    }
    let pages = len.div_ceil(page_size()?);
    let map_len = usize::try_from(len).context("file too large to map")?;
    let mut flags = vec![0u8; usize::try_from(pages).context("file too large to map")?];
    // SAFETY: a new read-only shared mapping of an open file, at an address
    // the kernel chooses; nothing ever reads or writes through it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot map {}", path.display()));
    }
    // SAFETY: `addr..addr + map_len` is the mapping made above and `flags`
    // holds one byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(addr, map_len, flags.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above; nothing refers to it.
    unsafe { libc::munmap(addr, map_len) };
    if rc != 0 {
        return Err(err).with_context(|| format!("mincore on {}", path.display()));
    }
    let resident = flags.iter().filter(|&&f| f & 1 != 0).count() as u64;
    Ok((resident, pages))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn os_page_size_is_a_power_of_two() {
        let page = page_size().unwrap();
        assert!(page >= 512 && page.is_power_of_two(), "{page}");
    }

    #[test]
    fn os_filesystem_names_known_magics() {
        assert_eq!(filesystem_name(0xEF53), "ext4");
        assert_eq!(filesystem_name(0x0102_1994), "tmpfs");
        assert_eq!(filesystem_name(0x1234), "0x1234");
        assert!(in_memory("tmpfs") && in_memory("ramfs") && !in_memory("ext4"));
        assert!(!filesystem(Path::new("/")).unwrap().is_empty());
        assert!(filesystem(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn os_share_of_nothing_is_zero() {
        assert_eq!(share(0, 0), 0.0);
        assert_eq!(share(1, 4), 0.25);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test, not a task
    fn os_written_file_is_resident_and_fadvise_reports_a_share() {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-os-test").unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let files = [path];
        assert!(resident_share(&files).unwrap() > 0.5, "just written");
        // Never the machine-wide fallback in a test. On a tmpfs the pages
        // are the file and stay resident; on a disk they go.
        let dropped = drop_page_cache(&files, false).unwrap();
        assert_eq!(dropped.method, DropMethod::Fadvise);
        assert!((0.0..=1.0).contains(&dropped.resident), "{dropped:?}");
        assert_eq!(resident_share(&[]).unwrap(), 0.0);
    }
}
