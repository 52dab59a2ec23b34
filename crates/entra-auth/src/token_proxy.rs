//! AKS identity binding (`useAzureTokenProxy: "true"`): the pod's service-account token for
//! audience `api://AKSIdentityBinding` is the client assertion, and the token request goes to
//! the cluster's token proxy instead of Entra ID directly.
//!
//! What upstream (provider v1.8.2 with azidentity's custom token proxy) does on the wire, and
//! this module does too:
//! - proxy URL: `--token-proxy-url`, else `https://kubernetes.default.svc.cluster.local`; it must
//!   be `https`, without user info, query or fragment; an empty path is `/`;
//! - the token request's scheme and host become the proxy's, its path is the proxy's path joined
//!   with the original one (`/<tenant>/oauth2/v2.0/token`), its query is kept; the `Host` header
//!   stays the Entra authority's, as Go sends it;
//! - TLS: the server name (SNI, and the name the certificate is checked against) is `--sni-name`,
//!   else computed from the API server's certificate (a DNS name
//!   `hcp-kubernetes.<cluster id>.svc.cluster.local` gives
//!   `"a" + base32hex(sha256("identity-binding" + id)) + ".ests.aks"`, lower case);
//! - trust: the service-account CA file (`/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`)
//!   when it exists at start, re-read before every token request and taken anew when its bytes
//!   change (an empty file keeps the previous anchors, or fails when there are none yet);
//!   without it, the system roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`.
//!
//! Deviations, on purpose: upstream computes the SNI name once at start and keeps a failure
//! until restart; here it is computed on the first identity-binding mount and a failure is
//! retried by the next mount. An invalid `--token-proxy-url` stops the provider at start
//! instead of failing every identity-binding mount. No OpenID discovery round trip through the
//! proxy (see the crate docs); the token request goes over HTTP/1.1 and never through
//! `HTTP(S)_PROXY` (Go would honour it for the proxy URL's host).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use url::Url;

use crate::cloud::Cloud;
use crate::credential::{AccessToken, AuthError, BoxFuture, CredentialIdentity, TokenCredential};
use crate::http::{HttpOptions, client_builder, load_roots, tls_config};
use crate::retry::RetryPolicy;
use sensitive::SecretString;

/// The audience of the service-account token identity binding exchanges.
pub const IDENTITY_BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";
/// The token proxy when `--token-proxy-url` is not given: the API server's in-cluster name.
pub const DEFAULT_TOKEN_PROXY_URL: &str = "https://kubernetes.default.svc.cluster.local";
/// The service-account CA every pod gets.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The API server's in-cluster name, dialled to read its certificate for the SNI name.
pub const API_SERVER_HOST: &str = "kubernetes.default.svc.cluster.local";
/// How long the TLS dial to the API server may take.
const API_SERVER_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest CA file read.
const MAX_CA_FILE: u64 = 1024 * 1024;

/// The SNI name of a cluster's token proxy: `"a"` + base32hex (no padding) of
/// SHA-256(`"identity-binding"` + cluster id) + `".ests.aks"`, lower case (a 53-character first
/// label, a valid DNS name).
pub fn sni_for_cluster(cluster_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"identity-binding")
        .chain_update(cluster_id.as_bytes())
        .finalize();
    let label = data_encoding::BASE32HEX_NOPAD.encode(&digest);
    format!("a{label}.ests.aks").to_ascii_lowercase()
}

/// The cluster id in an API server certificate's DNS name
/// `hcp-kubernetes.<id>.svc.cluster.local`.
fn cluster_id_of(dns_name: &str) -> Option<&str> {
    dns_name
        .strip_prefix("hcp-kubernetes.")?
        .strip_suffix(".svc.cluster.local")
}

