//! Credential sources behind one trait. Each `Mount` builds the credential its parameters ask for;
//! a caching layer (issue 7) can wrap any [`TokenCredential`] without the callers changing, keyed
//! by [`TokenCredential::identity`].

use std::fmt;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use url::Url;

use crate::cloud::Cloud;
use crate::http::{BodyError, CappedBody, MAX_TOKEN_RESPONSE, read_body};
use crate::retry::{RetryPolicy, is_retryable_status, retry_after};
use sensitive::SecretString;

/// A boxed, sendable future (the trait must stay object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An access token and its expiry.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When it stops being valid.
    pub expires_on: SystemTime,
}

/// Why no token could be obtained. Messages never carry secrets or tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The identity provider refused the credential (wrong secret, no federated credential match,
    /// wrong audience, unknown client…).
    #[error("authentication failed ({endpoint}): {reason}")]
    Rejected {
        /// Which endpoint answered (no query string).
        endpoint: String,
        /// Error code and description from the identity provider.
        reason: String,
    },
    /// IMDS: the user-assigned identity is not on this VM.
    #[error("the requested identity isn't assigned to this resource (client_id {client_id})")]
    IdentityNotAssigned {
        /// The client id asked for.
        client_id: String,
    },
    /// NMI answered with a non-200 status.
    #[error("nmi response failed with status code: {status}, response body: {body}")]
    NmiStatus {
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// NMI answered 200 without a token or client id.
    #[error("nmi did not return expected values in response: token and clientid")]
    NmiIncomplete,
    /// Pod identity needs the pod's name and namespace.
    #[error(
        "pod information is not available. deploy a CSIDriver object to set podInfoOnMount: true"
    )]
    NoPodInfo,
    /// The endpoint could not be reached or kept failing (after retries).
    #[error("token endpoint {endpoint} unavailable: {reason}")]
    Unavailable {
        /// Which endpoint.
        endpoint: String,
        /// Transport error or last status.
        reason: String,
    },
    /// Identity binding: the cluster's token proxy cannot be used (URL, SNI name, CA file).
    #[error("proxy transport not available: {0}")]
    TokenProxy(#[source] crate::token_proxy::TokenProxyError),
    /// The endpoint answered 200 with something that is not a token response.
    #[error("token endpoint {endpoint} returned an unexpected response: {reason}")]
    BadResponse {
        /// Which endpoint.
        endpoint: String,
        /// Parser message.
        reason: String,
    },
}

impl AuthError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rejected { .. } | Self::IdentityNotAssigned { .. } | Self::NmiStatus { .. } => {
                "auth_failed"
            }
            Self::NmiIncomplete | Self::BadResponse { .. } => "auth_bad_response",
            Self::NoPodInfo => "auth_config",
            Self::TokenProxy(e) => match e {
                crate::token_proxy::TokenProxyError::ParseUrl { .. }
                | crate::token_proxy::TokenProxyError::BadUrl { .. }
                | crate::token_proxy::TokenProxyError::BadSni(_) => "auth_config",
                _ => "auth_unavailable",
            },
            Self::Unavailable { .. } => "auth_unavailable",
        }
    }
}

/// What a credential is, without any secret: for logs and as a cache key component.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialIdentity {
    /// `service_principal`, `workload_identity`, `managed_identity`, `pod_identity`.
    pub kind: &'static str,
    /// Entra authority host the token comes from (or the IMDS/NMI base URL).
    pub authority: String,
    /// Tenant, where one applies.
    pub tenant: Option<String>,
    /// Client id, where one applies (`None` for a system-assigned identity).
    pub client_id: Option<String>,
    /// Pod `namespace/name` for pod identity.
    pub pod: Option<String>,
}

/// A source of access tokens.
pub trait TokenCredential: Send + Sync + fmt::Debug {
    /// A token for `scope` (e.g. `https://vault.azure.net/.default`).
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>>;

