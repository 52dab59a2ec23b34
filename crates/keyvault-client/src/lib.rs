//! A thin Azure Key Vault data-plane client, api-version 7.4 (what the upstream provider's SDKs
//! use): get a secret, key or certificate (latest or a given version), list an object's
//! versions, and list a vault's secrets, keys or certificates with their attributes and tags
//! (following `nextLink`).
//!
//! The [`KeyVault`] trait is what the provider calls; [`Connector`] makes one per (vault,
//! credential). A caching/coalescing layer (issue 7) wraps both without changing the provider.
//!
//! Behaviour:
//! - Bearer challenge as the Azure SDKs: first request without a token, `401` →
//!   [`entra_auth::Challenge`] (resource must be a parent domain of the vault host) → token for
//!   `<resource>/.default` → retry; the token is reused by this client until shortly before expiry;
//!   a later `401` re-runs the challenge once.
//! - Per-call timeout; bounded retries with jitter on transport errors and 408/429/5xx, honouring
//!   `Retry-After` / `retry-after-ms` (a requested delay over 60 s is not waited for).
//! - Per vault and process ([`throttle`]): a token bucket, and on `429` a gate every mount waits
//!   at until `Retry-After` has passed, with the rate halved and then recovering (AIMD). The
//!   challenge scope is remembered per vault, so only a vault's first client sends the
//!   unauthenticated probe.
//! - Errors classified ([`KvError::kind`]): not found, forbidden, throttled, authentication
//!   failed, server error, timeout, transport, bad response.
//! - `nextLink` is only followed on the vault's own scheme/host/port, so a token never goes to
//!   another host.
//! - Connections ([`DirectOptions`]): each vault gets one HTTP/2 connection of its own, opened
//!   while the vault's first token is fetched, so the first requests wait for neither TCP nor TLS;
//!   reqwest carries the requests through a proxy from the environment and to a vault that does
//!   not speak HTTP/2.
//! - Bodies are read chunk by chunk under a cap ([`MAX_RESPONSE_BYTES`], 1 MiB; error bodies
//!   64 KiB): a longer answer is [`KvError::BadResponse`], never buffered whole.

pub mod cache;
mod client;
mod direct;
mod error;
mod model;
pub mod throttle;

pub use cache::{CacheOptions, CacheStats, CachingConnector, ObjectCache};
pub use client::{
    API_VERSION, ClientOptions, HttpConnector, HttpKeyVault, MAX_RESPONSE_BYTES, RequestObserver,
    status_label,
};
pub use direct::DirectOptions;
pub use error::KvError;
pub use model::{
    CertificateBundle, Jwk, KeyBundle, ObjectItem, ObjectKind, SecretBundle, SecretBytes,
    VersionItem, last_segment,
};
/// Response bodies → the types above, as [`HttpKeyVault`] decodes them (public for the fuzz
/// targets in `crates/fuzz`).
#[doc(hidden)]
pub use model::{
    decode_certificate, decode_error, decode_inner_code, decode_key, decode_objects_page,
    decode_secret, decode_versions_page,
};
pub use throttle::PacingOptions;

use std::sync::Arc;

use entra_auth::{BoxFuture, TokenCredential};

/// The Key Vault operations the provider needs, for one vault and one credential.
pub trait KeyVault: Send + Sync {
    /// `GET /secrets/{name}/{version}`; `version` empty = latest.
    fn get_secret<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SecretBundle, KvError>>;

    /// `GET /keys/{name}/{version}`.
    fn get_key<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<KeyBundle, KvError>>;

    /// `GET /certificates/{name}/{version}`.
    fn get_certificate<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<CertificateBundle, KvError>>;

    /// `GET /{kind}/{name}/versions`, all pages.
    fn list_versions<'a>(
        &'a self,
        kind: ObjectKind,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionItem>, KvError>>;

    /// `GET /{kind}?maxresults=25`, all pages: every object of the kind with its attributes and
    /// tags (Key Vault's `list` permission). Implementations that cannot list (test fakes)
    /// answer an error by default.
    fn list_objects<'a>(
        &'a self,
        kind: ObjectKind,
    ) -> BoxFuture<'a, Result<Vec<ObjectItem>, KvError>> {
        let _ = kind;
        Box::pin(async {
            Err(KvError::BadResponse(
                "this Key Vault client cannot list objects".into(),
            ))
        })
    }

    /// The vault's base URL (`https://<vault>.<suffix>/`).
    fn vault_url(&self) -> &str;
}

/// Makes a [`KeyVault`] for a vault URL and a credential.
pub trait Connector: Send + Sync {
    /// Connects (lazily: nothing is sent until the first call).
    fn connect(
        &self,
        vault_url: &url::Url,
        credential: Arc<dyn TokenCredential>,
    ) -> Arc<dyn KeyVault>;

    /// Tells the connector the vault's Key Vault resource as the cloud configuration names it
    /// (`https://vault.azure.net`; the Azure Stack environment file's `keyVaultEndpoint`), so
    /// that its clients may ask for a token for it at once instead of first sending an
    /// unauthenticated request to learn it from the 401 challenge. A connector that does not
    /// share what it learns about a vault ignores it (the default).
    fn configure_resource(&self, vault_url: &url::Url, resource: &str) {
        let _ = (vault_url, resource);
    }
}
