//! The Azure provider and the CSI driver running in this process, wired the way a node wires
//! them: the provider serves the real gRPC API on a unix socket in a providers folder, and the
//! driver calls it from NodePublishVolume. Shared by `demo` and `mount`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use csi_proto::v1 as csi;
use driver::{Config, FileClassSource, GrpcProviderClient, Mounter, NodeService};
use provider_azure::{ProviderConfig, Server, ServerConfig};
use tokio::{sync::oneshot, task::JoinHandle};

/// A provider and a driver on a temporary socket; stop them with [`LocalNode::stop`].
pub struct LocalNode {
    node: NodeService,
    socket: PathBuf,
    /// The in-process provider: `None` when the node uses one already running.
    provider: Option<InProcessProvider>,
}

struct InProcessProvider {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), provider_azure::server::ServerError>>,
}

impl LocalNode {
    /// Starts the provider on `<providers>/azure.sock` (or, when `provider` is `None`, uses the
    /// one already serving that socket) and a driver reading classes from `class_file`.
    /// `rotation` makes every republish refresh the volume.
    pub async fn start(
        providers: &Path,
        provider: Option<ProviderConfig>,
        class_file: &Path,
        mounter: Arc<dyn Mounter>,
        rotation: bool,
    ) -> Result<Self, String> {
        let socket = providers.join("azure.sock");
        let provider = match provider {
            Some(provider) => {
                std::fs::create_dir_all(providers)
                    .map_err(|e| format!("cannot create {}: {e}", providers.display()))?;
                let server = Server::bind(ServerConfig::new(
                    format!("unix://{}", socket.display()),
                    provider,
                ))
                .await
                .map_err(|e| format!("cannot start the Azure provider: {e}"))?;
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(server.serve(async move {
                    let _ = stopped.await;
                }));
                Some(InProcessProvider { stop, task })
            }
            None if socket.exists() => None,
            None => {
                return Err(format!(
                    "no provider socket at {}: start the Azure provider with --endpoint=unix://{0}, or leave out --provider-dir",
                    socket.display()
                ));
            }
        };
        let mut config = Config::new("local-node", vec![providers.to_path_buf()]);
        if rotation {
            config.rotation = Some(Duration::ZERO);
        }
        let node = NodeService::new(
            config,
            Arc::new(FileClassSource::new(class_file)),
            mounter,
            Arc::new(GrpcProviderClient::new(
                vec![providers.to_path_buf()],
                16 << 20,
            )),
            None,
            Arc::new(driver::metrics::Metrics::new()),
        );
        Ok(Self {
            node,
            socket,
            provider,
        })
    }

    /// The driver.
    pub fn node(&self) -> &NodeService {
        &self.node
    }

    /// The provider's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops the in-process provider (graceful) and waits for it; a provider that was already
    /// running is left alone.
    pub async fn stop(self) {
        if let Some(p) = self.provider {
            let _ = p.stop.send(());
            let _ = p.task.await;
        }
    }
}

/// The pod a volume belongs to, as kubelet describes it in the volume context.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The SecretProviderClass named in the volume's attributes.
    pub class: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// The pod's service account.
    pub service_account: String,
    /// `csi.storage.k8s.io/serviceAccount.tokens` JSON, when the CSIDriver requests tokens.
    pub tokens: Option<String>,
}

/// NodePublishVolume exactly as kubelet sends it for a CSI inline volume (read-only, mount access
/// type, pod info on mount), with `secrets` from the volume's `nodePublishSecretRef`.
pub fn kubelet_request(
    target: &Path,
    pod: &PodInfo,
    secrets: HashMap<String, String>,
) -> csi::NodePublishVolumeRequest {
    let context = csi_proto::kubelet::inline_volume_context(
        &pod.class,
        &pod.name,
        &pod.namespace,
        &pod.uid,
        &pod.service_account,
        pod.tokens.as_deref(),
    );
    csi_proto::kubelet::inline_publish_request(
        &format!("csi-{}", pod.uid),
        target,
        context,
        secrets,
    )
}

/// The files a pod sees (following the `..data` symlinks), sorted, with contents and modes.
pub fn read_tree(target: &Path) -> std::io::Result<Vec<(String, Vec<u8>, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(target.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") {
                continue; // the writer's internals: ..data and the timestamped folders
            }
            let rel_path = rel.join(&name);
            let full = target.join(&rel_path);
            let meta = std::fs::metadata(&full)?;
            if meta.is_dir() {
                stack.push(rel_path);
            } else {
                files.push((
                    rel_path.display().to_string(),
                    std::fs::read(&full)?,
                    meta.permissions().mode(),
                ));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// True when running as root (tmpfs mounts possible).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
