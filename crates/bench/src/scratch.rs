//! Data directories for disk benchmarks.
//!
//! Invariants:
//! - the root is `TIFFANY_BENCH_DIR` when set, else `target/bench-tmp` under
//!   the working directory, so that by default disk suites measure the
//!   filesystem the project lives on and not a tmpfs `/tmp`;
//! - each [`ScratchDir`] is a fresh directory of its own under the root,
//!   named after its suite and the process, and removed with everything in
//!   it when dropped.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The environment variable that chooses where disk suites write.
pub const BENCH_DIR_ENV: &str = "TIFFANY_BENCH_DIR";

/// The root under which disk suites create their directories, created if
/// missing: `$TIFFANY_BENCH_DIR`, else `./target/bench-tmp`.
pub fn bench_root() -> Result<PathBuf> {
    let root = match std::env::var_os(BENCH_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::current_dir()
            .context("cannot read the working directory")?
            .join("target")
            .join("bench-tmp"),
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the bench directory {}", root.display()))?;
    Ok(root)
}

/// A fresh directory under [`bench_root`] for one suite run; removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<bench_root>/<suite>-<pid>-<n>`, empty.
    pub fn new(suite: &str) -> Result<Self> {
        Self::new_in(&bench_root()?, suite)
    }

    /// Creates `<root>/<suite>-<pid>-<n>`, empty.
    pub fn new_in(root: &Path, suite: &str) -> Result<Self> {
        let pid = std::process::id();
        for n in 0u32.. {
            let path = root.join(format!("{suite}-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        anyhow::bail!("no free scratch directory name under {}", root.display())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory under target/ is harmless.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a test, not a task
    fn scratch_dir_is_fresh_and_removed_on_drop() {
        let root = std::env::temp_dir();
        let a = ScratchDir::new_in(&root, "tiffany-bench-test").unwrap();
        let b = ScratchDir::new_in(&root, "tiffany-bench-test").unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        std::fs::write(a.path().join("f"), b"x").unwrap();
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
    }
}
