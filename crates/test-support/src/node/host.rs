//! What a node changes on the machine itself, outside the test's namespaces, and how it is
//! undone: a cgroup root in every v1 hierarchy (kubelet's `cgroupRoot`, plus a `daemons` cgroup
//! holding containerd, kubelet and the container shims they spawn), and the recovery record that
//! lets the next node undo what a test process that died left behind.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// A node's cgroup root (`/sys/fs/cgroup/<hierarchy>/<name>` in every hierarchy).
#[derive(Debug, Clone)]
pub(super) struct CgroupRoot(String);

impl CgroupRoot {
    pub(super) fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name, as kubelet's `cgroupRoot` (without the leading `/`).
    pub(super) fn name(&self) -> &str {
        &self.0
    }

    /// Creates the root in every hierarchy (kubelet requires it to exist) and the daemons cgroup.
    pub(super) fn create(&self) -> std::io::Result<()> {
        for h in hierarchies() {
            std::fs::create_dir_all(h.join(&self.0))?;
        }
        std::fs::create_dir_all(self.daemons())
    }

    fn daemons(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/pids")
            .join(&self.0)
            .join("daemons")
    }

    /// Starts `cmd` inside the daemons cgroup, so it and everything it spawns (container shims
    /// included) can be found and stopped.
    #[allow(unsafe_code)]
    pub(super) fn join_daemons(&self, cmd: &mut Command) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        let procs = CString::new(
            self.daemons()
                .join("cgroup.procs")
                .to_string_lossy()
                .into_owned(),
        )
        .map_err(|_| std::io::Error::other("cgroup path contains a NUL byte"))?;
        // SAFETY: between fork and exec only open(2), write(2) and close(2) run, which are
        // async-signal-safe; the path was allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if rc != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Every process in the root's cgroups (any hierarchy), except those under the `skip`
    /// sub-cgroups.
    pub(super) fn procs_except(&self, skip: &[&str]) -> Vec<i32> {
        let mut pids = Vec::new();
        for h in hierarchies() {
            let root = h.join(&self.0);
            walk(&root, &mut |dir| {
                let rel = dir.strip_prefix(&root).unwrap_or(dir);
                if skip.iter().any(|s| rel.starts_with(s)) {
                    return;
                }
                if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs everything in the root's cgroups but the `skip` sub-cgroups until they are empty
    /// (at most 10 s), reaping what re-parented to this process.
    #[allow(unsafe_code)]
    pub(super) fn kill_except(&self, skip: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.procs_except(skip);
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in &pids {
                // SAFETY: kill(2) on pids found in the node's own cgroups.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            for pid in &pids {
                // SAFETY: WNOHANG never blocks; a pid that is not our child returns ECHILD.
                // Reaping is needed because orphans re-parent to this process (subreaper).
                unsafe {
                    libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG);
                }
            }
        }
        reap_orphans();
    }

    /// Removes the root's cgroups, deepest first (retrying while the kernel finishes exits).
    pub(super) fn remove(&self) {
        for _ in 0..50 {
            let mut all_gone = true;
            for h in hierarchies() {
                let root = h.join(&self.0);
                if !root.exists() {
                    continue;
                }
                let mut dirs = Vec::new();
                walk(&root, &mut |d| dirs.push(d.to_path_buf()));
                dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
                for d in dirs {
                    let _ = std::fs::remove_dir(&d);
                }
                all_gone &= !root.exists();
            }
            if all_gone {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The root's folders that still exist, for the leftover check.
    pub(super) fn existing(&self) -> Vec<PathBuf> {
        hierarchies()
            .into_iter()
            .map(|h| h.join(&self.0))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Where a running node's recovery record lives (the real `/tmp`, outside any test namespace).
pub(super) fn state_file(pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/sscsi-node-{pid}.json"))
}

/// Undoes what nodes of test processes that died without stopping them left behind: kills what
/// still runs in their cgroups (container shims outlive the test process), removes the cgroups
/// and the folder, and puts the sysctls back.
pub(super) fn recover_crashed_nodes() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("sscsi-node-")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // still running: not ours to touch
        }
        let Ok(record) = std::fs::read_to_string(e.path())
            .map_err(|_| ())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|_| ()))
        else {
            let _ = std::fs::remove_file(e.path());
            continue;
        };
        eprintln!("test-support: cleaning up after a node whose test process ({pid}) died");
        if let Some(root) = record["cgroup_root"].as_str().filter(|r| !r.is_empty()) {
            let cgroups = CgroupRoot::new(root);
            cgroups.kill_except(&[]);
            cgroups.remove();
        }
        if let Some(sysctls) = record["sysctls"].as_object() {
            for (path, value) in sysctls {
                if path.starts_with("/proc/sys/")
                    && let Some(v) = value.as_str()
                {
                    let _ = std::fs::write(path, v);
                }
            }
        }
        if let Some(dir) = record["dir"].as_str()
            && dir.starts_with(&std::env::temp_dir().display().to_string())
        {
            // Its mounts lived in the dead process's namespace and went with it.
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_file(e.path());
    }
}

/// Reaps exited children that nobody waits for (container shims re-parented to this process).
#[allow(unsafe_code)]
fn reap_orphans() {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, ...
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace();
        let state = rest.next();
        let ppid = rest.next();
        if state == Some("Z") && ppid == Some(me.as_str()) {
            // SAFETY: reaps a zombie child of this process; WNOHANG never blocks.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

/// The mounted cgroup hierarchies (`/sys/fs/cgroup/<name>` holding `cgroup.procs`).
fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), f);
            }
        }
    }
}

/// Lazily unmounts `path` (MNT_DETACH).
#[allow(unsafe_code)]
pub(super) fn umount_detach(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.to_string_lossy().into_owned())
        .map_err(|_| std::io::Error::other("NUL in path"))?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
