//! Errors: [`Error`] for starting and configuring the emulator; [`KvError`] for Key Vault responses.

use serde_json::json;

/// Why the emulator could not start or a request of the library API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seed: {0}")]
    Seed(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(
        "cannot listen on {addr}: {source} (pick a free port, or run as root for ports below 1024)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: {message}")]
    State { path: String, message: String },
    #[error("admin API: {0}")]
    Admin(String),
}

/// An error answered in Key Vault's JSON shape: `{"error":{"code","message","innererror"?}}`.
#[derive(Debug, Clone)]
pub(crate) struct KvError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) inner: Option<&'static str>,
}

impl KvError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            inner: None,
        }
    }
    pub(crate) fn inner(mut self, code: &'static str) -> Self {
        self.inner = Some(code);
        self
    }
    pub(crate) fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(400, "BadParameter", message)
    }
    pub(crate) fn not_found(kind: ObjectKind, name: &str, version: Option<&str>) -> Self {
        let (code, noun) = match kind {
            ObjectKind::Secret => ("SecretNotFound", "Secret"),
            ObjectKind::Key => ("KeyNotFound", "Key"),
            ObjectKind::Certificate => ("CertificateNotFound", "Certificate"),
        };
        let message = match version {
            Some(v) => format!(
                "A {} with (name/id) {name}/{v} was not found in this key vault. If you recently deleted this {} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                noun.to_lowercase(),
                noun.to_lowercase()
            ),
            None => format!(
                "A {} with (name/id) {name} was not found in this key vault. If you recently deleted this {} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                noun.to_lowercase(),
                noun.to_lowercase()
            ),
        };
        Self::new(404, code, message)
    }
    pub(crate) fn body(&self) -> serde_json::Value {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(inner) = self.inner {
            err["innererror"] = json!({ "code": inner });
        }
        json!({ "error": err })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Secret,
    Key,
    Certificate,
}

impl ObjectKind {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }
}
