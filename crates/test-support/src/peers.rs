//! Where the installed peers live, and the CI-aware "missing peer" policy.

use std::path::PathBuf;

/// The command that installs every peer, quoted in failures.
pub const INSTALL_COMMAND: &str = "bash scripts/peers.sh";

/// A test peer installed by `scripts/peers.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// etcd, built from the Go module proxy.
    Etcd,
    /// kube-apiserver, built from the Go module proxy.
    KubeApiserver,
    /// csi-sanity from kubernetes-csi/csi-test.
    CsiSanity,
    /// Helm, to render and lint the charts.
    Helm,
    /// The upstream Go Azure Key Vault provider.
    UpstreamAzureProvider,
    /// The virtualenv's python with the official Azure SDK for Python.
    Python,
    /// kubelet, built from the Go module proxy.
    Kubelet,
    /// containerd (with runc and the CNI plugins) from Debian.
    Containerd,
    /// The node's locally assembled OCI image archives (`images/pause.tar`, `images/workload.tar`).
    NodeImages,
}

impl Peer {
    /// Path of the peer's executable under the peers directory.
    pub fn path(self) -> PathBuf {
        let dir = peers_dir();
        match self {
            Peer::Etcd => dir.join("bin/etcd"),
            Peer::KubeApiserver => dir.join("bin/kube-apiserver"),
            Peer::CsiSanity => dir.join("bin/csi-sanity"),
            Peer::Helm => dir.join("bin/helm"),
            Peer::UpstreamAzureProvider => dir.join("bin/upstream-secrets-store-provider-azure"),
            Peer::Python => dir.join("venv/bin/python"),
            Peer::Kubelet => dir.join("bin/kubelet"),
            Peer::Containerd => PathBuf::from("/usr/bin/containerd"),
            Peer::NodeImages => dir.join("images/workload.tar"),
        }
    }

    fn install_name(self) -> &'static str {
        match self {
            Peer::Etcd => "etcd",
            Peer::KubeApiserver => "kube-apiserver",
            Peer::CsiSanity => "csi-sanity",
            Peer::Helm => "helm",
            Peer::UpstreamAzureProvider => "upstream-azure-provider",
            Peer::Python => "python",
            Peer::Kubelet => "kubelet",
            Peer::Containerd => "node-packages",
            Peer::NodeImages => "node-images",
        }
    }
}

/// The project's root folder (the workspace root).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

/// The peers cache: `$SSCSI_PEERS_DIR`, or `.peers/` in the project root.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("SSCSI_PEERS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => project_root().join(".peers"),
    }
}

/// Whether tests run under CI (`CI=true` or `CI=1`): there a missing peer or artifact fails its
/// test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The path of an installed peer.
///
/// Missing peer: under `CI=true` this panics with the install command (the test fails loudly);
/// otherwise it prints a notice to stderr and returns `None` so the test can return early.
pub fn peer(peer: Peer) -> Option<PathBuf> {
    let path = peer.path();
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "test peer {peer:?} is missing at {} — install it with `{INSTALL_COMMAND} {}` \
         (or `{INSTALL_COMMAND}` for all peers)",
        path.display(),
        peer.install_name()
    );
    if in_ci() {
        panic!("{message}");
    }
    eprintln!("SKIPPING TEST (not in CI): {message}");
    None
}
