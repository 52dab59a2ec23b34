//! End-to-end tests live in `tests/`; this library only locates the workspace's binaries for them.

use std::path::PathBuf;

/// Path of a binary built from this workspace (`cargo test --workspace` builds every binary
/// before any test runs), next to the test executable's `deps/` folder.
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let path = dir.join(name);
    path.exists().then_some(path)
}