    /// Who this credential is.
    fn identity(&self) -> CredentialIdentity;
}

/// Where the node-local token endpoints live. Upstream: IMDS at `http://169.254.169.254` unless
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST` says otherwise (as the Azure SDKs do), NMI at
/// `http://localhost:2579`. Tests set both to loopback.
#[derive(Clone, Debug)]
pub struct NodeEndpoints {
    /// IMDS base URL (no path).
    pub imds: Url,
    /// NMI base URL (no path).
    pub nmi: Url,
}

/// The IMDS address on Azure VMs.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";
/// aad-pod-identity's NMI on every node.
pub const DEFAULT_NMI: &str = "http://localhost:2579";

impl NodeEndpoints {
    /// Defaults, with IMDS overridden by `AZURE_POD_IDENTITY_AUTHORITY_HOST` and NMI by
    /// `AZURE_NMI_ENDPOINT` (our test override; upstream has none) when set.
    pub fn from_env() -> Result<Self, url::ParseError> {
        let imds = std::env::var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_IMDS.to_owned());
        let nmi = std::env::var("AZURE_NMI_ENDPOINT")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NMI.to_owned());
        Ok(Self {
            imds: Url::parse(imds.trim())?,
            nmi: Url::parse(nmi.trim())?,
        })
    }
}

impl Default for NodeEndpoints {
    fn default() -> Self {
        #[allow(clippy::unwrap_used)] // constants
        Self {
            imds: Url::parse(DEFAULT_IMDS).unwrap(),
            nmi: Url::parse(DEFAULT_NMI).unwrap(),
        }
    }
}

// === shared plumbing ===

fn endpoint_name(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Number-or-string (real IMDS sends strings, some emulators numbers).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    N(f64),
    S(String),
}

impl NumOrStr {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Self::N(n) if *n >= 0.0 => Some(*n as u64),
            Self::N(_) => None,
            Self::S(s) => s.trim().parse::<u64>().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<NumOrStr>,
    #[serde(default)]
    expires_on: Option<NumOrStr>,
}

impl TokenResponse {
    fn into_token(self, endpoint: &str) -> Result<AccessToken, AuthError> {
        if self.access_token.is_empty() {
            return Err(AuthError::BadResponse {
                endpoint: endpoint.to_owned(),
                reason: "empty access_token".into(),
            });
        }
        let now = SystemTime::now();
        let expires_on = match (
            self.expires_on.as_ref().and_then(NumOrStr::as_u64),
            self.expires_in.as_ref().and_then(NumOrStr::as_u64),
        ) {
            (Some(on), _) => UNIX_EPOCH.checked_add(Duration::from_secs(on)),
            (None, Some(inn)) => now.checked_add(Duration::from_secs(inn)),
            (None, None) => None,
        }
        // Unknown expiry, or one past the clock's range (`SystemTime + Duration` panics there):
        // treat as already expired (never reused), as upstream's NMI path does.
        .unwrap_or(now);
        Ok(AccessToken {
            token: SecretString::new(self.access_token),
            expires_on,
        })
    }
}

