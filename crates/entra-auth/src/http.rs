//! The one HTTP client shape every credential and the Key Vault client use: rustls with the ring
//! provider, trusting the system roots **plus** `SSL_CERT_FILE` / `SSL_CERT_DIR` (the way a
//! private CA is added for Go and OpenSSL tools), optional host→address overrides for in-process
//! tests, and connect/request timeouts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sensitive::SecretBytes;

/// System CA bundle locations probed in order (the first that exists is used), as Go does on Linux.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How to build the HTTP client.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Extra CA bundle file (PEM), usually from `SSL_CERT_FILE`.
    pub ssl_cert_file: Option<PathBuf>,
    /// Extra CA directories (every PEM file in them), usually from `SSL_CERT_DIR` (`:`-separated).
    pub ssl_cert_dirs: Vec<PathBuf>,
    /// Whether to load the system bundle too (default true).
    pub system_roots: bool,
    /// Host name → address overrides (in-process tests; a real deployment uses DNS).
    pub resolve: Vec<(String, SocketAddr)>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout for one attempt.
    pub request_timeout: Duration,
    /// Appended (after a space) to the User-Agent of every request (`--custom-user-agent`).
    pub user_agent_suffix: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            ssl_cert_file: None,
            ssl_cert_dirs: Vec::new(),
            system_roots: true,
            resolve: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            user_agent_suffix: None,
        }
    }
}

impl HttpOptions {
    /// Defaults plus `SSL_CERT_FILE` / `SSL_CERT_DIR` from the process environment.
    pub fn from_env() -> Self {
        let ssl_cert_file = std::env::var_os("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let ssl_cert_dirs = std::env::var("SSL_CERT_DIR")
            .map(|v| {
                v.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            ssl_cert_file,
            ssl_cert_dirs,
            ..Self::default()
        }
    }
}

/// Largest Entra ID, IMDS or NMI response body read (token responses, errors) and largest OpenID
/// discovery document or key set: real ones are a few KiB. A longer body is refused, not
/// buffered.
pub const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// A response body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the cap (by its `Content-Length`, or once that much arrived).
    #[error("the response body is over the cap of {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The connection failed while reading (no URL in the text).
    #[error("{0}")]
    Transport(String),
}

/// A response body read by [`read_body`]: at most its cap, zeroed when dropped (it may hold a
/// token or a secret value), redacted in `Debug`. It derefs to the bytes so that it goes
/// straight into a parser; it is not meant to be kept.
#[derive(Default)]
pub struct CappedBody(SecretBytes);

impl CappedBody {
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

impl std::ops::Deref for CappedBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.expose()
    }
}

impl std::fmt::Debug for CappedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CappedBody(<{} bytes redacted>)", self.0.len())
    }
}

/// Reads `resp`'s body chunk by chunk and stops with [`BodyError::TooLarge`] as soon as it
/// would pass `limit` bytes, so an endless or huge body costs at most `limit` bytes of memory.
/// The bytes may be secret (tokens, Key Vault values): every buffer left behind while growing
/// is zeroed, and so is the result when dropped.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<CappedBody, BodyError> {
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(BodyError::TooLarge { limit });
    }
    let first = announced
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit);
    let mut buf: Vec<u8> = Vec::with_capacity(first);
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                drop(SecretBytes::new(buf));
                return Err(BodyError::Transport(crate::credential::transport_reason(
                    &e,
                )));
            }
        };
        if chunk.len() > limit - buf.len() {
            drop(SecretBytes::new(buf));
            return Err(BodyError::TooLarge { limit });
        }
        if buf.capacity() - buf.len() < chunk.len() {
            let want = (buf.len() + chunk.len())
                .max(buf.capacity().saturating_mul(2))
                .min(limit);
            let mut bigger = Vec::with_capacity(want);
            bigger.extend_from_slice(&buf);
            // The old buffer is zeroed as it goes (SecretBytes zeroes on drop).
            drop(SecretBytes::new(std::mem::replace(&mut buf, bigger)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(CappedBody(SecretBytes::new(buf)))
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A CA file named by the configuration could not be read or holds no certificate.
    #[error("failed to load CA certificates from {path}: {reason}")]
    Roots {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls or reqwest refused the configuration.
    #[error("failed to build the HTTP client: {0}")]
    Build(String),
}

/// Adds every certificate of a PEM file to `store`, one at a time: each DER copy is dropped as
/// soon as its trust anchor is taken, so loading a system bundle of ~150 roots never holds them
/// all twice (the peak stays the file plus the anchors; issue 15's heap profile). A PEM framing
/// error fails the file; a certificate webpki cannot use as an anchor is skipped, as before.
/// Returns how many certificates the file held.
fn load_pem_file(path: &Path, store: &mut rustls::RootCertStore) -> Result<usize, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| e.to_string())?;
        n += 1;
        let _ = store.add(cert);
    }
    Ok(n)
}