/// Why the token proxy cannot be used. No token or secret in any message.
#[derive(Debug, thiserror::Error)]
pub enum TokenProxyError {
    /// `--token-proxy-url` cannot be parsed.
    #[error("failed to parse custom token proxy URL {url:?}: {source}")]
    ParseUrl {
        /// As given.
        url: String,
        /// Parser message.
        #[source]
        source: url::ParseError,
    },
    /// `--token-proxy-url` is not an https URL without user info, query and fragment.
    #[error(
        "custom token endpoint URL {url:?} {problem}; give an https URL such as {DEFAULT_TOKEN_PROXY_URL}"
    )]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `--sni-name` (or the computed name) is not a DNS name.
    #[error("SNI name {0:?} is not a valid DNS name; fix --sni-name")]
    BadSni(String),
    /// The SNI name could not be computed from the API server's certificate.
    #[error(
        "compute SNI name: extract cluster ID from API server certificate: {reason} (use --sni-name flag to skip automatic SNI detection)"
    )]
    Sni {
        /// What failed.
        reason: String,
    },
    /// The CA file could not be read.
    #[error("read CA file {path:?}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is empty and no earlier content is known.
    #[error("CA file {0:?} is empty")]
    EmptyCa(PathBuf),
    /// The CA file holds no certificate.
    #[error("parse CA file {0:?}: no valid certificates found")]
    ParseCa(PathBuf),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The proxy's host name does not resolve.
    #[error("resolve token proxy host {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// How to reach the token proxy.
#[derive(Clone, Debug)]
pub struct TokenProxyConfig {
    /// `--token-proxy-url`; empty: [`DEFAULT_TOKEN_PROXY_URL`].
    pub url: String,
    /// `--sni-name`; empty: computed from the API server's certificate.
    pub sni_name: String,
    /// The CA the proxy's certificate chains to, re-read before each token request; `None`:
    /// the system roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`.
    pub ca_file: Option<PathBuf>,
    /// The port of [`API_SERVER_HOST`], dialled to compute the SNI name
    /// (`KUBERNETES_SERVICE_PORT`, default 443).
    pub api_server_port: u16,
    /// Address of [`API_SERVER_HOST`], instead of DNS (tests).
    pub api_server_addr: Option<SocketAddr>,
}

impl TokenProxyConfig {
    /// From the two flags and the environment, as upstream: the service-account CA file when it
    /// exists, `KUBERNETES_SERVICE_PORT` or 443.
    pub fn from_flags(url: &str, sni_name: &str) -> Self {
        let ca = Path::new(DEFAULT_CA_FILE);
        Self {
            url: url.trim().to_owned(),
            sni_name: sni_name.trim().to_owned(),
            ca_file: ca.exists().then(|| ca.to_path_buf()),
            api_server_port: std::env::var("KUBERNETES_SERVICE_PORT")
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(443),
            api_server_addr: None,
        }
    }
}

impl Default for TokenProxyConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            sni_name: String::new(),
            ca_file: None,
            api_server_port: 443,
            api_server_addr: None,
        }
    }
}

