//! Each vault's own HTTP/2 connection, opened while its first token is fetched (issue 15).
//!
//! reqwest opens a connection when a request needs one: after the token has arrived. On a real
//! network a first mount then waits a TCP round trip and a TLS 1.3 round trip after the token, and
//! three parallel first requests open three connections (hyper's pool learns that a connection
//! speaks HTTP/2 only once its TLS handshake is done). reqwest cannot be handed a connection it
//! did not open (its connector's request type is sealed), so a vault gets one connection here:
//! opened as soon as a client of the vault asks for a token, shared by all of the vault's
//! requests as HTTP/2 streams, opened again once the vault closes it, and closed after [`IDLE`]
//! without a request (reqwest's pool default).
//!
//! reqwest keeps what this does not cover: a proxy from the environment (`HTTPS_PROXY`,
//! `ALL_PROXY`), `http://` URLs (tests) and a vault whose TLS handshake does not choose `h2`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use url::Url;

/// A connection without a request for this long is closed (reqwest's pool default).
pub(crate) const IDLE: Duration = Duration::from_secs(90);

/// How [`HttpConnector`](crate::HttpConnector) opens vault connections of its own.
#[derive(Clone)]
pub struct DirectOptions {
    tls: tokio_rustls::TlsConnector,
    resolve: Arc<[(String, SocketAddr)]>,
    connect_timeout: Duration,
    user_agent: http::HeaderValue,
    idle: Duration,
}

impl std::fmt::Debug for DirectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl DirectOptions {
    /// Connections over `tls` (the same trust anchors as the shared reqwest client; its ALPN
    /// list must offer `h2`), with `http`'s host overrides, connect timeout and User-Agent.
    /// `None` when the environment names a proxy for `https` URLs: reqwest then carries every
    /// request through it.
    pub fn new(tls: rustls::ClientConfig, http: &entra_auth::HttpOptions) -> Option<Self> {
        if proxy_in_env(|k| std::env::var_os(k)) {
            return None;
        }
        Some(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            resolve: http.resolve.clone().into(),
            connect_timeout: http.connect_timeout,
            user_agent: http::HeaderValue::from_str(&entra_auth::http::user_agent(
                http.user_agent_suffix.as_deref(),
            ))
            .ok()?,
            idle: IDLE,
        })
    }

    /// Closes a connection after `idle` without a request instead of 90 s.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle.max(Duration::from_millis(1));
        self
    }

    /// The User-Agent header of requests over these connections.
    pub(crate) fn user_agent(&self) -> &http::HeaderValue {
        &self.user_agent
    }
}

/// Whether reqwest would send `https` requests through a proxy named by the environment.
/// (`NO_PROXY` exceptions are not weighed: with any proxy configured, reqwest decides.)
fn proxy_in_env(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| get(k).is_some_and(|v| !v.is_empty()))
}

/// One open connection and its bookkeeping.
#[derive(Clone)]
struct Conn {
    send: SendRequest<Empty<Bytes>>,
    /// Requests sent and not yet answered in full.
    in_flight: Arc<AtomicUsize>,
}

type Connecting = Shared<BoxFuture<'static, Result<Conn, Arc<str>>>>;

enum State {
    /// No connection: the next request opens one.
    Closed,
    /// Opening, or open (the shared future's output).
    Open { generation: u64, conn: Connecting },
    /// The vault did not choose HTTP/2: its requests go through reqwest from now on.
    NotH2,
}

/// A vault's connection slot, in its shared per-vault state.
pub(crate) struct Slot {
    state: Mutex<(State, u64)>,
    /// Last time a request took the connection.
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state.lock().unwrap_or_else(PoisonError::into_inner).0 {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::NotH2 => "not HTTP/2",
        };
        f.debug_struct("Slot").field("state", &state).finish()
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            state: Mutex::new((State::Closed, 0)),
            last_used: Mutex::new(Instant::now()),
        }
    }
}

/// What [`Slot::connection`] hands out.
pub(crate) enum Route {
    /// Send over this HTTP/2 connection; dropping the guard ends the request's count.
    H2(SendRequest<Empty<Bytes>>, InFlight),
    /// Send through reqwest.
    Reqwest,
}

/// Counts one request on a connection until dropped (the idle timer closes only a connection
/// with none).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection could not be opened (the reason names no URL, no credential).
#[derive(Debug, Clone)]
pub(crate) struct ConnectError(pub(crate) Arc<str>);

impl Slot {
    /// Starts opening the vault's connection unless one is open or opening (called while the
    /// first token is fetched, so the two overlap).
    pub(crate) fn warm(self: &Arc<Self>, opts: &DirectOptions, base: &Url) {
        if base.scheme() == "https" {
            drop(self.connecting(opts, base));
        }
    }

