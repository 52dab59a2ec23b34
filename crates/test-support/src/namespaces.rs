//! A private mount + network namespace for a whole test process, entered before any thread
//! starts (unshare(2) refuses a new mount namespace to a multi-threaded process, and a network
//! namespace only follows threads created after the call).
//!
//! Inside: every mount is private (nothing propagates back to the machine), `lo` is up with an
//! extra node address, and `/run`, `/var/lib` and `/var/log` are fresh tmpfs mounts, because
//! kubelet and containerd write a few fixed paths there whatever roots they are given
//! (`/var/lib/kubelet/device-plugins`, `/run/containerd/s`, `/var/log/containers`). The process
//! also becomes a child subreaper, so container shims that daemonize stay its descendants and can
//! be found and stopped. Everything disappears with the namespace when the last process in it
//! exits; the machine's own mounts, addresses and folders are never touched.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

/// Host folders kubelet or containerd would create when misconfigured; after a run none of them
/// may exist on the machine unless it existed before.
pub const HOST_PATHS_TO_WATCH: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/log/pods",
    "/var/log/containers",
    "/etc/kubernetes",
    "/usr/libexec/kubernetes",
    "/opt/containerd",
    "/opt/cni",
    "/etc/cni",
];

/// What went wrong while entering the namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    /// The process already runs threads.
    #[error(
        "the process already runs {0} threads; enter the namespaces first thing in main, before \
         any runtime or thread starts"
    )]
    Threads(usize),
}

/// The namespaces this process entered, and what the machine looked like before.
#[derive(Debug)]
pub struct PrivateNamespaces {
    node_ip: Ipv4Addr,
    host_paths_before: Vec<PathBuf>,
}

impl PrivateNamespaces {
    /// Enters a new mount and network namespace (see the module docs). Needs root; must run
    /// before the process starts a second thread.
    pub fn enter(node_ip: Ipv4Addr) -> Result<Self, NamespaceError> {
        let threads = std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(1);
        if threads > 1 {
            return Err(NamespaceError::Threads(threads));
        }
        let host_paths_before = existing_host_paths();
        unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET)?;
        mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE)?;
        for dir in ["/run", "/var/lib", "/var/log"] {
            mount(Some("tmpfs"), dir, Some("tmpfs"), 0)?;
        }
        run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
        run(Command::new("ip").args(["addr", "add", &format!("{node_ip}/32"), "dev", "lo"]))?;
        set_child_subreaper()?;
        Ok(Self {
            node_ip,
            host_paths_before,
        })
    }

    /// The extra address on `lo`, used as the node's IP.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// Replaces `/etc/hosts` with `file` (a bind mount), so every process of the test resolves
    /// the names it lists. Only call it after [`Self::enter`]: the mount stays in the private
    /// namespace.
    pub fn bind_etc_hosts_file(file: &Path) -> Result<(), NamespaceError> {
        let src = file.to_string_lossy().into_owned();
        mount(Some(&src), "/etc/hosts", None, libc::MS_BIND)
    }

    /// Host folders from [`HOST_PATHS_TO_WATCH`] that exist now on the machine (seen through
    /// the first process's root, outside this namespace) but did not before: each is a leak.
    pub fn leaked_host_paths(&self) -> Vec<PathBuf> {
        existing_host_paths()
            .into_iter()
            .filter(|p| !self.host_paths_before.contains(p))
            .collect()
    }
}

/// The watched host folders that exist, seen through `/proc/1/root` (the machine's mount
/// namespace), so the check works from inside ours.
fn existing_host_paths() -> Vec<PathBuf> {
    HOST_PATHS_TO_WATCH
        .iter()
        .map(PathBuf::from)
        .filter(|p| {
            Path::new("/proc/1/root")
                .join(p.strip_prefix("/").unwrap_or(p))
                .exists()
        })
        .collect()
}

fn run(cmd: &mut Command) -> Result<(), NamespaceError> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| NamespaceError::Sys {
        what: what.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NamespaceError::Sys {
        what,
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
    })
}

fn last_error(what: impl Into<String>) -> NamespaceError {
    NamespaceError::Sys {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

#[allow(unsafe_code)]
fn unshare(flags: i32) -> Result<(), NamespaceError> {
    // SAFETY: unshare(2) takes plain flags; the caller checked that the process is
    // single-threaded.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(last_error(
            "unshare(CLONE_NEWNS | CLONE_NEWNET) (needs root)",
        ));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), NamespaceError> {
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| NamespaceError::Sys {
            what: format!("mount {target}"),
            source: std::io::Error::other("path contains a NUL byte"),
        })
    };
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fs = fstype.map(cstr).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(last_error(format!("mount {target}")));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_child_subreaper() -> Result<(), NamespaceError> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(last_error("prctl(PR_SET_CHILD_SUBREAPER)"));
    }
    Ok(())
}
