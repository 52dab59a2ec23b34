//! A private `/etc/hosts` for third-party clients that resolve vault host names
//! (`<vault>.<dns-suffix>`) through the system resolver: the command runs in its own mount
//! namespace (`unshare -m`) with a bind-mounted hosts file. The machine's `/etc/hosts` is never
//! touched. Needs root (or CAP_SYS_ADMIN), as tests on our machines have.

use std::{io::Write, net::IpAddr, path::PathBuf, process::Command};

/// A hosts file with extra entries, kept alive as long as this value.
#[derive(Debug)]
pub struct HostsOverride {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl HostsOverride {
    /// A hosts file holding the machine's entries plus `entries` (name → address).
    pub fn new(entries: &[(&str, IpAddr)]) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("hosts");
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for (name, ip) in entries {
            text.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::File::create(&file)?.write_all(text.as_bytes())?;
        Ok(Self { _dir: dir, file })
    }

    /// Path of the private hosts file.
    pub fn path(&self) -> &std::path::Path {
        &self.file
    }

    /// A command that runs `cmd` (program, arguments, environment and working directory) inside a
    /// new mount namespace whose `/etc/hosts` is this file. The process is killed when the thread
    /// that spawns it ends.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = Command::new("unshare");
        wrapped
            .arg("--mount")
            .arg("--propagation")
            .arg("private")
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(&self.file)
            .arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        // Whatever the caller does with the child, it does not outlive the test that started it
        // (a panicking test used to leave a provider running).
        crate::process::die_with_parent(&mut wrapped);
        wrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_keeps_machine_entries_and_adds_ours() {
        let h = HostsOverride::new(&[("v1.vault.test", "127.0.0.1".parse().unwrap())]).unwrap();
        let text = std::fs::read_to_string(h.path()).unwrap();
        assert!(text.ends_with("127.0.0.1 v1.vault.test\n"), "{text}");
    }

    #[test]
    fn wrapped_command_resolves_the_private_name_only_inside() {
        let name = format!("n{}.vault.test", std::process::id());
        let h = HostsOverride::new(&[(&name, "127.0.0.9".parse().unwrap())]).unwrap();
        let mut inner = Command::new("getent");
        inner.arg("hosts").arg(&name);
        let out = h
            .wrap(&inner)
            .output()
            .expect("unshare must run (tests run as root)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.9"));
        // The machine's resolver does not know the name.
        let outside = Command::new("getent")
            .arg("hosts")
            .arg(&name)
            .output()
            .unwrap();
        assert!(!outside.status.success());
    }
}

#[cfg(test)]
mod wrap_tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn euid() -> u32 {
        std::fs::metadata("/proc/self").map_or(u32::MAX, |m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        })
    }

    /// A wrapped child does not outlive the thread that started it (needs root for the mount
    /// namespace; not run otherwise).
    #[test]
    fn a_wrapped_child_dies_with_the_thread_that_started_it() {
        if euid() != 0 {
            assert!(!crate::in_ci(), "CI runs as root");
            return;
        }
        let hosts =
            super::HostsOverride::new(&[("example.test", "127.0.0.1".parse().unwrap())]).unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let wrapped = hosts.wrap(&sleep);
        let mut child = std::thread::spawn(move || {
            let mut wrapped = wrapped;
            wrapped.spawn().unwrap()
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the child outlived its thread");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}