    /// The connection to send a request over, opened (or re-opened) if need be.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        opts: &DirectOptions,
        base: &Url,
    ) -> Result<Route, ConnectError> {
        if base.scheme() != "https" {
            return Ok(Route::Reqwest);
        }
        let Some((generation, connecting)) = self.connecting(opts, base) else {
            return Ok(Route::Reqwest);
        };
        let result = connecting.await;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let current = matches!(&state.0, State::Open { generation: g, .. } if *g == generation);
        match result {
            Err(e) if e.as_ref() == NOT_H2 => {
                state.0 = State::NotH2;
                Ok(Route::Reqwest)
            }
            Err(e) => {
                if current {
                    state.0 = State::Closed;
                }
                Err(ConnectError(e))
            }
            Ok(conn) => {
                // Found closed: the next caller opens another; this one's request sees it
                // closed before sending and asks again (`HttpKeyVault::send`).
                if conn.send.is_closed() && current {
                    state.0 = State::Closed;
                }
                conn.in_flight.fetch_add(1, Ordering::AcqRel);
                *self
                    .last_used
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Instant::now();
                Ok(Route::H2(conn.send, InFlight(conn.in_flight)))
            }
        }
    }

    /// The open or opening connection, or a new one started; `None` when the vault is known
    /// not to speak HTTP/2.
    fn connecting(self: &Arc<Self>, opts: &DirectOptions, base: &Url) -> Option<(u64, Connecting)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let not_h2 = match &state.0 {
            State::NotH2 => return None,
            State::Open { generation, conn } => match conn.peek() {
                None => return Some((*generation, conn.clone())),
                Some(Ok(c)) if !c.send.is_closed() => return Some((*generation, conn.clone())),
                Some(Err(e)) => e.as_ref() == NOT_H2,
                Some(Ok(_)) => false,
            },
            State::Closed => false,
        };
        if not_h2 {
            state.0 = State::NotH2;
            return None;
        }
        state.1 += 1;
        let generation = state.1;
        // A new connection counts as used now: the idle timer measures from its opening.
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let conn = open(opts.clone(), base.clone(), Arc::downgrade(self), generation)
            .boxed()
            .shared();
        // Driven on its own, so that it progresses while nobody awaits it (the token fetch).
        tokio::spawn(conn.clone().map(drop));
        state.0 = State::Open {
            generation,
            conn: conn.clone(),
        };
        Some((generation, conn))
    }

    /// Called by a connection's idle timer: closes it if it is still the slot's connection, has
    /// no request in flight and none took it for `idle`. Returns whether it was closed.
    fn close_if_idle(&self, generation: u64, in_flight: &AtomicUsize, idle: Duration) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !matches!(&state.0, State::Open { generation: g, .. } if *g == generation) {
            // Replaced already: this connection is no longer handed out.
            return in_flight.load(Ordering::Acquire) == 0;
        }
        let quiet = self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
            >= idle;
        if quiet && in_flight.load(Ordering::Acquire) == 0 {
            state.0 = State::Closed;
            return true;
        }
        false
    }
}

/// The marker error of a vault that did not choose `h2`.
const NOT_H2: &str = "the vault did not choose HTTP/2";

/// Opens a connection to `base`'s host: TCP (the host overrides, else the system resolver),
/// TLS, HTTP/2. The connection's task runs until the vault closes it or it is idle.
async fn open(
    opts: DirectOptions,
    base: Url,
    slot: Weak<Slot>,
    generation: u64,
) -> Result<Conn, Arc<str>> {
    let host = base.host_str().unwrap_or_default().to_owned();
    let port = base.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match opts.resolve.iter().find(|(h, _)| *h == host) {
        // As reqwest's overrides: the address's IP with the URL's port.
        Some((_, addr)) => vec![SocketAddr::new(addr.ip(), port)],
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("connection failed: dns error: {e}"))?
            .collect(),
    };
    let mut last = String::from("connection failed: no address for the vault's host");
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("connection failed: {e}"),
            Err(_) => {
                last = format!(
                    "connection failed: no answer within {:?}",
                    opts.connect_timeout
                )
            }
        }
    }
    let tcp = tcp.ok_or(last)?;
    // As reqwest: requests are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("connection failed: {e}"))?;
    let tls = tokio::time::timeout(opts.connect_timeout, opts.tls.connect(name, tcp))
        .await
        .map_err(|_| {
            format!(
                "connection failed: no TLS handshake within {:?}",
                opts.connect_timeout
            )
        })?
        .map_err(|e| format!("connection failed: {e}"))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        tracing::debug!(vault = %host, "the vault did not choose HTTP/2: its requests go through the shared client");
        return Err(NOT_H2.into());
    }
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|e| format!("connection failed: {e}"))?;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counted = in_flight.clone();
    let idle = opts.idle;
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        loop {
            tokio::select! {
                _ = &mut conn => return,
                () = tokio::time::sleep(idle / 3) => {
                    let Some(slot) = slot.upgrade() else { return };
                    if slot.close_if_idle(generation, &counted, idle) {
                        tracing::debug!("closing an idle Key Vault connection");
                        return;
                    }
                }
            }
        }
    });
    tracing::debug!(vault = %host, "opened a Key Vault connection (HTTP/2)");
    Ok(Conn { send, in_flight })
}

/// A response body that fails once `deadline` has passed, so that a request's timeout covers
/// its body as reqwest's does.
pub(crate) struct Deadline {
    body: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Held until the body is dropped: the request is in flight until then.
    _in_flight: InFlight,
}

impl Deadline {
    pub(crate) fn new(body: Incoming, deadline: Instant, in_flight: InFlight) -> Self {
        Self {
            body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            _in_flight: in_flight,
        }
    }
}

/// The body's deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the answer's body did not arrive in time")]
pub(crate) struct BodyTimeout;

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as Self::Error)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_in_the_environment_leaves_requests_to_reqwest() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                set.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(!proxy_in_env(env(&[])));
        assert!(!proxy_in_env(env(&[("HTTPS_PROXY", "")])));
        assert!(!proxy_in_env(env(&[("HTTP_PROXY", "http://p:3128")])));
        assert!(proxy_in_env(env(&[("HTTPS_PROXY", "http://p:3128")])));
        assert!(proxy_in_env(env(&[("https_proxy", "http://p:3128")])));
        assert!(proxy_in_env(env(&[("ALL_PROXY", "socks5://p:1080")])));
        assert!(proxy_in_env(env(&[("all_proxy", "http://p:3128")])));
    }
}