/// An Entra ID token endpoint or IMDS response body → the token (as every credential here
/// decodes it). Public for the fuzz targets in `crates/fuzz`.
#[doc(hidden)]
pub fn decode_token_response(endpoint: &str, body: &[u8]) -> Result<AccessToken, AuthError> {
    let t: TokenResponse = serde_json::from_slice(body).map_err(|e| AuthError::BadResponse {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    t.into_token(endpoint)
}

#[derive(Deserialize, Default)]
struct EntraError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The reason text of a refused token request (`error: first line of error_description`, or
/// the status and the start of the body). Public for the fuzz targets in `crates/fuzz`.
#[doc(hidden)]
pub fn entra_reason(body: &[u8], status: u16) -> String {
    let e: EntraError = serde_json::from_slice(body).unwrap_or_default();
    // AADSTS descriptions end with trace/correlation ids on new lines; keep the first line.
    let desc = e
        .error_description
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    match (e.error.is_empty(), desc.is_empty()) {
        (false, false) => format!("{}: {}", e.error, truncate(&desc, 300)),
        (false, true) => e.error,
        _ => format!(
            "status {status}: {}",
            truncate(&String::from_utf8_lossy(body), 200)
        ),
    }
}

/// A response that came back (any status), its body read up to [`MAX_TOKEN_RESPONSE`].
struct Reply {
    status: u16,
    body: CappedBody,
}

/// Sends with bounded retries on transport errors and retryable statuses.
async fn send(
    policy: &RetryPolicy,
    endpoint: &str,
    retry_statuses: fn(u16) -> bool,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Reply, AuthError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (reason, server_delay) = match build().send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let delay = retry_after(resp.headers());
                if !retry_statuses(status) {
                    let body = read_body(resp, MAX_TOKEN_RESPONSE)
                        .await
                        .map_err(|e| match e {
                            BodyError::TooLarge { .. } => AuthError::BadResponse {
                                endpoint: endpoint.to_owned(),
                                reason: format!("status {status}: {e}"),
                            },
                            BodyError::Transport(reason) => AuthError::Unavailable {
                                endpoint: endpoint.to_owned(),
                                reason,
                            },
                        })?;
                    return Ok(Reply { status, body });
                }
                (format!("status {status}"), delay)
            }
            Err(e) => (transport_reason(&e), None),
        };
        match policy.delay(attempt, server_delay) {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                return Err(AuthError::Unavailable {
                    endpoint: endpoint.to_owned(),
                    reason,
                });
            }
        }
    }
}

/// A transport error without the URL (reqwest's Display includes the full URL with query).
pub(crate) fn transport_reason(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut deepest = None;
    while let Some(s) = src {
        deepest = Some(s.to_string());
        src = s.source();
    }
    match deepest {
        Some(d) => format!("{kind}: {d}"),
        None => kind.to_owned(),
    }
}

// === impl ClientSecretCredential ===

/// Service principal with a client secret (from the mount's `nodePublishSecretRef`).
pub struct ClientSecretCredential {
    http: reqwest::Client,
    token_url: Url,
    authority: String,
    tenant: String,
    client_id: String,
    client_secret: SecretString,
    retry: RetryPolicy,
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn token_url(cloud: &Cloud, tenant: &str) -> Result<Url, AuthError> {
    let base = &cloud.active_directory_endpoint;
    Url::parse(base)
        .and_then(|u| u.join(&format!("{tenant}/oauth2/v2.0/token")))
        .map_err(|e| AuthError::BadResponse {
            endpoint: base.clone(),
            reason: format!("invalid authority URL: {e}"),
        })
}

impl ClientSecretCredential {
    /// Builds the credential.
    pub fn new(
        http: reqwest::Client,
        cloud: &Cloud,
        tenant: &str,
        client_id: &str,
        client_secret: SecretString,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            http,
            token_url: token_url(cloud, tenant)?,
            authority: cloud.active_directory_endpoint.clone(),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            retry: RetryPolicy::default(),
        })
    }
}

async fn entra_token(
    http: &reqwest::Client,
    url: &Url,
    retry: &RetryPolicy,
    form: &[(&str, &str)],
) -> Result<AccessToken, AuthError> {
    let endpoint = endpoint_name(url);
    let reply = send(retry, &endpoint, is_retryable_status, || {
        http.post(url.clone()).form(form)
    })
    .await?;
    if reply.status != 200 {
        return Err(AuthError::Rejected {
            endpoint,
            reason: entra_reason(&reply.body, reply.status),
        });
    }
    decode_token_response(&endpoint, &reply.body)
}

