//! The gRPC service on a unix socket (or `tcp://` as upstream allows), gRPC health, the HTTP
//! `/healthz` probe and the Prometheus `/metrics` endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use daemon::{Endpoint, EndpointError, parse_endpoint};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provider_proto::v1alpha1::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use provider_proto::v1alpha1::{MountRequest, MountResponse, VersionRequest, VersionResponse};
use tokio::net::{TcpListener, UnixListener};
use tonic::{Request, Response, Status};

use crate::metrics::{Metrics, code_name};
use crate::provider::{Provider, ProviderConfig, ProviderError};

/// `VersionResponse.runtime_name`, as upstream.
pub const RUNTIME_NAME: &str = "secrets-store-csi-driver-provider-azure";
/// Largest gRPC message accepted or sent (upstream: grpc-go's 4 MiB default receive limit; the
/// driver's receive limit governs large responses).
const MAX_MESSAGE: usize = 16 << 20;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `--endpoint`: `unix:///path/azure.sock` or `tcp://host:port`.
    pub endpoint: String,
    /// The provider's settings.
    pub provider: ProviderConfig,
    /// `/healthz` listener (`--healthz-port`, `0.0.0.0`); `None` disables it.
    pub healthz_addr: Option<SocketAddr>,
    /// `--healthz-path`.
    pub healthz_path: String,
    /// `--healthz-timeout`.
    pub healthz_timeout: Duration,
    /// `/metrics` listener (`--prometheus-port`); `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
}

impl ServerConfig {
    /// Defaults for a given endpoint, with health and metrics off (tests, in-process use).
    pub fn new(endpoint: impl Into<String>, provider: ProviderConfig) -> Self {
        Self {
            endpoint: endpoint.into(),
            provider,
            healthz_addr: None,
            healthz_path: "/healthz".into(),
            healthz_timeout: Duration::from_secs(5),
            metrics_addr: None,
        }
    }
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Endpoint syntax.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Binding a listener.
    #[error("failed to listen on {what}: {source}")]
    Listen {
        /// Which listener.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Provider construction.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The gRPC server stopped with an error.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

// === impl Service ===

/// The `v1alpha1.CSIDriverProvider` implementation.
#[derive(Clone, Debug)]
pub struct Service {
    provider: Arc<Provider>,
}

impl Service {
    /// Wraps a provider.
    pub fn new(provider: Arc<Provider>) -> Self {
        Self { provider }
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for Service {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let t = Instant::now();
        let resp = VersionResponse {
            version: provider_proto::API_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: crate::version::BUILD_VERSION.into(),
        };
        self.provider
            .metrics()
            .grpc("/v1alpha1.CSIDriverProvider/Version", "OK", t.elapsed());
        Ok(Response::new(resp))
    }

    async fn mount(&self, req: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
        let t = Instant::now();
        let result = self.provider.mount_reporting(req.into_inner()).await;
        let (code, out) = match result {
            Ok((r, stale)) => {
                let mut resp = Response::new(r);
                // Not upstream: tells this project's driver that the answer is last-known-good
                // (`maxStaleness`); other drivers ignore unknown metadata.
                if let Some(age) = stale {
                    resp.metadata_mut().insert(
                        "x-secrets-store-stale-seconds",
                        tonic::metadata::MetadataValue::from(age.as_secs()),
                    );
                }
                (tonic::Code::Ok, Ok(resp))
            }
            Err(e) => {
                let s = e.to_status();
                (s.code(), Err(s))
            }
        };
        self.provider.metrics().grpc(
            "/v1alpha1.CSIDriverProvider/Mount",
            code_name(code),
            t.elapsed(),
        );
        out
    }
}

// === impl AlwaysServing ===

/// `grpc.health.v1.Health` as upstream's: `Check` answers SERVING for any service name while the
/// process serves; `Watch` is not implemented.
#[derive(Clone, Copy, Debug)]
pub struct AlwaysServing;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for AlwaysServing {
    async fn check(
        &self,
        _req: Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<Response<tonic_health::pb::HealthCheckResponse>, Status> {
        Ok(Response::new(tonic_health::pb::HealthCheckResponse {
            status: tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        futures::stream::Empty<Result<tonic_health::pb::HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _req: Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch is not implemented"))
    }
}

// === impl Server ===

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// A bound provider server: sockets are open when `bind` returns.
pub struct Server {
    listener: Listener,
    provider: Arc<Provider>,
    healthz: Option<(TcpListener, String, Duration)>,
    metrics: Option<TcpListener>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoint", &self.endpoint_display())
            .finish_non_exhaustive()
    }
}

async fn tcp(addr: SocketAddr, what: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen {
            what: format!("{what} {addr}"),
            source,
        })
}

impl Server {
    /// Builds the provider and binds every listener. The unix socket is bound private
    /// ([`daemon::uds::bind_private`]: owner-only, stale socket removed).
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let metrics = Metrics::new();
        let provider = Arc::new(Provider::new(config.provider.clone(), metrics)?);
        Self::bind_with(config, provider).await
    }

    /// Binds around an existing provider (tests with fake Key Vaults).
    pub async fn bind_with(
        config: ServerConfig,
        provider: Arc<Provider>,
    ) -> Result<Self, ServerError> {
        let listener = match parse_endpoint(&config.endpoint)? {
            Endpoint::Unix(path) => {
                let l = daemon::uds::bind_private(&path).map_err(|source| ServerError::Listen {
                    what: "the unix socket".into(),
                    source,
                })?;
                Listener::Unix(l, path)
            }
            Endpoint::Tcp(addr) => {
                let addr = Endpoint::tcp_listen_addr(&addr);
                let l = TcpListener::bind(&addr)
                    .await
                    .map_err(|source| ServerError::Listen {
                        what: addr.clone(),
                        source,
                    })?;
                Listener::Tcp(l)
            }
        };
        let healthz = match config.healthz_addr {
            Some(a) => Some((
                tcp(a, "healthz").await?,
                config.healthz_path.clone(),
                config.healthz_timeout,
            )),
            None => None,
        };
        let metrics = match config.metrics_addr {
            Some(a) => Some(tcp(a, "metrics").await?),
            None => None,
        };
        Ok(Self {
            listener,
            provider,
            healthz,
            metrics,
        })
    }

    fn endpoint_display(&self) -> String {
        self.listener_target().to_string()
    }

    /// The unix socket path, if serving on one.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.listener {
            Listener::Unix(_, p) => Some(p),
            Listener::Tcp(_) => None,
        }
    }

    /// The TCP address, if serving on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Bound `/healthz` address.
    pub fn healthz_addr(&self) -> Option<SocketAddr> {
        self.healthz
            .as_ref()
            .and_then(|(l, ..)| l.local_addr().ok())
    }

    /// Bound `/metrics` address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The provider (for in-process callers).
    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// Serves until `shutdown` resolves, then drains in-flight RPCs (graceful stop) and removes
    /// the socket.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let health_service = tonic_health::pb::health_server::HealthServer::new(AlwaysServing);
        let svc = CsiDriverProviderServer::new(Service::new(self.provider.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut aux = Vec::new();
        let endpoint = self.endpoint_display();
        let target = self.listener_target();
        if let Some((l, path, timeout)) = self.healthz {
            aux.push(tokio::spawn(serve_healthz(
                l,
                path,
                timeout,
                target,
                stop_rx.clone(),
            )));
        }
        if let Some(l) = self.metrics {
            aux.push(tokio::spawn(serve_metrics(
                l,
                self.provider.metrics().clone(),
                stop_rx.clone(),
            )));
        }
        tracing::info!(endpoint = %endpoint, "Listening for connections");
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(svc);
        let stop = async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
        };
        let result = match self.listener {
            Listener::Unix(l, path) => {
                let r = router
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(l),
                        stop,
                    )
                    .await;
                let _ = std::fs::remove_file(&path);
                r
            }
            Listener::Tcp(l) => {
                router
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(l),
                        stop,
                    )
                    .await
            }
        };
        for t in aux {
            let _ = t.await;
        }
        result.map_err(ServerError::from)
    }

