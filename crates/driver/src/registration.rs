//! kubelet plugin registration, built in: the driver serves kubelet's `pluginregistration.v1`
//! `Registration` API on `<plugins_registry>/<driver>-reg.sock`, so kubelet's plugin watcher
//! registers the CSI socket without a node-driver-registrar sidecar.
//!
//! kubelet dials the socket when it appears, asks [`GetInfo`](Registration::get_info) for the
//! plugin type, name, CSI endpoint (as kubelet sees it) and versions, registers the driver, then
//! tells the plugin the outcome through `NotifyRegistrationStatus`; the driver logs that verdict.
//! Removing the socket (on shutdown) makes kubelet deregister the driver.

use std::future::Future;
use std::path::{Path, PathBuf};

use csi_proto::pluginregistration::registration_server::{Registration, RegistrationServer};
use csi_proto::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The plugin type kubelet's CSI handler registers.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// The CSI versions the driver serves, as kubelet expects them.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// What the driver tells kubelet about itself.
#[derive(Debug, Clone)]
pub struct RegistrationInfo {
    /// The CSI driver name (`--drivername`).
    pub driver_name: String,
    /// The CSI socket path as kubelet sees it (`--kubelet-registration-path`).
    pub endpoint: PathBuf,
}

impl RegistrationInfo {
    /// The registration socket's path inside kubelet's `plugins_registry` folder.
    pub fn socket_path(&self, registration_dir: &Path) -> PathBuf {
        registration_dir.join(format!("{}-reg.sock", self.driver_name))
    }
}

#[derive(Debug, Clone)]
struct RegistrationService {
    info: RegistrationInfo,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(
        &self,
        _request: Request<InfoRequest>,
    ) -> Result<Response<PluginInfo>, Status> {
        tracing::debug!(driver = %self.info.driver_name, "kubelet asked for the plugin info");
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_owned(),
            name: self.info.driver_name.clone(),
            endpoint: self.info.endpoint.to_string_lossy().into_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!(driver = %self.info.driver_name, endpoint = %self.info.endpoint.display(), "kubelet registered the driver");
        } else {
            // kubelet's message names the cause (e.g. an endpoint it cannot dial); it carries no
            // secret material.
            tracing::error!(driver = %self.info.driver_name, endpoint = %self.info.endpoint.display(), error = %status.error, "kubelet refused to register the driver; check --kubelet-registration-path");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves the registration API in `registration_dir` until `shutdown` resolves, then removes the
/// socket so kubelet deregisters the driver. A stale socket left by a previous run is replaced.
pub async fn serve(
    info: RegistrationInfo,
    registration_dir: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let path = info.socket_path(registration_dir);
    // Owner-only (kubelet connects as root, as the driver runs), parent created, stale removed.
    let listener = daemon::uds::bind_private(&path).map_err(|e| {
        anyhow::anyhow!(
            "--plugin-registration-dir={}: registration socket: {e}",
            registration_dir.display()
        )
    })?;
    tracing::info!(socket = %path.display(), endpoint = %info.endpoint.display(), "serving kubelet plugin registration");
    // Each kubelet connection reaches the gRPC server through the `:authority` relay
    // (crate::h2_authority explains why).
    let (conns_tx, conns_rx) = tokio::sync::mpsc::channel(4);
    let accept = tokio::spawn(async move {
        // The relays belong to the accept task: aborting it on shutdown drops them too.
        let mut relays = tokio::task::JoinSet::new();
        loop {
            while relays.try_join_next().is_some() {}
            let client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the registration socket");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (near, far) = tokio::io::duplex(64 * 1024);
            if conns_tx.send(Ok::<_, std::io::Error>(far)).await.is_err() {
                break;
            }
            let (client_rd, mut client_wr) = client.into_split();
            let (near_rd, near_wr) = tokio::io::split(near);
            relays.spawn(async move {
                let up = crate::h2_authority::rewrite_client_stream(client_rd, near_wr);
                let mut near_rd = near_rd;
                let down = tokio::io::copy(&mut near_rd, &mut client_wr);
                let (up, _) = tokio::join!(up, down);
                if let Err(e) = up {
                    tracing::debug!(error = %e, "registration connection closed");
                }
            });
        }
    });
    let result = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(RegistrationService { info }))
        .serve_with_incoming_shutdown(ReceiverStream::new(conns_rx), shutdown)
        .await;
    accept.abort();
    let _ = tokio::fs::remove_file(&path).await;
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::pluginregistration::registration_client::RegistrationClient;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads server frames (acknowledging its SETTINGS) until a DATA frame; returns its payload.
    async fn read_frames_until_data(s: &mut tokio::net::UnixStream) -> Vec<u8> {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let mut head = [0u8; 9];
                s.read_exact(&mut head).await.unwrap();
                let len = (usize::from(head[0]) << 16)
                    | (usize::from(head[1]) << 8)
                    | usize::from(head[2]);
                let mut payload = vec![0u8; len];
                s.read_exact(&mut payload).await.unwrap();
                match (head[3], head[4]) {
                    (0x4, 0) => s.write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]).await.unwrap(),
                    (0x0, _) => return payload,
                    (0x3, _) => panic!("the server reset the stream: {payload:?}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("no DATA frame within 5 s")
    }

    async fn client(path: PathBuf) -> RegistrationClient<tonic::transport::Channel> {
        let channel = daemon::uds::channel(&path)
            .await
            .expect("connect to the registration socket");
        RegistrationClient::new(channel)
    }

    #[tokio::test]
    async fn answers_kubelet_and_removes_its_socket_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let reg_dir = dir.path().join("plugins_registry");
        let info = RegistrationInfo {
            driver_name: "secrets-store.csi.k8s.io".into(),
            endpoint: "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock".into(),
        };
        let sock = info.socket_path(&reg_dir);
        // A stale socket from a crashed run must not stop the driver.
        std::fs::create_dir_all(&reg_dir).unwrap();
        std::fs::write(&sock, b"stale").unwrap();

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let reg_dir = reg_dir.clone();
            async move {
                serve(info, &reg_dir, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::symlink_metadata(&sock)
            .map(|m| !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(true)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no socket at {}",
                sock.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            sock.file_name().unwrap(),
            "secrets-store.csi.k8s.io-reg.sock"
        );

        let mut c = client(sock.clone()).await;
        let got = c.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(got.r#type, "CSIPlugin");
        assert_eq!(got.name, "secrets-store.csi.k8s.io");
        assert_eq!(
            got.endpoint,
            "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"
        );
        assert_eq!(got.supported_versions, vec!["1.0.0".to_owned()]);
        for (registered, error) in [(true, ""), (false, "dial failed")] {
            c.notify_registration_status(RegistrationStatus {
                plugin_registered: registered,
                error: error.into(),
            })
            .await
            .unwrap();
        }

        // What kubelet's plugin watcher sends: the socket path as `:authority`.
        let request = crate::h2_authority::tests::kubelet_like_request(
            &sock.to_string_lossy(),
            "/pluginregistration.Registration/GetInfo",
            &[],
        );
        let mut raw = tokio::net::UnixStream::connect(&sock).await.unwrap();
        raw.write_all(&request).await.unwrap();
        let reply = read_frames_until_data(&mut raw).await;
        assert!(
            reply.windows(9).any(|w| w == b"CSIPlugin"),
            "GetInfo with a path authority got no PluginInfo: {reply:?}"
        );
        drop(raw);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(
            !sock.exists(),
            "the registration socket outlived the driver"
        );
    }
}
