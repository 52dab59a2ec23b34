//! The real API server as the driver meets it: etcd + kube-apiserver from test-support with the
//! CRDs and deploy/rbac.yaml applied, and a loopback TCP relay in front of it that a test can
//! take down (connection refused, live connections cut) and bring back.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::PostParams;
use test_support::ControlPlane;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// etcd + kube-apiserver with the SecretProviderClass and pod-status CRDs; `None` when the
/// peers are not installed (outside CI).
pub async fn start_control_plane() -> anyhow::Result<Option<ControlPlane>> {
    let Some(cp) = ControlPlane::start().await else {
        return Ok(None);
    };
    let cp = cp?;
    let root = test_support::project_root();
    for f in [
        "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml",
        "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml",
    ] {
        cp.apply_crd_yaml(&std::fs::read_to_string(root.join("deploy/crds").join(f))?)
            .await?;
    }
    Ok(Some(cp))
}

/// The RBAC the chart ships, deploy/rbac.yaml.
pub fn shipped_rbac() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(
        test_support::project_root().join("deploy/rbac.yaml"),
    )?)
}

/// Applies an RBAC yaml like deploy/rbac.yaml (ServiceAccount, ClusterRoles,
/// ClusterRoleBindings).
pub async fn apply_rbac(cp: &ControlPlane, yaml: &str) -> anyhow::Result<()> {
    cp.create_namespace("kube-system").await?;
    let client = cp.client();
    for doc in serde_saphyr::from_multiple::<serde_json::Value>(yaml)? {
        let pp = PostParams::default();
        match doc["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_json::from_value(doc)?;
                Api::<ServiceAccount>::namespaced(
                    client.clone(),
                    sa.metadata.namespace.as_deref().unwrap_or("default"),
                )
                .create(&pp, &sa)
                .await?;
            }
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc)?)
                    .await?;
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc)?)
                    .await?;
            }
            other => anyhow::bail!("unexpected kind {other} in rbac yaml"),
        }
    }
    Ok(())
}

/// A client for `system:serviceaccount:<ns>:<sa>` that reaches the API server through `relay`.
pub async fn service_account_client_via(
    cp: &ControlPlane,
    ns: &str,
    sa: &str,
    relay: &Relay,
) -> anyhow::Result<kube::Client> {
    let direct = cp.service_account_kubeconfig(ns, sa).await?;
    let yaml = std::fs::read_to_string(&direct)?.replace(cp.url(), &relay.url());
    let path = direct.with_extension("relay.kubeconfig");
    std::fs::write(&path, yaml)?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// A TCP relay on 127.0.0.1 to the API server (whose certificate names 127.0.0.1, so TLS
/// through it verifies). [`Relay::down`] closes the port and cuts every live connection;
/// [`Relay::up`] listens on the same port again.
pub struct Relay {
    port: u16,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Relays 127.0.0.1:<free port> to the API server at `url` (`https://127.0.0.1:<port>`).
    pub async fn start(url: &str) -> anyhow::Result<Self> {
        let upstream = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow::anyhow!("unexpected API server URL {url}"))?
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = Self {
            port: listener.local_addr()?.port(),
            upstream,
            tasks: Arc::default(),
        };
        relay.serve(listener);
        Ok(relay)
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(accept);
    }

    /// The API server becomes unreachable: the port refuses connections and open ones drop.
    pub fn down(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    /// Reachable again, on the same port.
    pub async fn up(&self) -> anyhow::Result<()> {
        // The aborted accept task drops its listener at its next poll; retry the bind briefly.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => {
                    self.serve(listener);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(anyhow::anyhow!(
            "relay port {} not free again: {last:?}",
            self.port
        ))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}
