//! End-to-end tests live in `tests/`; this library locates (and if needed builds) the workspace's
//! binaries for them.

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
