//! The listeners and request handling: Key Vault data plane + Entra ID (HTTPS), IMDS, NMI and the
//! admin API (plain HTTP, loopback).
//!
//! One module per concern: [`route`] decides the data-plane operation from method and path,
//! [`data_plane`] authenticates, applies faults and dispatches to [`secrets`], [`keys`],
//! [`certificates`] and [`deleted`]; [`entra`], [`imds`], [`nmi`] and [`admin`] serve the other
//! endpoints; [`http`] holds the small request/response helpers they share.

mod admin;
mod certificates;
mod data_plane;
mod deleted;
mod entra;
mod http;
mod imds;
mod keys;
mod nmi;
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
}

// === listeners ===

pub(crate) fn spawn_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            // Small request/response exchanges: no Nagle delay (HTTP/2 clients felt it).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let shared = shared.clone();
            conns.spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { handle_https(shared, req).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

#[derive(Clone, Copy)]
pub(crate) enum PlainKind {
    Imds,
    Nmi,
    Admin,
}

pub(crate) fn spawn_plain(
    listener: TcpListener,
    kind: PlainKind,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            // Small request/response exchanges: no Nagle delay (HTTP/2 clients felt it).
            let _ = tcp.set_nodelay(true);
            let shared = shared.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, DropConnection>(match kind {
                            PlainKind::Imds => imds::handle(&shared, req).await,
                            PlainKind::Nmi => nmi::handle(&shared, req).await,
                            PlainKind::Admin => admin::handle(&shared, req).await,
                        })
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

// === HTTPS: data plane or Entra ID ===

async fn handle_https(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
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
        data_plane::handle(&shared, req).await
    } else {
        Ok(entra::handle(&shared, req).await)
    }
}
