//! Real test peers for the project's tests: a loopback Kubernetes control plane (etcd +
//! kube-apiserver), a real node (kubelet + containerd), csi-sanity, the official Azure SDK for Python, and the upstream Go binaries we
//! replace. Everything is installed by `scripts/peers.sh` into `.peers/` (or `$SSCSI_PEERS_DIR`).
//!
//! A test that needs a peer asks for it with [`require_peer!`] (or [`peer`]): when the peer is
//! missing and `CI=true`, the test fails with the command that installs it; outside CI it prints a
//! loud notice and returns early. Nothing skips silently.
//!
//! With the `fakes` feature: [`fake_provider::FakeProvider`] (failure injection behind the
//! provider socket) and [`kubelet_request`] (requests shaped like kubelet's).

mod control_plane;
#[cfg(feature = "fakes")]
pub mod fake_provider;
mod hosts;
#[cfg(feature = "fakes")]
pub mod kubelet_request;
mod namespaces;
mod node;
mod peers;
mod process;
mod python;
mod stand_ins;
pub mod versions;

pub use control_plane::{ControlPlane, ControlPlaneError, KUBERNETES_SERVICE_IP, get_text};
pub use hosts::HostsOverride;
pub use namespaces::{HOST_PATHS_TO_WATCH, NamespaceError, PrivateNamespaces};
pub use node::{Node, NodeError, NodeOptions, pod_ready, workload_image};
pub use peers::{INSTALL_COMMAND, Peer, in_ci, peer, peers_dir, project_root};
pub use process::ChildGuard;
pub use python::PythonSdk;
pub use stand_ins::{Controllers, ServiceRelay};

/// Whether a daemon listens on the unix socket at `path`: the socket file appears at bind(2), a
/// moment before listen(2), so a connect made between the two is refused. Wait on this, not on the
/// file's existence.
pub fn socket_accepts(path: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// A TCP port that was free on 127.0.0.1 and 0.0.0.0 a moment ago.
///
/// There is a window between this call and the caller's bind; peers that can bind port 0 and
/// report the port should do that instead.
///
/// The port is taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, from
/// 32768 by default): a port the kernel hands out for `bind(0)` can be handed out again at once
/// as the source port of any outgoing connection, so a child started a moment later found it
/// taken (seen: a provider binary's `--healthz-port` while other tests connected). Ports given
/// out by this process are not given again. Falls back to an ephemeral port when the range
/// leaves no room below it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u32>().ok())
        })
        .unwrap_or(32_768);
    if ephemeral_low > LOW + 1_000 {
        let span = ephemeral_low - LOW;
        // Each process starts at its own offset, then walks the span.
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let step = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = LOW + (start + step.wrapping_mul(4_099)) % span;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
            if free("0.0.0.0") && free("127.0.0.1") {
                return port;
            }
        }
    }
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on 127.0.0.1: {e}"))
}

/// Returns the path of a peer, or returns from the calling test (outside CI) after printing why.
/// Under `CI=true` a missing peer panics with the install command.
#[macro_export]
macro_rules! require_peer {
    ($peer:expr) => {
        match $crate::peer($peer) {
            Some(path) => path,
            None => return,
        }
    };
}

#[cfg(test)]
mod free_port_tests {
    /// Distinct within a process, bindable, and below the ephemeral range when there is room.
    #[test]
    fn ports_are_distinct_bindable_and_not_ephemeral() {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                t.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u16>().ok())
            })
            .unwrap_or(32_768);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let port = super::free_port();
            assert!(seen.insert(port), "port {port} given twice");
            if low > 21_000 {
                assert!(port < low, "port {port} is in the ephemeral range");
            }
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        }
    }
}
