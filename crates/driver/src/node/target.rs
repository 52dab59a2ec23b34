//! The target directory kubelet hands over: is it mounted and complete, and its removal.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::PublishError;
use crate::mounter::Mounter;

/// Returns whether `target` is already mounted; creates it (0750) when missing. A mount point
/// that cannot be read (stale) is unmounted and reported as not mounted.
pub(super) fn ensure_mount_point(
    mounter: &dyn Mounter,
    target: &Path,
) -> Result<bool, PublishError> {
    let err = |source: std::io::Error| PublishError::MountPoint {
        path: target.display().to_string(),
        source,
    };
    if mounter.is_mounted(target).map_err(err)? {
        if holds_contents(target) {
            return Ok(true);
        }
        mounter.unmount(target).map_err(err)?;
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(target)
        .map_err(err)?;
    Ok(false)
}

/// Whether a mounted target holds what a finished publish leaves: the writer's `..data`, or
/// files a provider wrote itself (providers that return no files write into the target; they
/// never make `..data`). Empty, or only what a killed first write leaves (`..`-prefixed
/// directories, links that dangle because `..data` was never swapped in), means the first write
/// never finished: the caller unmounts and publishes again. Unreadable (stale) counts as empty.
fn holds_contents(target: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(target) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        // `exists` follows links: a dangling one is not contents.
        name == "..data" || (!name.as_encoded_bytes().starts_with(b"..") && e.path().exists())
    })
}

pub(super) fn cleanup_target(mounter: &dyn Mounter, target: &Path) -> Result<(), PublishError> {
    let err = |source: std::io::Error| PublishError::Cleanup {
        path: target.display().to_string(),
        source,
    };
    if mounter.is_mounted(target).map_err(err)? {
        mounter.unmount(target).map_err(err)?;
    }
    match std::fs::remove_dir_all(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounter::DirMounter;

    #[test]
    fn a_mount_counts_as_published_only_with_contents() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mounter = DirMounter::default();
        let target = dir.path().join("mount");
        assert!(
            !ensure_mount_point(&mounter, &target)?,
            "a new target is not mounted"
        );
        mounter.mount(&target)?;
        // Mounted but empty (the driver died before writing): publish again.
        assert!(!ensure_mount_point(&mounter, &target)?);
        mounter.mount(&target)?;
        // Only a killed writer's debris (a payload directory, a link waiting for ..data).
        std::fs::create_dir(target.join("..2026_12_02_15_00_00.1"))?;
        std::fs::write(target.join("..2026_12_02_15_00_00.1/a"), b"x")?;
        std::os::unix::fs::symlink("..data/a", target.join("a"))?;
        assert!(!ensure_mount_point(&mounter, &target)?);
        mounter.mount(&target)?;
        // Files a provider wrote itself (no ..data): mounted, keep it.
        std::fs::write(target.join("db-password"), b"x")?;
        assert!(ensure_mount_point(&mounter, &target)?);
        // The writer's ..data: mounted.
        std::fs::remove_file(target.join("db-password"))?;
        std::os::unix::fs::symlink("..2026_12_02_15_00_00.1", target.join("..data"))?;
        assert!(ensure_mount_point(&mounter, &target)?);
        Ok(())
    }
}