/// [`entra_token`] to `url` (the token proxy), naming `shown` in errors and sending `host` as
/// the `Host` header.
pub(crate) async fn entra_token_to(
    http: &reqwest::Client,
    url: &Url,
    shown: &str,
    host: &str,
    retry: &RetryPolicy,
    form: &[(&str, &str)],
) -> Result<AccessToken, AuthError> {
    let endpoint = {
        let mut u = shown.split('?');
        u.next().unwrap_or_default().to_owned()
    };
    let reply = send(retry, &endpoint, is_retryable_status, || {
        let b = http.post(url.clone()).form(form);
        if host.is_empty() {
            b
        } else {
            b.header(reqwest::header::HOST, host)
        }
    })
    .await?;
    if reply.status != 200 {
        return Err(AuthError::Rejected {
            endpoint,
            reason: entra_reason(&reply.body, reply.status),
        });
    }
    decode_token_response(&endpoint, &reply.body)
}

impl TokenCredential for ClientSecretCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
                ("scope", scope),
            ];
            entra_token(&self.http, &self.token_url, &self.retry, &form).await
        })
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity {
            kind: "service_principal",
            authority: self.authority.clone(),
            tenant: Some(self.tenant.clone()),
            client_id: Some(self.client_id.clone()),
            pod: None,
        }
    }
}

// === impl ClientAssertionCredential ===

/// Workload identity: the pod's service-account token (audience `api://AzureADTokenExchange`,
/// minted by kubelet for this mount) is the client assertion.
pub struct ClientAssertionCredential {
    http: reqwest::Client,
    token_url: Url,
    authority: String,
    tenant: String,
    client_id: String,
    assertion: SecretString,
    retry: RetryPolicy,
}

impl fmt::Debug for ClientAssertionCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertionCredential")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientAssertionCredential {
    /// Builds the credential.
    pub fn new(
        http: reqwest::Client,
        cloud: &Cloud,
        tenant: &str,
        client_id: &str,
        assertion: SecretString,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            http,
            token_url: token_url(cloud, tenant)?,
            authority: cloud.active_directory_endpoint.clone(),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            assertion,
            retry: RetryPolicy::default(),
        })
    }
}

impl TokenCredential for ClientAssertionCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", self.assertion.expose()),
                ("scope", scope),
            ];
            entra_token(&self.http, &self.token_url, &self.retry, &form).await
        })
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity {
            kind: "workload_identity",
            authority: self.authority.clone(),
            tenant: Some(self.tenant.clone()),
            client_id: Some(self.client_id.clone()),
            pod: None,
        }
    }
}

// === impl ManagedIdentityCredential ===

/// VM managed identity through IMDS; `client_id` selects a user-assigned identity.
pub struct ManagedIdentityCredential {
    http: reqwest::Client,
    imds: Url,
    client_id: Option<String>,
    retry: RetryPolicy,
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityCredential")
            .field("imds", &self.imds.as_str())
            .field("client_id", &self.client_id)
            .finish()
    }
}

fn imds_retryable(status: u16) -> bool {
    matches!(status, 404 | 410 | 429 | 500..=508 | 510 | 511)
}

impl ManagedIdentityCredential {
    /// Builds the credential; `client_id` empty = system-assigned.
    pub fn new(http: reqwest::Client, endpoints: &NodeEndpoints, client_id: Option<&str>) -> Self {
        Self {
            http,
            imds: endpoints.imds.clone(),
            client_id: client_id.filter(|c| !c.is_empty()).map(str::to_owned),
            retry: RetryPolicy::default(),
        }
    }
}