/// Collects the trust anchors described by `opts`.
pub fn load_roots(opts: &HttpOptions) -> Result<rustls::RootCertStore, HttpError> {
    let mut store = rustls::RootCertStore::empty();
    if opts.system_roots {
        for p in SYSTEM_BUNDLES {
            let p = Path::new(p);
            if p.exists() && load_pem_file(p, &mut store).is_ok() {
                break;
            }
        }
    }
    if let Some(p) = &opts.ssl_cert_file {
        let n = load_pem_file(p, &mut store).map_err(|reason| HttpError::Roots {
            path: p.display().to_string(),
            reason,
        })?;
        if n == 0 {
            return Err(HttpError::Roots {
                path: p.display().to_string(),
                reason: "no PEM certificate found".into(),
            });
        }
    }
    for dir in &opts.ssl_cert_dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            // Unreadable or non-PEM files in a cert dir are skipped, as OpenSSL does.
            let _ = load_pem_file(&e.path(), &mut store);
        }
    }
    Ok(store)
}

/// This client's User-Agent: the project and version, then the operator's suffix (as upstream's
/// `--custom-user-agent`, e.g. `managedBy:aks`).
pub fn user_agent(suffix: Option<&str>) -> String {
    let base = concat!(
        "secrets-store-provider-azure-rs/",
        env!("CARGO_PKG_VERSION")
    );
    match suffix.map(str::trim).filter(|s| !s.is_empty()) {
        Some(suffix) => format!("{base} {suffix}"),
        None => base.to_owned(),
    }
}

/// Builds the shared client. One per process (or per test); cheap to clone.
pub fn build_client(opts: &HttpOptions) -> Result<reqwest::Client, HttpError> {
    build_client_and_tls(opts).map(|(client, _)| client)
}

/// Builds the shared client and returns its TLS configuration too (ALPN `h2`, `http/1.1`), for
/// connections opened outside reqwest with the same trust anchors (they are shared, not copied).
pub fn build_client_and_tls(
    opts: &HttpOptions,
) -> Result<(reqwest::Client, rustls::ClientConfig), HttpError> {
    let tls = tls_config(load_roots(opts)?, &[b"h2", b"http/1.1"])?;
    let client = client_builder(opts, tls.clone())
        .build()
        .map_err(|e| HttpError::Build(e.to_string()))?;
    Ok((client, tls))
}

/// rustls with the ring provider over the given trust anchors and ALPN protocols.
pub(crate) fn tls_config(
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tls)
}

