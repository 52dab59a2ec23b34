//! The listeners and request handling: Key Vault data plane + Entra ID (HTTPS), IMDS, NMI and the
//! admin API (plain HTTP, loopback).
//!
//! One module per concern: [`route`] decides the data-plane operation from method and path,
//! [`data_plane`] authenticates, applies faults and dispatches to [`objects`] (what the three
//! kinds share), [`secrets`], [`keys`], [`certificates`] and [`deleted`]; [`entra`], [`imds`],
//! [`nmi`] and [`admin`] serve the other endpoints; [`fault`] is the one fault check every route
//! goes through; [`http`] holds the small request/response helpers they share.

mod admin;
mod certificates;
mod data_plane;
mod deleted;
mod entra;
mod fault;
mod http;
mod imds;
mod keys;
mod nmi;
mod objects;
mod route;
mod secrets;

use crate::admin::Telemetry;
use crate::entra::{Directory, Signer};
use crate::persist::Persister;
use crate::store::Store;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

pub(crate) type Resp = Response<Full<Bytes>>;

/// Returned by a handler to make hyper close the connection without an answer (fault `Drop`).
#[derive(Debug)]
pub(crate) struct DropConnection;
impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for DropConnection {}

pub(crate) struct Shared {
    pub(crate) store: RwLock<Store>,
    /// Writes the state file after each mutation; `None`: memory only.
    pub(crate) persister: Option<Persister>,
    pub(crate) dir: Directory,
    pub(crate) signer: Signer,
    pub(crate) telemetry: Telemetry,
    pub(crate) dns_suffix: String,
    /// `https://<ip>:<port>` (no trailing slash).
    pub(crate) authority: String,
    /// The challenge `resource`: `https://<suffix>[:<port>]`.
    pub(crate) resource: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) token_lifetime: Duration,
    pub(crate) admin_token: Zeroizing<String>,
    pub(crate) default_vault: Option<String>,
    pub(crate) tenants: Vec<String>,
    /// The token proxy's path prefix (`/` or `/proxy`); empty: no proxy.
    pub(crate) token_proxy_path: String,
    /// The authority (`Host`, or HTTP/2 `:authority`) of the last token-proxy requests, oldest
    /// first, at most [`PROXY_HOSTS_KEPT`]: what a client keeps as `Host` when it rewrites the URL.
    pub(crate) token_proxy_hosts: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// Tokens IMDS and NMI handed out, by (client id, resource): like Azure's managed identity
    /// endpoint, they answer with the same token until it nears expiry (see
    /// [`imds::token_fields`]).
    pub(crate) mi_tokens:
        std::sync::Mutex<std::collections::HashMap<(String, String), (String, i64)>>,
}

/// How many token-proxy request authorities are kept.
pub(crate) const PROXY_HOSTS_KEPT: usize = 64;

// === listeners ===

/// What a listener serves.
pub(crate) enum Endpoint {
    /// Key Vault data plane and Entra ID, over TLS.
    Https(Arc<rustls::ServerConfig>),
    /// The AKS token proxy (identity binding), over TLS for its SNI name only.
    TokenProxy(Arc<rustls::ServerConfig>),
    Imds,
    Nmi,
    Admin,
}

/// How long a client may take for the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` and serves `endpoint` on each (HTTP/1 and HTTP/2) until
/// `stop` turns true; then stops accepting, lets every connection finish the requests in flight,
/// and returns when all are closed (graceful drain).
pub(crate) fn spawn(
    listener: TcpListener,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (handler, tls) = match endpoint {
        Endpoint::Https(tls) => (Handler::Https, Some(tokio_rustls::TlsAcceptor::from(tls))),
        Endpoint::TokenProxy(tls) => (
            Handler::TokenProxy,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        ),
        Endpoint::Imds => (Handler::Imds, None),
        Endpoint::Nmi => (Handler::Nmi, None),
        Endpoint::Admin => (Handler::Admin, None),
    };
    // Connections are round trips too (TCP's handshake, TLS 1.3's): counted, and delayed by a
    // latency fault on their name (or `*`), so a client's first request on a new connection
    // pays what it would over a real network. The admin API's own are neither.
    let connect_op = match handler {
        Handler::Https => Some("Connect"),
        Handler::TokenProxy => Some("TokenProxyConnect"),
        Handler::Imds => Some("ImdsConnect"),
        Handler::Nmi => Some("NmiConnect"),
        Handler::Admin => None,
    };
    let handshake_op = match handler {
        Handler::TokenProxy => "TokenProxyTlsHandshake",
        _ => "TlsHandshake",
    };
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        let mut stopping = stop.clone();
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
                () = stopped(&mut stopping) => break,
            };
            // Small request/response exchanges: no Nagle delay (HTTP/2 clients felt it).
            let _ = tcp.set_nodelay(true);
            let (tls, shared, stop) = (tls.clone(), shared.clone(), stop.clone());
            conns.spawn(async move {
                if let Some(op) = connect_op {
                    shared.telemetry.count(op, "", 200);
                    wait_latency(&shared, op).await;
                }
                match tls {
                    Some(acceptor) => {
                        wait_latency(&shared, handshake_op).await;
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(tcp)).await
                        else {
                            shared.telemetry.count(handshake_op, "", 0);
                            return;
                        };
                        shared.telemetry.count(handshake_op, "", 200);
                        serve_connection(tls, handler, shared, stop).await;
                    }
                    None => serve_connection(tcp, handler, shared, stop).await,
                }
            });
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        while conns.join_next().await.is_some() {}
    })
}

/// Waits the latency injected on a connection event (`Connect`, `TlsHandshake`, …); counted
/// faults are left for requests.
async fn wait_latency(shared: &Shared, op: &str) {
    fault::wait(shared.telemetry.latency(op, "")).await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves one connection until the client closes it, or, once `stop` turns true, until the
/// requests in flight are answered (HTTP/1 closes after the current answer, HTTP/2 sends GOAWAY).
async fn serve_connection<I>(
    io: I,
    handler: Handler,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A `drop` fault closes the whole connection: hyper would reset only the stream on HTTP/2,
    // where a network failure loses every request on the connection.
    let dropped = Arc::new(tokio::sync::Notify::new());
    let drop_signal = dropped.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let drop_signal = drop_signal.clone();
        async move {
            let result = handler.handle(&shared, req).await;
            if result.is_err() {
                drop_signal.notify_one();
            }
            result
        }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = dropped.notified() => return,
        () = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The request handler of an [`Endpoint`].
#[derive(Clone, Copy)]
enum Handler {
    Https,
    TokenProxy,
    Imds,
    Nmi,
    Admin,
}

impl Handler {
    async fn handle(self, shared: &Shared, req: Request<Incoming>) -> Result<Resp, DropConnection> {
        match self {
            Handler::Https => handle_https(shared, req).await,
            Handler::TokenProxy => entra::handle_proxy(shared, req).await,
            Handler::Imds => imds::handle(shared, req).await,
            Handler::Nmi => nmi::handle(shared, req).await,
            Handler::Admin => Ok(admin::handle(shared, req).await),
        }
    }
}

// === HTTPS: data plane or Entra ID ===

async fn handle_https(shared: &Shared, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_string();
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if matches!(
        first,
        "secrets"
            | "keys"
            | "certificates"
            | "deletedsecrets"
            | "deletedkeys"
            | "deletedcertificates"
    ) {
        data_plane::handle(shared, req).await
    } else {
        entra::handle(shared, req).await
    }
}
