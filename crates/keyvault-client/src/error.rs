//! Key Vault errors, classified.

use std::time::Duration;

/// A Key Vault call failed. Messages carry the vault's error code and message, never a token or
/// a secret value.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// 404.
    #[error("not found (404 {code}): {message}")]
    NotFound {
        /// Key Vault error code, e.g. `SecretNotFound`.
        code: String,
        /// Key Vault message.
        message: String,
    },
    /// 403: the identity has no access (or the object is disabled).
    #[error("forbidden (403 {code}): {message}")]
    Forbidden {
        /// Key Vault error code.
        code: String,
        /// Key Vault message.
        message: String,
    },
    /// 429 after all retries.
    #[error("throttled by Key Vault (429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    Throttled {
        /// The last server-requested delay.
        retry_after: Option<Duration>,
    },
    /// 401 even with a fresh token.
    #[error("authentication failed (401 {code}): {message}")]
    Unauthorized {
        /// Key Vault error code.
        code: String,
        /// Key Vault message.
        message: String,
    },
    /// No token could be obtained.
    #[error("authentication failed: {0}")]
    Auth(#[from] entra_auth::AuthError),
    /// The 401 challenge was unusable or pointed at another domain.
    #[error("authentication failed: {0}")]
    Challenge(#[from] entra_auth::ChallengeError),
    /// 5xx (after retries) or another unexpected status.
    #[error("Key Vault returned {status} {code}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Key Vault error code (may be empty).
        code: String,
        /// Key Vault message (may be empty).
        message: String,
    },
    /// The per-call timeout elapsed (after retries).
    #[error("Key Vault request timed out after {0:?}")]
    Timeout(Duration),
    /// Connection-level failure (after retries).
    #[error("Key Vault unreachable: {0}")]
    Transport(String),
    /// 200 with a body that is not what the API promises.
    #[error("unexpected Key Vault response: {0}")]
    BadResponse(String),
}

impl KvError {
    /// A 403 because the object (or the asked version) is disabled, not because of access:
    /// Key Vault's inner error code `SecretDisabled`, `KeyDisabled` or `CertificateDisabled`.
    pub fn is_disabled(&self) -> bool {
        matches!(self, Self::Forbidden { code, .. } if code.ends_with("Disabled"))
    }

    /// Bounded label for metrics and the gRPC code mapping.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::Throttled { .. } => "throttled",
            Self::Unauthorized { .. } | Self::Challenge(_) => "auth_failed",
            Self::Auth(e) => e.kind(),
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "unexpected_status",
            Self::Timeout(_) => "timeout",
            Self::Transport(_) => "unavailable",
            Self::BadResponse(_) => "bad_response",
        }
    }
}
