//! Shared by the driver's integration tests: the fake provider and kubelet-shaped requests come
//! from `test-support` (feature `fakes`); what is left is root-only mount hygiene, secret
//! canaries and a log capture, and (in [`cluster`]) the real API server's setup.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod logs;

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

/// What every canary starts with: a test searches logs, Events, metrics and error messages for
/// this prefix, so a canary of any test in the same process is caught too.
pub const CANARY_PREFIX: &str = "CANARY-";

/// A recognizable secret value, `CANARY-<128 random bits>`, for file contents, tokens and
/// nodePublishSecretRef values.
pub fn canary() -> String {
    format!("{CANARY_PREFIX}{:032x}", rand::random::<u128>())
}

/// Fails when `text` (what a log, an Event, a metric or an error showed) carries a canary; the
/// failure shows the surroundings of the first one only.
#[track_caller]
pub fn assert_no_canary(what: &str, text: &str) {
    if let Some(at) = text.find(CANARY_PREFIX) {
        let mut start = at.saturating_sub(200);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (at + 200).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        panic!(
            "a secret canary leaked into {what} ({} occurrences); around the first:\n{}",
            text.matches(CANARY_PREFIX).count(),
            &text[start..end]
        );
    }
}
