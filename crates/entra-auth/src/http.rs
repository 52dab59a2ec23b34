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

fn load_pem_file(path: &Path, out: &mut Vec<CertificateDer<'static>>) -> Result<usize, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        match cert {
            Ok(c) => {
                out.push(c);
                n += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n)
}

/// Collects the trust anchors described by `opts`.
pub fn load_roots(opts: &HttpOptions) -> Result<rustls::RootCertStore, HttpError> {
    let mut certs = Vec::new();
    if opts.system_roots {
        for p in SYSTEM_BUNDLES {
            let p = Path::new(p);
            if p.exists() && load_pem_file(p, &mut certs).is_ok() {
                break;
            }
        }
    }
    if let Some(p) = &opts.ssl_cert_file {
        let n = load_pem_file(p, &mut certs).map_err(|reason| HttpError::Roots {
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
            let _ = load_pem_file(&e.path(), &mut certs);
        }
    }
    let mut store = rustls::RootCertStore::empty();
    // Individual unparsable anchors in a system bundle are skipped, not fatal.
    let _ = store.add_parsable_certificates(certs);
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
    let roots = load_roots(opts)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        .user_agent(user_agent(opts.user_agent_suffix.as_deref()));
    for (host, addr) in &opts.resolve {
        b = b.resolve(host, *addr);
    }
    b.build().map_err(|e| HttpError::Build(e.to_string()))
}