/// Validates a token proxy URL as azidentity does.
pub fn parse_proxy_url(raw: &str) -> Result<Url, TokenProxyError> {
    let raw = if raw.is_empty() {
        DEFAULT_TOKEN_PROXY_URL
    } else {
        raw
    };
    let url = Url::parse(raw).map_err(|source| TokenProxyError::ParseUrl {
        url: raw.to_owned(),
        source,
    })?;
    let bad = |problem| TokenProxyError::BadUrl {
        url: raw.to_owned(),
        problem,
    };
    if url.scheme() != "https" {
        return Err(bad("must use https scheme"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user info"));
    }
    if url.query().is_some() {
        return Err(bad("must not contain a query"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not contain a fragment"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    Ok(url)
}

/// The proxy path joined with the original path (`/` between them, no doubled slash).
fn joined_path(proxy: &Url, original: &Url) -> String {
    format!(
        "{}/{}",
        proxy.path().trim_end_matches('/'),
        original.path().trim_start_matches('/')
    )
}

/// The client for the current CA content.
struct Current {
    ca: Vec<u8>,
    client: reqwest::Client,
}

/// The cluster's token proxy: URL, SNI name (computed once, on first use), and an HTTP client
/// rebuilt whenever the CA file changes. Shared by every identity-binding mount.
pub struct TokenProxy {
    url: Url,
    config: TokenProxyConfig,
    http: HttpOptions,
    sni: tokio::sync::OnceCell<String>,
    current: tokio::sync::Mutex<Option<Current>>,
}

impl fmt::Debug for TokenProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProxy")
            .field("url", &self.url.as_str())
            .field("sni", &self.sni.get())
            .field("ca_file", &self.config.ca_file)
            .finish_non_exhaustive()
    }
}

impl TokenProxy {
    /// Validates the URL (and a given SNI name); nothing is dialled yet.
    pub fn new(config: TokenProxyConfig, http: HttpOptions) -> Result<Self, TokenProxyError> {
        let url = parse_proxy_url(&config.url)?;
        let sni = tokio::sync::OnceCell::new();
        if !config.sni_name.is_empty() {
            let name = checked_dns_name(&config.sni_name)?;
            let _ = sni.set(name);
        }
        Ok(Self {
            url,
            config,
            http,
            sni,
            current: tokio::sync::Mutex::new(None),
        })
    }

    /// The proxy URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The SNI name: the configured one, else computed from the API server's certificate
    /// (once; a failure is retried next time).
    pub async fn sni_name(&self) -> Result<&str, TokenProxyError> {
        self.sni
            .get_or_try_init(|| async {
                let id = self.cluster_id().await?;
                let name = sni_for_cluster(&id);
                tracing::info!(sni = %name, "computed the identity-binding SNI name from the API server certificate");
                checked_dns_name(&name)
            })
            .await
            .map(String::as_str)
    }

    /// Everything a token request needs, checked now: the SNI name and the client over the
    /// current CA file.
    pub async fn ready(&self) -> Result<(), TokenProxyError> {
        self.client().await.map(|_| ())
    }

    /// The cluster id from the API server's serving certificate (`hcp-kubernetes.<id>.svc.cluster.local`).
    async fn cluster_id(&self) -> Result<String, TokenProxyError> {
        let fail = |reason: String| TokenProxyError::Sni { reason };
        let ca_path = Path::new(DEFAULT_CA_FILE);
        let ca_path = self.config.ca_file.as_deref().unwrap_or(ca_path);
        let ca = read_capped(ca_path).await.map_err(|e| {
            // Go's words for the common case, so the text matches upstream's.
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("open {}: no such file or directory", ca_path.display())
                }
                _ => e.to_string(),
            };
            fail(format!("read CA file {}: {why}", ca_path.display()))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca).flatten() {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(fail(format!(
                "no valid certificates found in {}",
                ca_path.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let port = self.config.api_server_port;
        let dial = async {
            let tcp = match self.config.api_server_addr {
                Some(addr) => tokio::net::TcpStream::connect(addr).await,
                None => tokio::net::TcpStream::connect((API_SERVER_HOST, port)).await,
            }
            .map_err(|e| fail(format!("TLS connect to API server: {e}")))?;
            let name = ServerName::try_from(API_SERVER_HOST)
                .map_err(|e| fail(e.to_string()))?
                .to_owned();
            tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS connect to API server: {e}")))
        };
        let stream = tokio::time::timeout(API_SERVER_DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| fail("TLS connect to API server: timed out".into()))??;
        let (_, conn) = stream.get_ref();
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| fail("no certificates presented by API server".into()))?;
        let names = dns_names(leaf.as_ref()).map_err(fail)?;
        for name in &names {
            if let Some(id) = cluster_id_of(name) {
                if id.is_empty() {
                    return Err(fail(format!("empty cluster ID in SAN {name:?}")));
                }
                return Ok(id.to_owned());
            }
        }
        Err(fail(
            "cluster ID SAN not found in API server certificate".into(),
        ))
    }

    /// The client for the current CA content: the CA file is read every time; changed bytes
    /// give a new client, an empty file keeps the previous one.
    async fn client(&self) -> Result<(reqwest::Client, String), TokenProxyError> {
        let sni = self.sni_name().await?.to_owned();
        let mut current = self.current.lock().await;
        let ca = match &self.config.ca_file {
            Some(path) => {
                let bytes = read_capped(path)
                    .await
                    .map_err(|source| TokenProxyError::ReadCa {
                        path: path.clone(),
                        source,
                    })?;
                if bytes.is_empty() {
                    return match current.as_ref() {
                        Some(c) => Ok((c.client.clone(), sni)),
                        None => Err(TokenProxyError::EmptyCa(path.clone())),
                    };
                }
                Some((path, bytes))
            }
            None => None,
        };
        if let Some(c) = current.as_ref() {
            let same = match &ca {
                Some((_, bytes)) => *bytes == c.ca,
                None => true,
            };
            if same {
                return Ok((c.client.clone(), sni));
            }
        }
        let roots = match &ca {
            Some((path, bytes)) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(bytes).flatten() {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(TokenProxyError::ParseCa((*path).clone()));
                }
                roots
            }
            None => load_roots(&self.http)?,
        };
        let addrs = self.proxy_addrs().await?;
        // The SNI name is the URL host (so rustls sends it and checks the certificate against
        // it), pinned to the proxy's real addresses. No HTTP(S)_PROXY: the token proxy is the
        // cluster's API server address, and an outbound proxy would be asked for the SNI name.
        let client = client_builder(&self.http, tls_config(roots, &[b"http/1.1"])?)
            .http1_only()
            .no_proxy()
            .resolve_to_addrs(&sni, &addrs)
            .build()
            .map_err(|e| crate::http::HttpError::Build(e.to_string()))?;
        if current.is_some() {
            tracing::info!(
                "the token proxy's CA file changed; new connections trust its new content"
            );
        }
        *current = Some(Current {
            ca: ca.map(|(_, b)| b).unwrap_or_default(),
            client: client.clone(),
        });
        Ok((client, sni))
    }

    /// The proxy host's addresses: a test override from the HTTP options, an IP literal, or DNS.
    async fn proxy_addrs(&self) -> Result<Vec<SocketAddr>, TokenProxyError> {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or(443);
        if let Some((_, addr)) = self.http.resolve.iter().find(|(h, _)| h == host) {
            return Ok(vec![SocketAddr::new(addr.ip(), port)]);
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TokenProxyError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TokenProxyError::Resolve {
                host: host.to_owned(),
                reason: "no address".into(),
            });
        }
        Ok(addrs)
    }

    /// Where a token request for `original` goes, and the URL as named in errors.
    fn rewrite(&self, original: &Url, sni: &str) -> Result<(Url, String), AuthError> {
        let path = joined_path(&self.url, original);
        let mut to = self.url.clone();
        to.set_path(&path);
        to.set_query(original.query());
        let shown = to.to_string();
        to.set_host(Some(sni))
            .map_err(|e| AuthError::TokenProxy(TokenProxyError::BadSni(format!("{sni}: {e}"))))?;
        Ok((to, shown))
    }
}

/// A DNS name rustls accepts as a server name (not an IP address).
fn checked_dns_name(name: &str) -> Result<String, TokenProxyError> {
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(name.to_owned()),
        _ => Err(TokenProxyError::BadSni(name.to_owned())),
    }
}

/// Reads a small file whole (at most [`MAX_CA_FILE`] bytes).
async fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::new();
    f.take(MAX_CA_FILE).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// The DNS subject alternative names of a DER certificate.
fn dns_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| format!("parse API server certificate: {e}"))?;
    let san = cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .map_err(|e| format!("parse API server certificate SANs: {e}"))?;
    Ok(san
        .map(|(_, san)| {
            san.0
                .into_iter()
                .filter_map(|n| match n {
                    GeneralName::DnsName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Identity binding: the service-account token for [`IDENTITY_BINDING_AUDIENCE`] as the client
/// assertion of a client-credentials request, sent through the [`TokenProxy`].
pub struct IdentityBindingCredential {
    proxy: Arc<TokenProxy>,
    token_url: Url,
    authority: String,
    tenant: String,
    client_id: String,
    assertion: SecretString,
    retry: RetryPolicy,
}

impl fmt::Debug for IdentityBindingCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityBindingCredential")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("proxy", &self.proxy.url().as_str())
            .finish_non_exhaustive()
    }
}

impl IdentityBindingCredential {
    /// Builds the credential for one mount.
    pub fn new(
        proxy: Arc<TokenProxy>,
        cloud: &Cloud,
        tenant: &str,
        client_id: &str,
        assertion: SecretString,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            proxy,
            token_url: crate::credential::token_url(cloud, tenant)?,
            authority: cloud.active_directory_endpoint.clone(),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            assertion,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy of the token request.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

impl TokenCredential for IdentityBindingCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let (http, sni) = self.proxy.client().await.map_err(AuthError::TokenProxy)?;
            let (url, shown) = self.proxy.rewrite(&self.token_url, &sni)?;
            // Go keeps the request's Host (the Entra authority) when the proxy rewrites the URL.
            let host = match (self.token_url.host_str(), self.token_url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                (None, _) => String::new(),
            };
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", self.assertion.expose()),
                ("scope", scope),
            ];
            crate::credential::entra_token_to(&http, &url, &shown, &host, &self.retry, &form).await
        })
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity {
            kind: "identity_binding",
            authority: format!("{} via {}", self.authority, self.proxy.url()),
            tenant: Some(self.tenant.clone()),
            client_id: Some(self.client_id.clone()),
            pod: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Upstream's vector (`TestResolveServerName`): "a" prefix, ".ests.aks" suffix, lower case,
    /// a 53-character first label, deterministic, distinct per id. The exact names were computed
    /// independently with Go's `encoding/base32` HexEncoding and Python's `b32hexencode`.
    #[test]
    fn sni_name_matches_upstreams_vector() {
        for (id, want) in [
            (
                "696995ccb303450001b31a18",
                "aeaf29ip1hi5q38ebc3u4daum81u0unk52t5bg50j25234fmuj78g.ests.aks",
            ),
            (
                "abc123def456",
                "avimke6u6l2eeq8qc1cneuaq4sl2e1av9t4clqgun97le32hub670.ests.aks",
            ),
        ] {
            let sni = sni_for_cluster(id);
            assert_eq!(sni, want);
            assert!(sni.starts_with('a'));
            assert_eq!(sni, sni.to_ascii_lowercase());
            assert_eq!(sni.strip_suffix(".ests.aks").map(str::len), Some(53));
            assert_eq!(sni, sni_for_cluster(id));
            assert!(checked_dns_name(&sni).is_ok());
        }
        assert_ne!(sni_for_cluster("id1"), sni_for_cluster("id2"));
    }

    #[test]
    fn the_cluster_id_comes_from_the_hcp_name_only() {
        assert_eq!(
            cluster_id_of("hcp-kubernetes.696995ccb303450001b31a18.svc.cluster.local"),
            Some("696995ccb303450001b31a18")
        );
        assert_eq!(cluster_id_of("kubernetes.default.svc.cluster.local"), None);
        assert_eq!(cluster_id_of("hcp-kubernetes..svc.cluster.local"), Some(""));
    }

    /// azidentity's checks on the proxy URL, with its error texts.
    #[test]
    fn proxy_urls_are_checked_as_azidentity_does() {
        let ok = parse_proxy_url("").unwrap();
        assert_eq!(ok.as_str(), "https://kubernetes.default.svc.cluster.local/");
        assert_eq!(
            parse_proxy_url("https://example.com/token/path")
                .unwrap()
                .path(),
            "/token/path"
        );
        for (url, text) in [
            ("http://example.com", "must use https scheme"),
            (
                "https://user:pass@example.com/token",
                "must not contain user info",
            ),
            (
                "https://example.com/token?foo=bar",
                "must not contain a query",
            ),
            (
                "https://example.com/token#frag",
                "must not contain a fragment",
            ),
        ] {
            let e = parse_proxy_url(url).unwrap_err().to_string();
            assert!(e.contains(text), "{url}: {e}");
            assert!(e.contains(url), "{url}: {e}");
        }
        let e = parse_proxy_url("not a url").unwrap_err().to_string();
        assert!(
            e.starts_with("failed to parse custom token proxy URL \"not a url\""),
            "{e}"
        );
    }

    /// The token path is the proxy path joined with the original one; the query is kept.
    #[test]
    fn token_requests_are_rewritten_to_the_proxy() {
        let original =
            Url::parse("https://login.microsoftonline.com/t1/oauth2/v2.0/token?x=1").unwrap();
        for (proxy, want) in [
            (
                "https://kubernetes.default.svc.cluster.local",
                "https://kubernetes.default.svc.cluster.local/t1/oauth2/v2.0/token?x=1",
            ),
            (
                "https://10.0.0.1:8443/proxy/",
                "https://10.0.0.1:8443/proxy/t1/oauth2/v2.0/token?x=1",
            ),
            (
                "https://p.example/a/b",
                "https://p.example/a/b/t1/oauth2/v2.0/token?x=1",
            ),
        ] {
            let p = TokenProxy::new(
                TokenProxyConfig {
                    url: proxy.into(),
                    sni_name: "sni.ests.aks".into(),
                    ..TokenProxyConfig::default()
                },
                HttpOptions::default(),
            )
            .unwrap();
            let (to, shown) = p.rewrite(&original, "sni.ests.aks").unwrap();
            assert_eq!(shown, want);
            assert_eq!(to.host_str(), Some("sni.ests.aks"));
            assert_eq!(to.port(), Url::parse(want).unwrap().port());
            assert_eq!(to.path(), Url::parse(want).unwrap().path());
        }
    }

    #[test]
    fn an_ip_address_is_not_an_sni_name() {
        let e = TokenProxy::new(
            TokenProxyConfig {
                sni_name: "10.0.0.1".into(),
                ..TokenProxyConfig::default()
            },
            HttpOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SNI name \"10.0.0.1\" is not a valid DNS name; fix --sni-name"
        );
    }
}
