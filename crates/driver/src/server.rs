//! Serving the CSI services on the endpoint.

use std::future::Future;

use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use csi_proto::v1::node_server::NodeServer;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::config::Endpoint;
use crate::node::NodeService;

/// Serve Identity, Node (and ControllerGetCapabilities) on `endpoint` until `shutdown` resolves. A stale unix socket file is
/// removed first (as upstream); the socket is removed again on shutdown.
pub async fn serve(
    service: NodeService,
    endpoint: &Endpoint,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(service.clone()))
        .add_service(ControllerServer::new(service.clone()))
        .add_service(NodeServer::new(service));
    match endpoint {
        Endpoint::Unix(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("removing stale socket {}: {e}", path.display()),
            }
            let listener = tokio::net::UnixListener::bind(path)
                .map_err(|e| anyhow::anyhow!("listening on {}: {e}", path.display()))?;
            tracing::info!(endpoint = %path.display(), "CSI server listening");
            let result = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(endpoint = %addr, "CSI server listening");
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await?;
        }
    }
    Ok(())
}
