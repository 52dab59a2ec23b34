//! Why one sync failed, and the condition reason and message each failure reports (upstream's
//! reasons and message shapes). Messages name objects and fields, never values or tokens.

use crate::conditions::*;

/// One failed sync of one SecretSync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("label {0} is reserved for use by the Secrets Store Sync Controller")]
    ReservedLabel(&'static str),
    #[error("annotation {0} is reserved for use by the Secrets Store Sync Controller")]
    ReservedAnnotation(&'static str),
    #[error(
        "failed to get SecretProviderClass {name:?}: {}",
        explain(source, "get", "secretproviderclasses.secrets-store.csi.x-k8s.io")
    )]
    Class {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "SecretProviderClass {name:?} has no spec.provider: set it to the provider's name (e.g. azure)"
    )]
    NoProvider { name: String },
    #[error(
        "failed to get a token for service account {namespace}/{service_account} (audience {audience:?}): {}",
        explain(source, "create", "serviceaccounts/token")
    )]
    Token {
        namespace: String,
        service_account: String,
        audience: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to build the provider parameters: {0}")]
    Attributes(#[source] serde_json::Error),
    #[error("fetching secrets from the provider failed: {0}")]
    Provider(#[source] Box<driver::PublishError>),
    #[error("fetching secrets from the provider failed: {0}")]
    Data(String),
    #[error(
        "failed to patch secret {name:?}: the Secret exists and is not owned by this SecretSync \
         (no owner reference to it); the controller never overwrites a Secret it does not own. \
         Delete or rename the existing Secret, or rename the SecretSync"
    )]
    NotOwned { name: String },
    #[error(
        "failed to patch secret {name:?}: {}",
        explain(source, "patch", "secrets")
    )]
    Patch {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "failed to read secret {name:?}: {}",
        explain(source, "get", "secrets")
    )]
    ReadSecret {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to update the SecretSync status: {0}")]
    Status(#[source] Box<kube::Error>),
}

impl SyncError {
    /// The condition reason the failure is reported with (None: not reported in a condition).
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::ReservedLabel(_) => REASON_INVALID_LABEL,
            Self::ReservedAnnotation(_) => REASON_INVALID_ANNOTATION,
            Self::Class { .. } | Self::NoProvider { .. } => REASON_SPC_ERROR,
            Self::Token { .. } | Self::Attributes(_) => REASON_SYNC_ERROR,
            Self::Provider(_) => REASON_PROVIDER_ERROR,
            Self::Data(_) => REASON_FETCH_FAILED,
            Self::NotOwned { .. } | Self::Patch { .. } | Self::ReadSecret { .. } => {
                REASON_PATCH_ERROR
            }
            Self::Status(_) => return None,
        })
    }
}

/// A 403 names the missing permission and where the chart grants it.
fn explain(e: &kube::Error, verb: &str, resource: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden ({}): the sync controller's ServiceAccount needs `{verb}` on {resource} \
             (chart value syncController.enabled=true installs that role)",
            s.message
        ),
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}
