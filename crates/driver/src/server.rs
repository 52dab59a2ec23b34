//! Serving the CSI services on the endpoint.

use std::future::Future;

use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use csi_proto::v1::node_server::NodeServer;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::config::Endpoint;
use crate::node::NodeService;

/// Serve Identity, Node (and ControllerGetCapabilities) on `endpoint` until `shutdown` resolves.
/// A unix socket is bound private ([`daemon::uds::bind_private`]: owner-only, parent directory
/// created, stale socket removed as upstream) and removed again on shutdown.
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
            let listener = daemon::uds::bind_private(path)?;
            tracing::info!(endpoint = %path.display(), "CSI server listening");
            let result = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(Endpoint::tcp_listen_addr(addr))
                .await
                .map_err(|e| anyhow::anyhow!("listening on tcp://{addr}: {e}"))?;
            tracing::info!(endpoint = %addr, "CSI server listening");
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await?;
        }
    }
    Ok(())
}
