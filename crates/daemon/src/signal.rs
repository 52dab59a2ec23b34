//! The shutdown signal.

/// Resolves on the first SIGTERM (kubelet stopping the pod) or SIGINT (Ctrl-C), logging which.
/// Without signal handlers (not expected on Linux) it never resolves: the process runs until
/// killed.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; running until killed");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}