    fn listener_target(&self) -> Endpoint {
        match &self.listener {
            Listener::Unix(_, p) => Endpoint::Unix(p.clone()),
            Listener::Tcp(l) => {
                Endpoint::Tcp(l.local_addr().map(|a| a.to_string()).unwrap_or_default())
            }
        }
    }
}

/// A gRPC channel to our own socket.
async fn channel(target: &Endpoint) -> Result<tonic::transport::Channel, String> {
    daemon::uds::channel_to(target)
        .await
        .map_err(|e| daemon::error::render(&e))
}

async fn health_check(target: Endpoint, timeout: Duration) -> Result<(), String> {
    let check = async {
        let ch = channel(&target).await?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
        let r = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| s.message().to_owned())?;
        if r.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            Ok(())
        } else {
            Err("not serving".to_owned())
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| "health check timed out".to_owned())?
}

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_healthz(
    l: TcpListener,
    path: String,
    timeout: Duration,
    target: Endpoint,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        &path,
        axum::routing::get(move || {
            let target = target.clone();
            async move {
                match health_check(target, timeout).await {
                    Ok(()) => (StatusCode::OK, "ok".to_owned()),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
                }
            }
        }),
    );
    daemon::http::serve("healthz", l, app, wait_stop(stop)).await;
}

async fn serve_metrics(
    l: TcpListener,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = daemon::http::metrics_router(move || metrics.encode());
    daemon::http::serve("metrics", l, app, wait_stop(stop)).await;
}
