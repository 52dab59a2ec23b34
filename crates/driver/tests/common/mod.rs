//! Shared by the driver's integration tests: the fake provider and kubelet-shaped requests come
//! from `test-support` (feature `fakes`); what is left is root-only mount hygiene.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

pub use test_support::fake_provider::{Behaviour, FakeProvider};
pub use test_support::kubelet_request::{kubelet_context, kubelet_target, publish_request};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Unmounts anything a failed test left mounted under `root` (tests run as root).
pub struct MountGuard(pub Vec<PathBuf>);
impl Drop for MountGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