impl TokenCredential for ManagedIdentityCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let mut url = self
                .imds
                .join("/metadata/identity/oauth2/token")
                .map_err(|e| AuthError::BadResponse {
                    endpoint: self.imds.to_string(),
                    reason: e.to_string(),
                })?;
            let resource = scope.strip_suffix("/.default").unwrap_or(scope);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("api-version", "2018-02-01")
                    .append_pair("resource", resource);
                if let Some(c) = &self.client_id {
                    q.append_pair("client_id", c);
                }
            }
            let endpoint = endpoint_name(&url);
            let reply = send(&self.retry, &endpoint, imds_retryable, || {
                self.http.get(url.clone()).header("Metadata", "true")
            })
            .await?;
            match reply.status {
                200 => {}
                400 if self.client_id.is_some() => {
                    return Err(AuthError::IdentityNotAssigned {
                        client_id: self.client_id.clone().unwrap_or_default(),
                    });
                }
                s => {
                    return Err(AuthError::Rejected {
                        endpoint,
                        reason: entra_reason(&reply.body, s),
                    });
                }
            }
            decode_token_response(&endpoint, &reply.body)
        })
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity {
            kind: "managed_identity",
            authority: self.imds.to_string(),
            tenant: None,
            client_id: self.client_id.clone(),
            pod: None,
        }
    }
}

// === impl PodIdentityCredential ===

/// aad-pod-identity: NMI on the node returns a token for the pod named in the headers. The
/// requested scope is ignored; the resource is the cloud's Key Vault endpoint, as upstream.
pub struct PodIdentityCredential {
    http: reqwest::Client,
    nmi: Url,
    resource: String,
    namespace: String,
    pod: String,
    retry: RetryPolicy,
}

impl fmt::Debug for PodIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIdentityCredential")
            .field("nmi", &self.nmi.as_str())
            .field("pod", &format_args!("{}/{}", self.namespace, self.pod))
            .finish()
    }
}

#[derive(Deserialize)]
struct NmiResponse {
    #[serde(default)]
    token: Option<TokenResponse>,
    #[serde(default)]
    clientid: String,
}

/// An NMI response body → the token; `NmiIncomplete` without a token or client id. Public for
/// the fuzz targets in `crates/fuzz`.
#[doc(hidden)]
pub fn decode_nmi_response(endpoint: &str, body: &[u8]) -> Result<AccessToken, AuthError> {
    let r: NmiResponse = serde_json::from_slice(body).map_err(|e| AuthError::BadResponse {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    match r.token {
        Some(t) if !t.access_token.is_empty() && !r.clientid.is_empty() => t.into_token(endpoint),
        _ => Err(AuthError::NmiIncomplete),
    }
}

impl PodIdentityCredential {
    /// Builds the credential.
    pub fn new(
        http: reqwest::Client,
        endpoints: &NodeEndpoints,
        cloud: &Cloud,
        namespace: &str,
        pod: &str,
    ) -> Result<Self, AuthError> {
        if namespace.is_empty() || pod.is_empty() {
            return Err(AuthError::NoPodInfo);
        }
        Ok(Self {
            http,
            nmi: endpoints.nmi.clone(),
            resource: cloud.key_vault_resource().to_owned(),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            retry: RetryPolicy::default(),
        })
    }
}

impl TokenCredential for PodIdentityCredential {
    fn get_token<'a>(&'a self, _scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let mut url = self
                .nmi
                .join("/host/token/")
                .map_err(|e| AuthError::BadResponse {
                    endpoint: self.nmi.to_string(),
                    reason: e.to_string(),
                })?;
            url.query_pairs_mut()
                .append_pair("resource", &self.resource);
            let endpoint = endpoint_name(&url);
            let reply = send(&self.retry, &endpoint, is_retryable_status, || {
                self.http
                    .get(url.clone())
                    .header("podns", &self.namespace)
                    .header("podname", &self.pod)
            })
            .await?;
            if reply.status != 200 {
                return Err(AuthError::NmiStatus {
                    status: reply.status,
                    body: truncate(&String::from_utf8_lossy(&reply.body), 300),
                });
            }
            decode_nmi_response(&endpoint, &reply.body)
        })
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity {
            kind: "pod_identity",
            authority: self.nmi.to_string(),
            tenant: None,
            client_id: None,
            pod: Some(format!("{}/{}", self.namespace, self.pod)),
        }
    }
}
