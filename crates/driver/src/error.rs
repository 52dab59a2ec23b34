//! The driver's error type and its one mapping to gRPC status codes.
//!
//! Messages name the object and the fix; they never carry secret values or tokens (providers'
//! error codes are short identifiers, and request attributes are never formatted into errors).

use tonic::{Code, Status};

/// Why a NodePublishVolume / NodeUnpublishVolume failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The request or the volume context is malformed (kubelet or the pod spec must change).
    #[error("{0}")]
    InvalidArgument(String),
    /// The SecretProviderClass does not exist in the pod's namespace.
    #[error("failed to get secretproviderclass {namespace}/{name}: {reason}")]
    ClassNotFound {
        namespace: String,
        name: String,
        reason: String,
    },
    /// The SecretProviderClass could not be read (API error, permissions).
    #[error("failed to get secretproviderclass {namespace}/{name}: {reason}")]
    ClassUnreadable {
        namespace: String,
        name: String,
        reason: String,
    },
    /// The SecretProviderClass exists but cannot be used as is.
    #[error("secretproviderclass {namespace}/{name}: {reason}")]
    ClassInvalid {
        namespace: String,
        name: String,
        reason: String,
    },
    /// The target directory could not be prepared.
    #[error("failed to ensure mount point {path}: {reason}")]
    MountPoint { path: String, reason: String },
    /// tmpfs could not be mounted.
    #[error("failed to mount tmpfs at {path}: {reason}")]
    Mount { path: String, reason: String },
    /// No `<provider>.sock` in any provider directory.
    #[error(
        "provider {provider:?} not found: no socket {provider}.sock in {searched}; is the provider \
         DaemonSet running on this node and mounting the same directory?"
    )]
    ProviderNotFound { provider: String, searched: String },
    /// The provider name is not a valid socket name.
    #[error(
        "invalid provider name {0:?} in the SecretProviderClass: it must match ^[a-zA-Z0-9_-]{{0,30}}$"
    )]
    InvalidProvider(String),
    /// The provider call failed at the gRPC level.
    #[error("provider {provider:?} failed: {message}")]
    ProviderCall {
        provider: String,
        code: Code,
        message: String,
    },
    /// The provider answered with `error.code` set.
    #[error("mount request failed with provider error code {code}")]
    ProviderErrorCode { provider: String, code: String },
    /// The provider returned no object versions.
    #[error(
        "provider {0:?} returned no object versions (a provider must report at least one object)"
    )]
    MissingObjectVersions(String),
    /// The provider's response exceeded `--max-call-recv-msg-size`.
    #[error(
        "provider {provider:?} returned a response larger than the driver accepts ({message}); \
         raise --max-call-recv-msg-size on the driver (and the provider's send limit)"
    )]
    ResponseTooLarge { provider: String, message: String },
    /// The provider did not answer within the request deadline.
    #[error("provider {0:?} did not answer before the deadline")]
    Deadline(String),
    /// The provider returned a file the driver refuses to write, or writing failed.
    #[error("failed to write files to {path}: {reason}")]
    FileWrite { path: String, reason: String },
    /// The SecretProviderClassPodStatus could not be written.
    #[error("failed to record secretproviderclasspodstatus {namespace}/{name}: {reason}")]
    PodStatus {
        namespace: String,
        name: String,
        reason: String,
    },
    /// Unmount or cleanup of the target failed.
    #[error("failed to clean up {path}: {reason}")]
    Cleanup { path: String, reason: String },
    /// A bug or an unexpected local failure.
    #[error("{0}")]
    Internal(String),
}

impl PublishError {
    /// A bounded label for metrics (`error_type`); upstream's names where they exist.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "InvalidArgument",
            Self::ClassNotFound { .. } | Self::ClassUnreadable { .. } => {
                "SecretProviderClassNotFound"
            }
            Self::ClassInvalid { .. } => "SecretProviderClassInvalid",
            Self::MountPoint { .. } => "FailedToEnsureMountPoint",
            Self::Mount { .. } => "FailedToMount",
            Self::ProviderNotFound { .. } | Self::InvalidProvider(_) => {
                "FailedToLookupProviderGRPCClient"
            }
            Self::ProviderCall { .. } | Self::MissingObjectVersions(_) | Self::Deadline(_) => {
                "GRPCProviderError"
            }
            Self::ResponseTooLarge { .. } => "GRPCProviderError",
            Self::ProviderErrorCode { .. } => "ProviderError",
            Self::FileWrite { .. } => "FileWriteError",
            Self::PodStatus { .. } => "FailedToRecordPodStatus",
            Self::Cleanup { .. } => "FailedToCleanup",
            Self::Internal(_) => "Internal",
        }
    }

    /// The gRPC code kubelet sees. Transient conditions (provider not up yet, deadline, API
    /// unavailable) use codes kubelet treats as retryable.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) | Self::ClassInvalid { .. } | Self::InvalidProvider(_) => {
                Code::InvalidArgument
            }
            Self::ClassNotFound { .. } => Code::NotFound,
            Self::ClassUnreadable { .. } | Self::PodStatus { .. } => Code::Unavailable,
            Self::ProviderNotFound { .. } => Code::Unavailable,
            Self::ProviderCall { code, .. } => *code,
            Self::ProviderErrorCode { .. } | Self::MissingObjectVersions(_) => Code::Unknown,
            Self::ResponseTooLarge { .. } => Code::ResourceExhausted,
            Self::Deadline(_) => Code::DeadlineExceeded,
            Self::MountPoint { .. }
            | Self::Mount { .. }
            | Self::FileWrite { .. }
            | Self::Cleanup { .. } => Code::Internal,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<PublishError> for Status {
    fn from(e: PublishError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
