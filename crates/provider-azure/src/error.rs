//! Mount errors and their one mapping to gRPC status.

use keyvault_client::KvError;

use crate::params::ParamError;
use crate::render::RenderError;

/// Why a mount failed. The text names the parameter or object and the cause; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Bad request / SecretProviderClass parameters.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// `cloudName` / `cloudEnvFileName` did not resolve.
    #[error("cloudName {name} is not valid, error: {source}")]
    Cloud {
        /// As given.
        name: String,
        /// Why.
        source: entra_auth::CloudError,
    },
    /// The credential could not be built (the cause says why; its kind picks the code).
    #[error("failed to get keyvault client: {source}")]
    Credential {
        /// Why.
        #[from]
        source: entra_auth::AuthError,
    },
    /// `keyvaultName` and the cloud's DNS suffix do not make a URL.
    #[error("failed to get keyvault client: invalid vault URL {url:?}: {source}")]
    VaultUrl {
        /// The URL as built.
        url: String,
        /// Parser message.
        source: url::ParseError,
    },
    /// One object failed.
    #[error(
        "failed to get objectType:{object_type}, objectName:{object_name}, objectVersion:{object_version}: {source}"
    )]
    Object {
        /// `secret` / `key` / `cert`.
        object_type: &'static str,
        /// `objectName`.
        object_name: String,
        /// `objectVersion` as given.
        object_version: String,
        /// What went wrong.
        source: Box<ObjectError>,
    },
    /// Two files of the response would share a path (e.g. `x.crt` from
    /// `--write-cert-and-key-in-separate-files` and an object aliased `x.crt`).
    #[error(
        "two objects would write the same file \"{0}\": give one of them a distinct objectAlias"
    )]
    DuplicatePath(String),
    /// A `templates` entry did not render.
    #[error("failed to render templates: {0}")]
    Template(#[from] crate::template::TemplateError),
}

/// One object's failure.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Key Vault (or the identity provider) refused or failed.
    #[error(transparent)]
    KeyVault(#[from] KvError),
    /// The content could not be turned into files.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// `objectVersion` is not among the enabled versions (version history mode).
    #[error(
        "objectVersion {0} not found among the object's enabled versions; fix objectVersion or leave it empty for the latest"
    )]
    VersionNotListed(String),
    /// Listing the vault for a selection was refused.
    #[error(
        "listing {collection} of vault {vault} was refused, so {selection} cannot be resolved: the identity of SecretProviderClass {class} needs the \"list\" permission on {collection} (an access policy with List on {collection}, or an Azure RBAC role that includes {collection}/read such as \"Key Vault Secrets User\"); {source}"
    )]
    ListForbidden {
        /// `namespace/name` of the class (`<namespace>/<unknown>` when the driver did not say).
        class: String,
        /// `secrets`, `keys` or `certificates`.
        collection: &'static str,
        /// The vault name.
        vault: String,
        /// The selection, as written.
        selection: String,
        /// Key Vault's answer.
        source: KvError,
    },
    /// A selection matched more objects than `--max-selected-objects`.
    #[error(
        "{selection} selects {count} {collection}, more than this provider allows ({cap}, flag --max-selected-objects): narrow the selection (a longer objectNamePrefix, more objectTags) or raise the flag"
    )]
    TooManyMatches {
        /// The selection, as written.
        selection: String,
        /// `secrets`, `keys` or `certificates`.
        collection: &'static str,
        /// Matches.
        count: usize,
        /// The limit.
        cap: usize,
    },
    /// A selection matched nothing.
    #[error(
        "{selection} matches no enabled, unexpired {collection} in vault {vault}: check the prefix and tags (tag values are case-sensitive), or add optional: \"true\" to allow an empty selection"
    )]
    NoMatch {
        /// The selection, as written.
        selection: String,
        /// `secrets`, `keys` or `certificates`.
        collection: &'static str,
        /// The vault name.
        vault: String,
    },
    /// `jmesPath` failed.
    #[error(transparent)]
    Extract(#[from] crate::extract::ExtractError),
    /// `jmesPath` on a certificate-backed secret.
    #[error(
        "jmesPath reads a plain secret's JSON value, but this secret backs a certificate: remove jmesPath"
    )]
    ExtractFromCertificate,
}

impl MountError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Params(_)
            | Self::Cloud { .. }
            | Self::DuplicatePath(_)
            | Self::VaultUrl { .. }
            | Self::Template(_) => "invalid_parameters",
            Self::Credential { source } => source.kind(),
            Self::Object { source, .. } => match source.as_ref() {
                ObjectError::KeyVault(e) => e.kind(),
                ObjectError::Render(_) => "bad_format",
                ObjectError::VersionNotListed(_) | ObjectError::NoMatch { .. } => "not_found",
                ObjectError::ListForbidden { .. } => "forbidden",
                ObjectError::TooManyMatches { .. } => "invalid_parameters",
                ObjectError::Extract(_) | ObjectError::ExtractFromCertificate => "bad_format",
            },
        }
    }

    /// The gRPC status the driver sees. Upstream always answers `Unknown`; the driver only looks
    /// at "is it an error", so a precise code costs nothing and helps whoever reads the event.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self.kind() {
            "invalid_parameters" | "auth_config" => Code::InvalidArgument,
            "auth_unavailable" => Code::Unavailable,
            "not_found" => Code::NotFound,
            "forbidden" => Code::PermissionDenied,
            "auth_failed" => Code::Unauthenticated,
            "throttled" => Code::ResourceExhausted,
            "timeout" => Code::DeadlineExceeded,
            "bad_format" | "bad_response" | "auth_bad_response" => Code::FailedPrecondition,
            _ => Code::Unavailable,
        };
        tonic::Status::new(
            code,
            format!(
                "failed to mount objects, error: {}",
                daemon::error::render(self)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use entra_auth::AuthError;
    use tonic::Code;

    use super::*;

    #[test]
    fn credential_errors_keep_their_kind() {
        let outage = MountError::from(AuthError::Unavailable {
            endpoint: "http://169.254.169.254/metadata/identity/oauth2/token".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(outage.kind(), "auth_unavailable");
        let status = outage.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().starts_with(
                "failed to mount objects, error: failed to get keyvault client: token endpoint"
            ),
            "{}",
            status.message()
        );
        let config = MountError::from(AuthError::NoPodInfo);
        assert_eq!(config.kind(), "auth_config");
        assert_eq!(config.to_status().code(), Code::InvalidArgument);
    }
}