/// The shared client shape (timeouts, User-Agent, `opts.resolve`) over `tls`, left open for
/// more settings.
pub(crate) fn client_builder(
    opts: &HttpOptions,
    tls: rustls::ClientConfig,
) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        .user_agent(user_agent(opts.user_agent_suffix.as_deref()));
    for (host, addr) in &opts.resolve {
        b = b.resolve(host, *addr);
    }
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{AuthError, ManagedIdentityCredential, NodeEndpoints, TokenCredential};

    /// What the loopback server answers to every request.
    #[derive(Clone, Copy)]
    pub(crate) enum Answer {
        /// 200, chunked, 16 KiB chunks until the client goes away.
        Endless,
        /// 200 announcing a 1 GiB `Content-Length`, then streaming.
        HugeLength,
        /// 200 with this body.
        Body(&'static str),
    }

    /// A plain-HTTP server on 127.0.0.1 (tests use loopback only); returns its address and a
    /// counter of body bytes written.
    pub(crate) async fn loopback(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let sent = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let chunk = vec![b'a'; 16 * 1024];
                    match answer {
                        Answer::Body(body) => {
                            let r = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(r.as_bytes()).await;
                        }
                        Answer::Endless => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                            framed.extend_from_slice(&chunk);
                            framed.extend_from_slice(b"\r\n");
                            while conn.write_all(&framed).await.is_ok() {
                                sent.fetch_add(chunk.len(), Ordering::Relaxed);
                            }
                        }
                        Answer::HugeLength => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n";
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            while conn.write_all(&chunk).await.is_ok() {
                                sent.fetch_add(chunk.len(), Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        (addr, sent)
    }

    fn client() -> reqwest::Client {
        build_client(&HttpOptions {
            system_roots: false,
            ..HttpOptions::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn get(addr: SocketAddr, limit: usize) -> Result<CappedBody, BodyError> {
        let resp = client()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        read_body(resp, limit).await
    }

    /// An endless body stops at the cap: an error, and the server wrote little more than the
    /// cap (plus socket buffers) before the client hung up.
    #[tokio::test]
    async fn an_endless_body_stops_at_the_cap() {
        let (addr, sent) = loopback(Answer::Endless).await;
        let e = tokio::time::timeout(Duration::from_secs(20), get(addr, 1024 * 1024))
            .await
            .unwrap_or_else(|_| panic!("reading an endless body did not stop"));
        assert!(
            matches!(e, Err(BodyError::TooLarge { limit: 1_048_576 })),
            "{e:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < 64 * 1024 * 1024, "{sent} bytes sent");
    }

    /// A `Content-Length` over the cap is refused before the body is read.
    #[tokio::test]
    async fn an_announced_length_over_the_cap_is_refused() {
        let (addr, _) = loopback(Answer::HugeLength).await;
        let e = get(addr, MAX_TOKEN_RESPONSE)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("the response body is over the cap of 262144 bytes")
        );
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let (addr, _) = loopback(Answer::Body(r#"{"a":"0123456789"}"#)).await;
        let b = get(addr, 18).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.expose(), br#"{"a":"0123456789"}"#);
        assert!(matches!(
            get(addr, 17).await,
            Err(BodyError::TooLarge { limit: 17 })
        ));
    }

    fn imds(addr: SocketAddr) -> ManagedIdentityCredential {
        let url = url::Url::parse(&format!("http://{addr}")).unwrap_or_else(|e| panic!("{e}"));
        let endpoints = NodeEndpoints {
            imds: url.clone(),
            nmi: url,
        };
        ManagedIdentityCredential::new(client(), &endpoints, None)
    }

    /// Token endpoints (here IMDS) used to be read with `bytes()`, whole: an endless answer
    /// grew the provider's memory until the request timed out. Now it is a bad response.
    #[tokio::test]
    async fn an_endless_token_response_is_a_bad_response() {
        let (addr, _) = loopback(Answer::Endless).await;
        let e = tokio::time::timeout(
            Duration::from_secs(20),
            imds(addr).get_token("https://vault.azure.net/.default"),
        )
        .await
        .unwrap_or_else(|_| panic!("reading an endless token response did not stop"));
        match e {
            Err(AuthError::BadResponse { endpoint, reason }) => {
                assert!(
                    endpoint.ends_with("/metadata/identity/oauth2/token"),
                    "{endpoint}"
                );
                assert_eq!(
                    reason,
                    "status 200: the response body is over the cap of 262144 bytes"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// An expiry past the clock's range (`SystemTime + Duration` panicked on it) counts as
    /// unknown: the token is used once and never cached.
    #[tokio::test]
    async fn an_expiry_past_the_clock_is_not_a_panic() {
        for body in [
            r#"{"access_token":"t","expires_on":"18446744073709551615"}"#,
            r#"{"access_token":"t","expires_on":1e300}"#,
            r#"{"access_token":"t","expires_in":"18446744073709551615"}"#,
            r#"{"access_token":"t","expires_in":1e300}"#,
        ] {
            let (addr, _) = loopback(Answer::Body(body)).await;
            let t = imds(addr)
                .get_token("https://vault.azure.net/.default")
                .await
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert!(t.expires_on <= SystemTime::now(), "{body}");
        }
    }
}
