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
        let id = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_string(),
        };
        let noun = kind.noun();
        Self::new(
            404,
            kind.not_found_code(),
            format!(
                "A {noun} with (name/id) {id} was not found in this key vault. If you recently deleted this {noun} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }
    /// No soft-deleted object of `kind` named `name`.
    pub(crate) fn deleted_not_found(kind: ObjectKind, name: &str) -> Self {
        Self::new(
            404,
            kind.not_found_code(),
            format!("Deleted {} not found: {name}", kind.title()),
        )
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
    /// `secret`, `key`, `certificate`.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }
    /// `Secret`, `Key`, `Certificate`: how Key Vault's messages name the kind.
    pub(crate) fn title(self) -> &'static str {
        match self {
            ObjectKind::Secret => "Secret",
            ObjectKind::Key => "Key",
            ObjectKind::Certificate => "Certificate",
        }
    }
    /// The collection in paths and ids: `secrets`, `keys`, `certificates`.
    pub(crate) fn collection(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secrets",
            ObjectKind::Key => "keys",
            ObjectKind::Certificate => "certificates",
        }
    }
    fn not_found_code(self) -> &'static str {
        match self {
            ObjectKind::Secret => "SecretNotFound",
            ObjectKind::Key => "KeyNotFound",
            ObjectKind::Certificate => "CertificateNotFound",
        }
    }
}
