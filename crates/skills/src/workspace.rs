//! Confinement: how a path an agent names becomes a path on disk.
//!
//! Every path a built-in skill touches (the `fs.*` paths, the shell's
//! `cwd`) goes through [`Workspace::resolve`], which enforces:
//!
//! 1. The path is relative to the workspace. An absolute path is rejected.
//! 2. No component is `..`, anywhere, even where the path would stay inside
//!    (`a/../b`): the rule is checkable without touching the disk and leaves
//!    nothing to interpret. `.` components are ignored; the empty path and
//!    `.` name the workspace itself.
//! 3. The workspace root is canonicalized. Of the joined path, the deepest
//!    ancestor that exists (by `lstat`, so a dangling symlink counts) is
//!    canonicalized too, which follows every symlink on the way including a
//!    final one, and must lie inside the canonical root. A symlink that
//!    cannot be resolved (dangling, or a loop) is rejected: where it would
//!    lead cannot be checked.
//! 4. The result is that canonical ancestor joined with the remaining
//!    components, none of which exists yet, so whatever a skill creates
//!    there is a new directory or file inside the workspace.
//!
//! Hence a symlink inside the workspace may be used when its target is
//! inside too; one that leads outside, at any depth, is refused with
//! [`SkillError::OutsideWorkspace`] before anything is created. Error
//! messages name the path as the agent wrote it, never the host path.
//!
//! Limit: this is check-then-use. Something that swaps a directory for a
//! symlink between the check and the use (a concurrent shell command of the
//! same agent, say) can race it. Files are opened with `O_NOFOLLOW`
//! ([`OPEN_FLAGS`]), which closes the race for the final component but not
//! for intermediate directories; kernel-enforced resolution (`openat2` with
//! `RESOLVE_BENEATH`, or a mount namespace) would close it and is not done.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::SkillError;

/// Flags for [`tokio::fs::OpenOptions::custom_flags`] when opening a
/// resolved path: `O_NOFOLLOW` (a final component that is a symlink fails
/// instead of being followed) and `O_NONBLOCK` (a FIFO planted in the
/// workspace cannot hang the open; regular files ignore the flag).
pub(crate) const OPEN_FLAGS: i32 = rustix::fs::OFlags::NOFOLLOW
    .union(rustix::fs::OFlags::NONBLOCK)
    .bits() as i32;

/// An agent's workspace, with its root canonicalized.
#[derive(Debug)]
pub(crate) struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Canonicalizes `root`, which must exist.
    pub(crate) async fn open(root: &Path) -> Result<Workspace, SkillError> {
        match tokio::fs::canonicalize(root).await {
            Ok(root) => Ok(Workspace { root }),
            Err(e) => Err(SkillError::Failed(format!(
                "workspace `{}` is unusable: {e}",
                root.display()
            ))),
        }
    }

    /// The canonical root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `requested` under the rules in the module docs.
    pub(crate) async fn resolve(&self, requested: &str) -> Result<PathBuf, SkillError> {
        let outside = || SkillError::OutsideWorkspace(requested.to_owned());
        let mut joined = self.root.clone();
        for component in Path::new(requested).components() {
            match component {
                Component::Normal(part) => joined.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(outside());
                }
            }
        }
        // `ancestors` ends at the root, which exists, so the loop returns.
        for ancestor in joined.ancestors() {
            match tokio::fs::symlink_metadata(ancestor).await {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => return Err(SkillError::Failed(format!("`{requested}`: {e}"))),
            }
            let canonical = tokio::fs::canonicalize(ancestor)
                .await
                .map_err(|_| outside())?;
            if !canonical.starts_with(&self.root) {
                return Err(outside());
            }
            let rest = joined.strip_prefix(ancestor).map_err(|_| outside())?;
            // Joining an empty path would add a trailing `/`, which makes
            // opening a file fail with ENOTDIR.
            if rest.as_os_str().is_empty() {
                return Ok(canonical);
            }
            return Ok(canonical.join(rest));
        }
        Err(outside())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::Workspace;
    use crate::SkillError;

    fn resolve(root: &std::path::Path, requested: &str) -> Result<PathBuf, SkillError> {
        let rt = tiffany_sched::Runtime::builder()
            .workers(1)
            .build()
            .unwrap();
        let (root, requested) = (root.to_owned(), requested.to_owned());
        rt.block_on(async move { Workspace::open(&root).await?.resolve(&requested).await })
    }

    #[test]
    fn workspace_lexical_escapes_are_rejected_without_touching_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["../x", "/etc/passwd", "a/../b", "a/../../x", "./.."] {
            assert_eq!(
                resolve(dir.path(), path),
                Err(SkillError::OutsideWorkspace(path.into())),
                "{path}"
            );
        }
    }

    #[test]
    fn workspace_paths_resolve_under_the_canonical_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(resolve(dir.path(), ""), Ok(root.clone()));
        assert_eq!(resolve(dir.path(), "./a/./b"), Ok(root.join("a/b")));
        std::fs::create_dir(root.join("a")).unwrap();
        // Compared as strings: `Path` equality ignores a trailing `/`, the
        // kernel does not (opening `file/` fails).
        let text = |path: &str| resolve(dir.path(), path).map(PathBuf::into_os_string);
        assert_eq!(text("a"), Ok(root.join("a").into_os_string()));
        assert_eq!(text("a/"), Ok(root.join("a").into_os_string()));
    }
}
