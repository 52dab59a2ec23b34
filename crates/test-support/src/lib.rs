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

/// A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it).
///
/// There is a window between this call and the caller's bind; peers that can bind port 0 and
/// report the port should do that instead.
pub fn free_port() -> u16 {
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
