//! The small HTTP servers beside the gRPC service (`/metrics`, `/healthz`), drained on shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

/// OpenMetrics text, what both binaries' `/metrics` answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A router answering `GET /metrics` with `encode()` as OpenMetrics text.
pub fn metrics_router(encode: impl Fn() -> String + Send + Sync + 'static) -> Router {
    let encode = Arc::new(encode);
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = encode.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    encode(),
                )
            }
        }),
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// requests in flight finish (graceful drain) before returning. Errors are logged, naming
/// `what`: a failed side server does not stop the daemon.
pub async fn serve(
    what: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(server = what, addr = ?addr, error = %e, "HTTP server failed");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_drains_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            "metrics",
            listener,
            metrics_router(|| "# EOF\n".to_owned()),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let reply = get(addr, "/metrics").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(
            reply.contains(OPENMETRICS_CONTENT_TYPE) && reply.ends_with("# EOF\n"),
            "{reply}"
        );
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server returns once shut down")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }
}
