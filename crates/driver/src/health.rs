//! The driver's own liveness endpoint (`--health-addr`): `GET /healthz` answers 200 `ok` when a
//! CSI `Probe` through the driver's socket succeeds within the timeout, and 500 with the reason
//! otherwise. It checks what the livenessprobe sidecar checks (the socket kubelet uses accepts a
//! connection and the server answers), so that sidecar is optional.

use std::{net::SocketAddr, time::Duration};

use csi_proto::v1::{ProbeRequest, identity_client::IdentityClient};

use crate::config::Endpoint;

/// How long one probe may take before the endpoint reports failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes the CSI server at `endpoint` once: `Ok` when it answers ready.
pub async fn probe(endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
    let call = async {
        let channel = daemon::uds::channel_to(endpoint)
            .await
            .map_err(|e| format!("cannot connect to the CSI endpoint: {e}"))?;
        let reply = IdentityClient::new(channel)
            .probe(ProbeRequest {})
            .await
            .map_err(|s| format!("CSI Probe failed: {}", s.message()))?
            .into_inner();
        match reply.ready {
            Some(false) => Err("CSI Probe answered not ready".to_owned()),
            _ => Ok(()),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("CSI Probe did not answer within {timeout:?}"))?
}

/// Serves `/healthz` on `addr` until `shutdown` resolves, then drains.
pub async fn serve(
    addr: SocketAddr,
    endpoint: Endpoint,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let endpoint = endpoint.clone();
            async move {
                match probe(&endpoint, PROBE_TIMEOUT).await {
                    Ok(()) => (axum::http::StatusCode::OK, "ok".to_owned()),
                    Err(reason) => {
                        tracing::warn!(%reason, "liveness probe failed");
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, reason)
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    daemon::http::serve("healthz", listener, app, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_fails_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let err = probe(
            &Endpoint::Unix(dir.path().join("csi.sock")),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(err.contains("cannot connect to the CSI endpoint"), "{err}");
    }
}
