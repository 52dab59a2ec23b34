//! End-to-end tests live in `tests/`; this library locates (and if needed builds) the workspace's
//! binaries for them and runs Helm the same way for every chart test.

use std::path::PathBuf;

/// Path of a binary built from this workspace, next to the test executable's `deps/` folder.
/// `cargo test --workspace` builds every binary before any test runs; when a test of this crate
/// runs alone and the binary is missing, it is built here with the same cargo and target folder.
/// A binary left over from an older build is used as it is: run `cargo build --workspace --bins`
/// (or the whole suite) after changing a binary's crate.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()))
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--bin", name])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs `helm` (the peer at `helm_bin`) in the project root with its caches and config kept out of
/// the user's home; stdout on success, both streams in the error otherwise.
pub fn helm(helm_bin: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let scratch = std::env::temp_dir();
    let out = std::process::Command::new(helm_bin)
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("HELM_CACHE_HOME", scratch.join("sscsi-helm-cache"))
        .env("HELM_CONFIG_HOME", scratch.join("sscsi-helm-config"))
        .env("HELM_DATA_HOME", scratch.join("sscsi-helm-data"))
        .output()
        .map_err(|e| format!("cannot run helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
