//! The official Azure SDK for Python (azure-identity, azure-keyvault-*) in the project's
//! virtualenv: the independent client tests use to seed and check vaults.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::{HostsOverride, Peer, peer};

/// Runs Python scripts with the virtualenv that holds the Azure SDK.
#[derive(Debug, Clone)]
pub struct PythonSdk {
    python: PathBuf,
    hosts: Vec<(String, IpAddr)>,
}

impl PythonSdk {
    /// The SDK runner, or `None` (outside CI) when the virtualenv is missing. Under `CI=true` a
    /// missing virtualenv panics with the install command.
    pub fn require() -> Option<Self> {
        peer(Peer::Python).map(|python| Self {
            python,
            hosts: Vec::new(),
        })
    }

    /// Path of the virtualenv's python.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Run scripts in a private mount namespace whose `/etc/hosts` maps these names.
    pub fn hosts(mut self, entries: &[(&str, &str)]) -> Self {
        for (name, ip) in entries {
            let ip = ip
                .parse()
                .unwrap_or_else(|e| panic!("bad address {ip:?} for {name}: {e}"));
            self.hosts.push(((*name).to_owned(), ip));
        }
        self
    }

    /// Runs `script` with `args` and extra environment `envs`; returns its output (the caller
    /// asserts on status and streams). Blocks; scripts must bound their own run time.
    pub fn run(&self, script: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(&self.python);
        cmd.arg(script).args(args).env("PYTHONUNBUFFERED", "1");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let result = if self.hosts.is_empty() {
            cmd.output()
        } else {
            let entries: Vec<(&str, IpAddr)> =
                self.hosts.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
            let hosts = HostsOverride::new(&entries)
                .unwrap_or_else(|e| panic!("cannot write a private hosts file: {e}"));
            hosts.wrap(&cmd).output()
        };
        result.unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python.display()))
    }

    /// Runs inline Python code (`python -c`).
    pub fn run_code(&self, code: &str, envs: &[(&str, &str)]) -> Output {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let script = dir.path().join("inline.py");
        std::fs::write(&script, code).unwrap_or_else(|e| panic!("write script: {e}"));
        self.run(&script, &[], envs)
    }
}
