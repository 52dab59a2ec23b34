//! Microsoft Entra ID credential sources for the Azure Key Vault provider.
//!
//! - [`ClientSecretCredential`]: service principal with `clientid`/`clientsecret` from the mount's
//!   `nodePublishSecretRef`.
//! - [`ClientAssertionCredential`]: workload identity, the kubelet-minted service-account token for
//!   audience `api://AzureADTokenExchange` as the client assertion.
//! - [`ManagedIdentityCredential`]: VM managed identity via IMDS (system- or user-assigned),
//!   honouring `AZURE_POD_IDENTITY_AUTHORITY_HOST` like the Azure SDKs.
//! - [`PodIdentityCredential`]: aad-pod-identity NMI (`localhost:2579`, overridable for tests).
//! - [`IdentityBindingCredential`]: AKS identity binding, the service-account token for audience
//!   `api://AKSIdentityBinding` sent through the cluster's [`TokenProxy`] (module
//!   [`token_proxy`]: proxy URL, SNI name, CA file).
//!
//! All of them implement [`TokenCredential`]; [`Cloud`] resolves the four named clouds and
//! `AzureStackCloud` (from an env file passed per mount, no process-wide state); [`Challenge`]
//! handles the Key Vault 401 bearer challenge; [`http::build_client`] is the TLS setup (system
//! roots + `SSL_CERT_FILE`/`SSL_CERT_DIR`).
//!
//! Deviations from upstream (azidentity/MSAL), on purpose:
//! - No MSAL instance discovery / OpenID configuration round trips: the token is requested
//!   directly from `{authority}{tenant}/oauth2/v2.0/token`, the endpoint MSAL would resolve to for
//!   the public and sovereign clouds. AD FS authorities (`tenantID: adfs`) are not supported.
//! - Token endpoint retries: at most 3 retries with jitter (IMDS: on 404/410/429/5xx), so a mount
//!   stays within kubelet's deadline; azidentity's IMDS policy allows 5 retries up to a minute.
//! - NMI has a test override `AZURE_NMI_ENDPOINT` (upstream hard-codes `localhost:2579`).

pub mod assertion;
pub mod challenge;
pub mod cloud;
pub mod credential;
pub mod http;
pub mod retry;
pub mod token_cache;
pub mod token_proxy;

pub use assertion::{AssertionVerifier, VerifiedSubject, VerifyError};
pub use challenge::{Challenge, ChallengeError};
pub use cloud::{Cloud, CloudError};
pub use credential::{
    AccessToken, AuthError, BoxFuture, ClientAssertionCredential, ClientSecretCredential,
    CredentialIdentity, ManagedIdentityCredential, NodeEndpoints, PodIdentityCredential,
    TokenCredential,
};
pub use http::{HttpError, HttpOptions, build_client, build_client_and_tls};
pub use retry::RetryPolicy;
pub use sensitive::SecretString;
pub use token_cache::{CachedCredential, PrincipalKey, TokenCache, TokenCacheStats};
pub use token_proxy::{
    IDENTITY_BINDING_AUDIENCE, IdentityBindingCredential, TokenProxy, TokenProxyConfig,
    TokenProxyError,
};
