//! The driver's error type and its one mapping to gRPC status codes.
//!
//! Messages name the object and the fix; they never carry secret values or tokens (providers'
//! error codes are short identifiers, and request attributes are never formatted into errors).

use tonic::{Code, Status};

use crate::pod_status::PodStatusError;
use crate::writer::WriteError;

/// A cause of any type, kept for [`daemon::error::render`] and for code that inspects it.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a NodePublishVolume / NodeUnpublishVolume failed. Causes are kept as `#[source]`; the
/// text kubelet and Events show is [`daemon::error::render`] of the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The request or the volume context is malformed (kubelet or the pod spec must change).
    #[error("{0}")]
    InvalidArgument(String),
    /// The SecretProviderClass does not exist in the pod's namespace.
    #[error("failed to get secretproviderclass {namespace}/{name}: {hint}")]
    ClassNotFound {
        namespace: String,
        name: String,
        /// What to do about it.
        hint: String,
    },
    /// The SecretProviderClass could not be read (API error, permissions, class file).
    #[error(
        "failed to get secretproviderclass {namespace}/{name}{}",
        forbidden_hint(source)
    )]
    ClassUnreadable {
        namespace: String,
        name: String,
        #[source]
        source: Cause,
    },
    /// The SecretProviderClass exists but cannot be used as is.
    #[error("secretproviderclass {namespace}/{name}: {reason}")]
    ClassInvalid {
        namespace: String,
        name: String,
        reason: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The target directory could not be prepared.
    #[error("failed to ensure mount point {path}")]
    MountPoint {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// tmpfs could not be mounted.
    #[error("failed to mount tmpfs at {path}")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
    #[error("failed to write files to {path}")]
    FileWrite {
        path: String,
        #[source]
        source: WriteError,
    },
    /// The SecretProviderClassPodStatus could not be written.
    #[error("failed to record secretproviderclasspodstatus {namespace}/{name}")]
    PodStatus {
        namespace: String,
        name: String,
        #[source]
        source: PodStatusError,
    },
    /// Unmount or cleanup of the target failed.
    #[error("failed to clean up {path}")]
    Cleanup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A bug or an unexpected local failure.
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: Option<Cause>,
    },
}

/// The fix for a 403, shown in the message (the API server's own text follows as the cause).
fn forbidden_hint(source: &Cause) -> &'static str {
    match source.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) if s.code == 403 => {
            ": forbidden: the driver's ServiceAccount needs `get` on \
             secretproviderclasses.secrets-store.csi.x-k8s.io (deploy/rbac.yaml)"
        }
        _ => "",
    }
}

/// The gRPC code for an API server failure: a conflict is not an outage.
fn kube_code(e: &kube::Error) -> Code {
    match e {
        kube::Error::Api(s) => match s.code {
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::Aborted,
            422 | 400 => Code::InvalidArgument,
            429 => Code::ResourceExhausted,
            500.. => Code::Unavailable,
            _ => Code::Unknown,
        },
        // Transport, TLS, timeouts, bad responses: the API server is not reachable right now.
        _ => Code::Unavailable,
    }
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
            Self::Internal { .. } => "Internal",
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
            Self::ClassUnreadable { source, .. } => source
                .downcast_ref::<kube::Error>()
                .map_or(Code::Unavailable, kube_code),
            Self::PodStatus { source, .. } => match source {
                PodStatusError::Api(e) => kube_code(e),
                PodStatusError::Conflict { .. } => Code::Aborted,
            },
            Self::ProviderNotFound { .. } => Code::Unavailable,
            Self::ProviderCall { code, .. } => *code,
            Self::ProviderErrorCode { .. } | Self::MissingObjectVersions(_) => Code::Unknown,
            Self::ResponseTooLarge { .. } => Code::ResourceExhausted,
            Self::Deadline(_) => Code::DeadlineExceeded,
            Self::MountPoint { .. }
            | Self::Mount { .. }
            | Self::FileWrite { .. }
            | Self::Cleanup { .. } => Code::Internal,
            Self::Internal { .. } => Code::Internal,
        }
    }
}

impl PublishError {
    /// The message with every cause, as kubelet, Events and logs show it.
    pub fn render(&self) -> String {
        daemon::error::render(self)
    }

    /// A local failure with its cause.
    pub fn internal(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            what,
            source: Some(source.into()),
        }
    }
}

impl From<PublishError> for Status {
    fn from(e: PublishError) -> Self {
        Status::new(e.code(), e.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    fn pod_status(e: PodStatusError) -> PublishError {
        PublishError::PodStatus {
            namespace: "default".into(),
            name: "web-default-kv".into(),
            source: e,
        }
    }

    #[test]
    fn api_server_failures_keep_their_cause_and_get_distinct_codes() {
        let conflict = pod_status(PodStatusError::Api(api(
            409,
            "the object changed",
            "Conflict",
        )));
        let outage = pod_status(PodStatusError::Api(api(
            503,
            "etcd unavailable",
            "ServiceUnavailable",
        )));
        let forbidden = pod_status(PodStatusError::Api(api(403, "no", "Forbidden")));
        assert_eq!(conflict.code(), Code::Aborted);
        assert_eq!(outage.code(), Code::Unavailable);
        assert_eq!(forbidden.code(), Code::PermissionDenied);
        // One metric label for all three: the cause changes the code, not the bounded kind.
        assert_eq!(conflict.kind(), outage.kind());
        let shown = Status::from(forbidden).message().to_string();
        assert!(
            shown.starts_with("failed to record secretproviderclasspodstatus default/web-default-kv: forbidden: the driver's ServiceAccount needs"),
            "{shown}"
        );
        assert!(shown.ends_with("no: Forbidden"), "{shown}");
        let gave_up = pod_status(PodStatusError::Conflict {
            name: "web-default-kv".into(),
            attempts: 3,
        });
        assert_eq!(gave_up.code(), Code::Aborted);
    }

    #[test]
    fn class_read_errors_name_the_fix_for_403_only() {
        let class = |e: kube::Error| PublishError::ClassUnreadable {
            namespace: "prod".into(),
            name: "kv".into(),
            source: Box::new(e),
        };
        let forbidden = class(api(403, "cannot get", "Forbidden"));
        assert_eq!(forbidden.code(), Code::PermissionDenied);
        assert!(
            forbidden.render().contains("deploy/rbac.yaml"),
            "{}",
            forbidden.render()
        );
        let outage = class(api(500, "boom", "InternalError"));
        assert_eq!(outage.code(), Code::Unavailable);
        let shown = outage.render();
        assert!(
            shown.starts_with("failed to get secretproviderclass prod/kv: ApiError: boom"),
            "{shown}"
        );
        assert!(!shown.contains("rbac"), "{shown}");
    }

    #[test]
    fn io_causes_are_rendered_after_the_message() {
        let e = PublishError::Mount {
            path: "/var/lib/kubelet/pods/x/mount".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let shown = e.render();
        assert!(
            shown.starts_with("failed to mount tmpfs at /var/lib/kubelet/pods/x/mount: "),
            "{shown}"
        );
        assert!(shown.ends_with("permission denied"), "{shown}");
        assert_eq!(e.code(), Code::Internal);
    }
}
