//! Mounting the volume's backing store at the target path.
//!
//! [`TmpfsMounter`] mounts a tmpfs (needs CAP_SYS_ADMIN, as the DaemonSet runs privileged) so
//! secrets never touch a disk; [`DirMounter`] only creates the directory, for the demo and CLI
//! running as a normal user.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Mount-point operations on a target path. Blocking; callers run them off the async runtime.
pub trait Mounter: Send + Sync + 'static {
    /// Whether `path` is currently a mount point made by this mounter.
    fn is_mounted(&self, path: &Path) -> io::Result<bool>;
    /// Mount at `path` (which exists).
    fn mount(&self, path: &Path) -> io::Result<()>;
    /// Unmount `path`; not an error if it is not mounted.
    fn unmount(&self, path: &Path) -> io::Result<()>;
}

// === impl TmpfsMounter ===

/// `mount -t tmpfs tmpfs <target>` with no options, as upstream, via mount(2).
#[derive(Debug, Default, Clone)]
pub struct TmpfsMounter;

impl Mounter for TmpfsMounter {
    fn is_mounted(&self, path: &Path) -> io::Result<bool> {
        is_mount_point(path)
    }

    fn mount(&self, path: &Path) -> io::Result<()> {
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(io::Error::from)
    }

    fn unmount(&self, path: &Path) -> io::Result<()> {
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => Ok(()),
            // EINVAL: not a mount point; ENOENT: gone already.
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `path` is a mount point: one `statx(2)` of the path, whose `STATX_ATTR_MOUNT_ROOT`
/// says whether it is the root of a mount (Linux 5.8+). Constant time however many mounts the
/// node has, and exact: bind mounts of the same filesystem count, which comparing `st_dev` with
/// the parent misses. Symlinks are followed, as `umount2` without `UMOUNT_NOFOLLOW` does.
///
/// A missing path is not mounted. A mount point whose filesystem no longer answers (`ENOTCONN`,
/// `EIO`, `ESTALE`, `EHOSTDOWN`: a dead FUSE daemon, a lost NFS server) counts as mounted, as in
/// kubernetes' mount-utils `IsCorruptedMnt`, so cleanup unmounts it instead of failing. On a
/// kernel without the attribute the answer comes from [`is_mount_point_by_mountinfo`].
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
    use rustix::io::Errno;
    // No automount; DONT_SYNC: no revalidation round trip to a network filesystem's server.
    let flags = AtFlags::NO_AUTOMOUNT | AtFlags::STATX_DONT_SYNC;
    match rustix::fs::statx(CWD, path, flags, StatxFlags::empty()) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        Ok(_) | Err(Errno::NOSYS) => is_mount_point_by_mountinfo(path),
        Err(Errno::NOENT) => Ok(false),
        Err(Errno::NOTCONN | Errno::IO | Errno::STALE | Errno::HOSTDOWN) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` is a mount point, from a scan of `/proc/self/mountinfo`: linear in the mounts
/// on the node (about 10 ms a call with 2,000), so only the fallback of [`is_mount_point`] for
/// kernels older than 5.8, and the reference its tests and `benches/unpublish.rs` compare with.
pub fn is_mount_point_by_mountinfo(path: &Path) -> io::Result<bool> {
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().any(|line| {
        // Fields: id parent major:minor root mount-point options ...
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| Path::new(&unescape_mountinfo(mp)) == canonical)
    }))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // `\ooo` above `\377` is not a byte (u8 arithmetic overflowed on it): kept literally.
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| {
                let v = d.iter().fold(0u16, |v, b| v * 8 + u16::from(b - b'0'));
                u8::try_from(v).ok()
            });
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === impl DirMounter ===

/// No mount at all: the target stays a plain directory. "Mounted" is tracked in memory, so a
/// restart forgets it (the next publish rewrites the files, which the writer skips if equal).
#[derive(Debug, Default)]
pub struct DirMounter {
    mounted: Mutex<HashSet<PathBuf>>,
}

impl Mounter for DirMounter {
    fn is_mounted(&self, path: &Path) -> io::Result<bool> {
        let set = self.mounted.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(set.contains(path) && path.is_dir())
    }

    fn mount(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)?;
        self.mounted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf());
        Ok(())
    }

    fn unmount(&self, path: &Path) -> io::Result<()> {
        self.mounted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/a\134b\011"), "/a\\b\t");
        // Not a byte, or cut short: kept as written (the u8 arithmetic used to overflow).
        assert_eq!(unescape_mountinfo(r"/a\777\400"), r"/a\777\400");
        assert_eq!(unescape_mountinfo(r"/a\04"), r"/a\04");
        assert_eq!(unescape_mountinfo("\\"), "\\");
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() -> anyhow::Result<()> {
        assert!(is_mount_point(Path::new("/"))?);
        assert!(is_mount_point_by_mountinfo(Path::new("/"))?);
        let dir = tempfile::tempdir()?;
        assert!(!is_mount_point(dir.path())?);
        assert!(!is_mount_point(&dir.path().join("missing"))?);
        assert!(!is_mount_point_by_mountinfo(dir.path())?);
        Ok(())
    }

    /// The workspace's poison policy: the set is recovered, not turned into an error that fails
    /// every later publish.
    #[test]
    fn a_poisoned_dir_mounter_keeps_working() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let m = DirMounter::default();
        m.mount(dir.path())?;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = m.mounted.lock();
            panic!("poisoning the mounter on purpose");
        }));
        assert!(m.mounted.is_poisoned());
        assert!(m.is_mounted(dir.path())?);
        m.unmount(dir.path())?;
        assert!(!m.is_mounted(dir.path())?);
        Ok(())
    }

    /// Unmounts (lazily, in reverse order) what a test mounted, whatever the test's outcome.
    struct Mounted(Vec<PathBuf>);

    impl Drop for Mounted {
        fn drop(&mut self) {
            for p in self.0.iter().rev() {
                let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }

    /// The statx answer agrees with the mountinfo scan on real mounts: a tmpfs, a bind mount of
    /// the same filesystem (same `st_dev` as its parent), a directory inside a mount, a link to a
    /// mount point, a file, a missing path, and the targets again once unmounted.
    #[test]
    fn statx_agrees_with_mountinfo_as_root() -> anyhow::Result<()> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED statx_agrees_with_mountinfo_as_root: needs root for mount(2)");
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let tmpfs = dir.path().join("tmpfs");
        let (src, bind) = (dir.path().join("src"), dir.path().join("bind"));
        for d in [&tmpfs, &src, &bind] {
            std::fs::create_dir(d)?;
        }
        let mut guard = Mounted(Vec::new());
        TmpfsMounter.mount(&tmpfs)?;
        guard.0.push(tmpfs.clone());
        rustix::mount::mount_bind(&src, &bind)?;
        guard.0.push(bind.clone());
        let inner = tmpfs.join("inner");
        std::fs::create_dir(&inner)?;
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&tmpfs, &link)?;
        let file = dir.path().join("file");
        std::fs::write(&file, b"x")?;

        let cases: [(&Path, bool); 8] = [
            (&tmpfs, true),
            (&bind, true),
            (&link, true),
            (&inner, false),
            (&src, false),
            (&file, false),
            (dir.path(), false),
            (&dir.path().join("missing"), false),
        ];
        for (path, want) in cases {
            assert_eq!(is_mount_point(path)?, want, "statx: {}", path.display());
            assert_eq!(
                is_mount_point_by_mountinfo(path)?,
                want,
                "mountinfo: {}",
                path.display()
            );
        }
        TmpfsMounter.unmount(&tmpfs)?;
        TmpfsMounter.unmount(&bind)?;
        for path in [&tmpfs, &bind, &link] {
            assert!(!is_mount_point(path)?, "{} once unmounted", path.display());
            assert!(!is_mount_point_by_mountinfo(path)?);
            TmpfsMounter.unmount(path)?; // EINVAL: not a mount point, not an error
        }
        Ok(())
    }

    #[test]
    fn tmpfs_mount_and_unmount_as_root() -> anyhow::Result<()> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED tmpfs_mount_and_unmount_as_root: needs root for mount(2)");
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let m = TmpfsMounter;
        m.mount(dir.path())?;
        let mounted = m.is_mounted(dir.path());
        m.unmount(dir.path())?;
        assert!(mounted?);
        assert!(!m.is_mounted(dir.path())?);
        m.unmount(dir.path())?; // idempotent
        Ok(())
    }
}
