//! The HTTP implementation of [`KeyVault`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use entra_auth::http::{BodyError, CappedBody, read_body};
use entra_auth::retry::{is_retryable_status, retry_after};
use entra_auth::{AccessToken, BoxFuture, Challenge, RetryPolicy, TokenCredential};
use tokio::sync::Mutex;
use url::Url;

use crate::direct::{Deadline, DirectOptions, Route};
use crate::model::{
    CertificateBundle, KeyBundle, ObjectItem, ObjectKind, SecretBundle, VersionItem,
    decode_certificate, decode_error, decode_inner_code, decode_key, decode_objects_page,
    decode_secret, decode_versions_page,
};
use crate::throttle::{PacingOptions, VaultRegistry, VaultShared};
use crate::{Connector, KeyVault, KvError};

/// The REST API version (as the upstream provider's SDK modules).
pub const API_VERSION: &str = "7.4";
/// Upper bound on `nextLink` pages followed for one listing.
const MAX_PAGES: usize = 100;
/// Items asked per page of a vault listing: Key Vault's largest page (1-25).
const LIST_PAGE_SIZE: &str = "25";
/// Upper bound on pages of a vault listing (400 × 25 = 10,000 objects).
const MAX_LIST_PAGES: usize = 400;
/// Largest 200 body read: a secret value is at most 25 KiB, and its JSON (or a certificate with
/// its chain, or a page of versions) stays well below this. A longer body is a bad response, read
/// no further than the cap.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest error body read (only its code and message are used; past this, they are dropped).
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// A token is refreshed this long before it expires.
const TOKEN_SKEW: Duration = Duration::from_secs(120);

/// Client behaviour.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Timeout of one HTTP attempt.
    pub call_timeout: Duration,
    /// Retries on 408/429/5xx and transport errors.
    pub retry: RetryPolicy,
    /// Check that the challenge resource is a parent domain of the vault host (default true).
    pub verify_challenge_resource: bool,
    /// Per-vault pacing and the shared `Retry-After` gate ([`PacingOptions::off`] = upstream's
    /// per-request retries only).
    pub pacing: PacingOptions,
    /// With pacing on, how long one request keeps waiting out `429`s (at the shared gate) before
    /// it fails; such waits do not use up `retry`.
    pub throttle_budget: Duration,
    /// Remember each vault's challenge scope across the connector's clients, so that only the
    /// first client of a vault sends the unauthenticated probe, and none does when the cloud
    /// configuration names the resource ([`Connector::configure_resource`]) (default true;
    /// false = a probe per client, as upstream's per-mount clients).
    pub share_challenge_scope: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            verify_challenge_resource: true,
            pacing: PacingOptions::default(),
            throttle_budget: Duration::from_secs(60),
            share_challenge_scope: true,
        }
    }
}

/// Told about every Key Vault HTTP exchange and every wait at a vault's pacer; the provider turns
/// these into Prometheus series. Labels are bounded: an operation name and a status label.
pub trait RequestObserver: Send + Sync {
    /// One HTTP attempt ended: `operation` is `get_secret`, `get_key`, `get_certificate`,
    /// `list_versions` or `list_objects`; `status` is [`status_label`] of the answer, or `timeout` / `transport`.
    fn response(&self, operation: &'static str, status: &'static str);
    /// A request waited this long for its vault's pacer or gate.
    fn throttle_wait(&self, waited: Duration);
}

/// A bounded label for an HTTP status.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if (400..500).contains(&s) => "4xx",
        s if (500..600).contains(&s) => "5xx",
        _ => "other",
    }
}

/// Connects [`HttpKeyVault`]s sharing one HTTP client and, per vault, one pacer and the
/// challenge scope.
#[derive(Clone)]
pub struct HttpConnector {
    http: reqwest::Client,
    options: ClientOptions,
    vaults: Arc<VaultRegistry>,
    observer: Option<Arc<dyn RequestObserver>>,
    direct: Option<DirectOptions>,
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpConnector {
    /// A connector over `http` (see [`entra_auth::build_client`]).
    pub fn new(http: reqwest::Client, options: ClientOptions) -> Self {
        Self {
            http,
            options,
            vaults: Arc::default(),
            observer: None,
            direct: None,
        }
    }

    /// Gives each vault an HTTP/2 connection of its own, opened while its first token is fetched
    /// (see [`DirectOptions`]); `None` leaves every request to the reqwest client.
    pub fn with_direct(mut self, direct: Option<DirectOptions>) -> Self {
        self.direct = direct;
        self
    }

    /// Reports every exchange and pacer wait to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

impl Connector for HttpConnector {
    /// With `share_challenge_scope`, the vault's clients ask for a token for
    /// `<resource>/.default` before their first request (no unauthenticated probe). Should the
    /// vault still answer 401 with a challenge naming another resource, the challenge wins as
    /// before: it is verified, a token for its scope fetched and the request sent again.
    fn configure_resource(&self, vault_url: &Url, resource: &str) {
        let resource = resource.trim_end_matches('/');
        if !self.options.share_challenge_scope || resource.is_empty() {
            return;
        }
        self.vaults
            .get(&vault_key(vault_url), self.options.pacing)
            .set_scope_if_unknown(&format!("{resource}/.default"));
    }

    fn connect(&self, vault_url: &Url, credential: Arc<dyn TokenCredential>) -> Arc<dyn KeyVault> {
        let mut kv = HttpKeyVault::new(
            self.http.clone(),
            vault_url.clone(),
            credential,
            self.options,
        );
        kv.shared = self.vaults.get(&kv.base_str, self.options.pacing);
        kv.observer.clone_from(&self.observer);
        kv.direct.clone_from(&self.direct);
        Arc::new(kv)
    }
}

/// One vault, one credential.
pub struct HttpKeyVault {
    http: reqwest::Client,
    base: Url,
    base_str: String,
    credential: Arc<dyn TokenCredential>,
    options: ClientOptions,
    /// Scope from the last challenge and the token for it.
    auth: Mutex<Option<(String, AccessToken)>>,
    /// Held by the one request that answers the challenge while no token is cached, so that
    /// concurrent first requests wait for its token instead of each fetching their own.
    gate: Mutex<()>,
    /// Pacer and challenge scope of the vault, shared with the connector's other clients.
    shared: Arc<VaultShared>,
    observer: Option<Arc<dyn RequestObserver>>,
    direct: Option<DirectOptions>,
}

/// Why an attempt got no answer.
enum SendError {
    Timeout,
    Transport(String),
}

/// Why a request over a vault's own connection got no answer.
enum H2Error {
    /// The connection was closed before the request went out: another connection may take it.
    Closed,
    Send(SendError),
}

impl std::fmt::Debug for HttpKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeyVault")
            .field("vault", &self.base_str)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl HttpKeyVault {
    /// A client for the vault at `base` (`https://<vault>.<suffix>/`).
    pub fn new(
        http: reqwest::Client,
        mut base: Url,
        credential: Arc<dyn TokenCredential>,
        options: ClientOptions,
    ) -> Self {
        with_trailing_slash(&mut base);
        let base_str = base.to_string();
        Self {
            http,
            base,
            base_str,
            credential,
            auth: Mutex::new(None),
            gate: Mutex::new(()),
            shared: Arc::new(VaultShared::new(options.pacing)),
            observer: None,
            direct: None,
            options,
        }
    }

    fn object_url(&self, kind: ObjectKind, name: &str, tail: &str) -> Result<Url, KvError> {
        let mut url = self.base.clone();
        {
            let mut seg = url
                .path_segments_mut()
                .map_err(|()| KvError::BadResponse("vault URL cannot be a base".into()))?;
            seg.pop_if_empty()
                .push(kind.segment())
                .push(name)
                .push(tail);
        }
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// GETs `url` and every page its `nextLink`s name (only on the vault's own origin), at most
    /// `max_pages`, decoding each with `decode`.
    async fn get_pages<T>(
        &self,
        operation: &'static str,
        mut url: Url,
        max_pages: usize,
        what: &str,
        decode: impl Fn(&[u8]) -> Result<(Vec<T>, Option<String>), KvError>,
    ) -> Result<Vec<T>, KvError> {
        let mut out = Vec::new();
        for _ in 0..max_pages {
            let (items, next_link) = decode(&self.get(operation, &url).await?)?;
            out.extend(items);
            let Some(link) = next_link else {
                return Ok(out);
            };
            let next =
                Url::parse(&link).map_err(|e| KvError::BadResponse(format!("nextLink: {e}")))?;
            if !self.same_origin(&next) {
                return Err(KvError::BadResponse(
                    "nextLink points outside the vault".into(),
                ));
            }
            url = next;
        }
        Err(KvError::BadResponse(format!(
            "more than {max_pages} pages of {what}"
        )))
    }

    async fn cached_token(&self) -> Option<String> {
        let guard = self.auth.lock().await;
        guard.as_ref().and_then(|(_, t)| {
            (t.expires_on > SystemTime::now() + TOKEN_SKEW).then(|| t.token.expose().to_owned())
        })
    }

    async fn answer_challenge(&self, resp: &reqwest::Response) -> Result<String, KvError> {
        let header = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let challenge = Challenge::parse(header)?;
        if self.options.verify_challenge_resource {
            challenge.verify(self.base.host_str().unwrap_or(""))?;
        }
        let scope = challenge.scope();
        if self.options.share_challenge_scope {
            self.shared.set_scope(&scope);
        }
        self.fetch_token(scope).await
    }

    async fn fetch_token(&self, scope: String) -> Result<String, KvError> {
        let token = self.credential.get_token(&scope).await?;
        let bearer = token.token.expose().to_owned();
        *self.auth.lock().await = Some((scope, token));
        Ok(bearer)
    }

    fn observe(&self, operation: &'static str, status: &'static str) {
        if let Some(o) = &self.observer {
            o.response(operation, status);
        }
    }

    /// GET with challenge handling, pacing, timeouts and retries; returns the 200 body.
    async fn get(&self, operation: &'static str, url: &Url) -> Result<CappedBody, KvError> {
        let mut bearer = self.cached_token().await;
        let mut gate = None;
        if bearer.is_none() {
            let held = self.gate.lock().await;
            bearer = self.cached_token().await;
            if bearer.is_none() {
                if let Some(direct) = &self.direct {
                    // The vault's connection opens while the token is fetched.
                    self.shared.conn.warm(direct, &self.base);
                }
                match self.shared.scope() {
                    // The vault's scope is known from an earlier client: no unauthenticated probe.
                    Some(scope) => bearer = Some(self.fetch_token(scope).await?),
                    // Hold the gate over the probe, so concurrent first requests share its token.
                    None => gate = Some(held),
                }
            }
        }
        let started = tokio::time::Instant::now();
        let mut challenged = false;
        let mut attempt = 0u32;
        loop {
            if let Some(p) = &self.shared.pacer {
                let waited = p.acquire().await;
                if !waited.is_zero()
                    && let Some(o) = &self.observer
                {
                    o.throttle_wait(waited);
                }
            }
            let (retryable, server_delay) = match self.send(url, bearer.as_deref()).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.observe(operation, status_label(status));
                    if let Some(p) = &self.shared.pacer {
                        if status == 429 {
                            let delay = retry_after(resp.headers());
                            p.throttled(delay);
                            let wait = delay.unwrap_or(Duration::ZERO);
                            if started.elapsed().saturating_add(wait)
                                <= self.options.throttle_budget
                            {
                                tracing::debug!(vault = %self.base_str, delay_ms = wait.as_millis() as u64, "Key Vault throttled; waiting at the vault's gate");
                                continue;
                            }
                        } else {
                            p.succeeded();
                        }
                    }
                    match status {
                        200 => {
                            drop(gate);
                            return read_body(resp, MAX_RESPONSE_BYTES).await.map_err(
                                |e| match e {
                                    BodyError::TooLarge { .. } => KvError::BadResponse(format!(
                                        "{e} (a Key Vault object's answer is far smaller)"
                                    )),
                                    BodyError::Transport(reason) => KvError::Transport(reason),
                                },
                            );
                        }
                        401 if !challenged => {
                            challenged = true;
                            bearer = Some(self.answer_challenge(&resp).await?);
                            gate = None;
                            continue;
                        }
                        s if is_retryable_status(s) => {
                            let delay = retry_after(resp.headers());
                            let body = error_body(resp).await;
                            (Err((s, body.to_vec(), delay)), delay)
                        }
                        s => {
                            let body = error_body(resp).await;
                            let (mut code, message) = decode_error(&body);
                            // A disabled object is a 403 too; its inner code tells it from a
                            // refused identity.
                            if s == 403
                                && let Some(inner) = decode_inner_code(&body)
                                && inner.ends_with("Disabled")
                            {
                                code = inner;
                            }
                            return Err(match s {
                                404 => KvError::NotFound { code, message },
                                403 => KvError::Forbidden { code, message },
                                401 => KvError::Unauthorized { code, message },
                                _ => KvError::Status {
                                    status: s,
                                    code,
                                    message,
                                },
                            });
                        }
                    }
                }
                Err(SendError::Timeout) => {
                    self.observe(operation, "timeout");
                    (Ok(KvError::Timeout(self.options.call_timeout)), None)
                }
                Err(SendError::Transport(reason)) => {
                    self.observe(operation, "transport");
                    (Ok(KvError::Transport(reason)), None)
                }
            };
            attempt += 1;
            match self.options.retry.delay(attempt, server_delay) {
                Some(d) => {
                    tracing::debug!(vault = %self.base_str, attempt, delay_ms = d.as_millis() as u64, "retrying Key Vault request");
                    tokio::time::sleep(d).await;
                }
                None => {
                    return Err(match retryable {
                        Ok(e) => e,
                        Err((429, _, delay)) => KvError::Throttled { retry_after: delay },
                        Err((s, body, _)) => {
                            let (code, message) = decode_error(&body);
                            KvError::Status {
                                status: s,
                                code,
                                message,
                            }
                        }
                    });
                }
            }
        }
    }
}

impl HttpKeyVault {
    /// One attempt: over the vault's own HTTP/2 connection when there is one, else through
    /// reqwest. Either way the call timeout covers connecting, the answer and its body.
    async fn send(&self, url: &Url, bearer: Option<&str>) -> Result<reqwest::Response, SendError> {
        if let Some(direct) = &self.direct {
            let deadline = tokio::time::Instant::now() + self.options.call_timeout;
            // A connection that turns out closed before the request went out (the vault's
            // GOAWAY, an idle close) is replaced at once: the request was not sent.
            let mut closed = 0;
            while closed < 2 {
                let route = tokio::time::timeout_at(
                    deadline,
                    self.shared.conn.connection(direct, &self.base),
                )
                .await
                .map_err(|_| SendError::Timeout)?
                .map_err(|e| SendError::Transport(e.0.to_string()))?;
                let Route::H2(send, in_flight) = route else {
                    break;
                };
                match send_h2(send, in_flight, direct, url, bearer, deadline).await {
                    Err(H2Error::Closed) => closed += 1,
                    Err(H2Error::Send(e)) => return Err(e),
                    Ok(resp) => return Ok(resp),
                }
            }
            if closed == 2 {
                return Err(SendError::Transport(
                    "request failed: the vault closed two connections before the request went out"
                        .into(),
                ));
            }
        }
        let mut req = self
            .http
            .get(url.clone())
            .timeout(self.options.call_timeout);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send().await.map_err(|e| {
            if e.is_timeout() {
                SendError::Timeout
            } else {
                SendError::Transport(transport_reason(&e))
            }
        })
    }
}

/// A GET over a vault's own HTTP/2 connection, its answer as a reqwest response (the body read
/// by the same capped reader, failing once `deadline` has passed).
async fn send_h2(
    mut send: hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    in_flight: crate::direct::InFlight,
    direct: &DirectOptions,
    url: &Url,
    bearer: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<reqwest::Response, H2Error> {
    let mut req = http::Request::get(url.as_str())
        .header(http::header::USER_AGENT, direct.user_agent().clone())
        .header(http::header::ACCEPT, "*/*");
    if let Some(t) = bearer {
        let value = zeroize::Zeroizing::new(format!("Bearer {t}"));
        let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
            H2Error::Send(SendError::Transport(
                "the token is not a valid header value".into(),
            ))
        })?;
        value.set_sensitive(true);
        req = req.header(http::header::AUTHORIZATION, value);
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| H2Error::Send(SendError::Transport(format!("request failed: {e}"))))?;
    if tokio::time::timeout_at(deadline, send.ready())
        .await
        .map_err(|_| H2Error::Send(SendError::Timeout))?
        .is_err()
    {
        return Err(H2Error::Closed);
    }
    let answer = tokio::time::timeout_at(deadline, send.send_request(req))
        .await
        .map_err(|_| H2Error::Send(SendError::Timeout))?
        .map_err(|e| H2Error::Send(SendError::Transport(hyper_reason(&e))))?;
    let (parts, body) = answer.into_parts();
    let body = reqwest::Body::wrap(Deadline::new(body, deadline, in_flight));
    Ok(reqwest::Response::from(http::Response::from_parts(
        parts, body,
    )))
}

/// A hyper error's text with its deepest cause (no URL in either).
fn hyper_reason(e: &hyper::Error) -> String {
    match deepest_cause(e) {
        Some(d) => format!("request failed: {e}: {d}"),
        None => format!("request failed: {e}"),
    }
}

/// The text of the innermost cause under `e`, if it has one.
fn deepest_cause(e: &dyn std::error::Error) -> Option<String> {
    let mut src = e.source();
    let mut deepest = None;
    while let Some(s) = src {
        deepest = Some(s.to_string());
        src = s.source();
    }
    deepest
}

fn with_trailing_slash(url: &mut Url) {
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
}

/// The key of a vault's shared state: its base URL as [`HttpKeyVault`] spells it.
fn vault_key(vault_url: &Url) -> String {
    let mut base = vault_url.clone();
    with_trailing_slash(&mut base);
    base.to_string()
}

/// An error answer's body, up to [`MAX_ERROR_BYTES`]; empty when longer or unreadable (the
/// status still classifies the error).
async fn error_body(resp: reqwest::Response) -> Vec<u8> {
    read_body(resp, MAX_ERROR_BYTES)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

fn transport_reason(e: &reqwest::Error) -> String {
    let deepest = deepest_cause(e);
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match deepest {
        Some(d) => format!("{kind}: {d}"),
        None => kind.to_owned(),
    }
}

impl KeyVault for HttpKeyVault {
    fn get_secret<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SecretBundle, KvError>> {
        Box::pin(async move {
            let url = self.object_url(ObjectKind::Secret, name, version)?;
            let body = self.get("get_secret", &url).await?;
            decode_secret(&body)
        })
    }

    fn get_key<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<KeyBundle, KvError>> {
        Box::pin(async move {
            let url = self.object_url(ObjectKind::Key, name, version)?;
            decode_key(&self.get("get_key", &url).await?)
        })
    }

    fn get_certificate<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<CertificateBundle, KvError>> {
        Box::pin(async move {
            let url = self.object_url(ObjectKind::Certificate, name, version)?;
            decode_certificate(&self.get("get_certificate", &url).await?)
        })
    }

    fn list_versions<'a>(
        &'a self,
        kind: ObjectKind,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionItem>, KvError>> {
        Box::pin(async move {
            let url = self.object_url(kind, name, "versions")?;
            self.get_pages("list_versions", url, MAX_PAGES, "versions", |body| {
                decode_versions_page(kind, body)
            })
            .await
        })
    }

    fn list_objects<'a>(
        &'a self,
        kind: ObjectKind,
    ) -> BoxFuture<'a, Result<Vec<ObjectItem>, KvError>> {
        Box::pin(async move {
            let mut url = self.base.clone();
            {
                let mut seg = url
                    .path_segments_mut()
                    .map_err(|()| KvError::BadResponse("vault URL cannot be a base".into()))?;
                seg.pop_if_empty().push(kind.segment());
            }
            url.query_pairs_mut()
                .append_pair("api-version", API_VERSION)
                .append_pair("maxresults", LIST_PAGE_SIZE);
            self.get_pages(
                "list_objects",
                url,
                MAX_LIST_PAGES,
                kind.segment(),
                |body| decode_objects_page(kind, body),
            )
            .await
        })
    }

    fn vault_url(&self) -> &str {
        &self.base_str
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use entra_auth::{AuthError, CredentialIdentity};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Debug)]
    struct NoCred;
    impl TokenCredential for NoCred {
        fn get_token<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
            Box::pin(async { Err(AuthError::NoPodInfo) })
        }
        fn identity(&self) -> CredentialIdentity {
            CredentialIdentity {
                kind: "test",
                authority: String::new(),
                tenant: None,
                client_id: None,
                pod: None,
            }
        }
    }

    /// A loopback "vault" answering every request 200 with `head` and then 16 KiB chunks until
    /// the client hangs up (chunked when `head` says so); counts the body bytes it wrote.
    async fn endless(status: u16, head: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let sent = counter.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let start = format!("HTTP/1.1 {status} X\r\n{head}\r\n");
                    if conn.write_all(start.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunked = head.contains("chunked");
                    let mut frame = Vec::new();
                    if chunked {
                        frame.extend_from_slice(b"4000\r\n");
                    }
                    frame.extend_from_slice(&[b'"'; 16 * 1024]);
                    if chunked {
                        frame.extend_from_slice(b"\r\n");
                    }
                    while conn.write_all(&frame).await.is_ok() {
                        sent.fetch_add(16 * 1024, Ordering::Relaxed);
                    }
                });
            }
        });
        (addr, sent)
    }

    fn vault(addr: SocketAddr) -> HttpKeyVault {
        let http = entra_auth::build_client(&entra_auth::HttpOptions {
            system_roots: false,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let base = Url::parse(&format!("http://{addr}/")).unwrap_or_else(|e| panic!("{e}"));
        HttpKeyVault::new(
            http,
            base,
            Arc::new(NoCred),
            ClientOptions {
                call_timeout: Duration::from_secs(5),
                retry: RetryPolicy::none(),
                ..Default::default()
            },
        )
    }

    /// Key Vault answers used to be read whole with `bytes()`: an endless body grew the
    /// provider's memory until the call timed out. Now reading stops at 1 MiB with a bad
    /// response, for a chunked body and for one announcing a huge `Content-Length`.
    #[tokio::test]
    async fn an_endless_answer_stops_at_the_cap() {
        for head in [
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n",
            "content-type: application/json\r\ncontent-length: 1073741824\r\n",
        ] {
            let (addr, sent) = endless(200, head).await;
            let kv = vault(addr);
            let e = tokio::time::timeout(Duration::from_secs(20), kv.get_secret("s", ""))
                .await
                .unwrap_or_else(|_| panic!("reading an endless answer did not stop"))
                .err();
            match &e {
                Some(KvError::BadResponse(m)) => assert_eq!(
                    m,
                    "the response body is over the cap of 1048576 bytes (a Key Vault object's answer is far smaller)"
                ),
                other => panic!("{head}: {other:?}"),
            }
            assert_eq!(e.map(|e| e.kind()), Some("bad_response"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent = sent.load(Ordering::Relaxed);
            assert!(sent < 64 * 1024 * 1024, "{sent} bytes sent");
        }
    }

    /// An endless error body is cut at 64 KiB and dropped: the status still classifies.
    #[tokio::test]
    async fn an_endless_error_body_keeps_the_status() {
        let (addr, _) = endless(
            404,
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n",
        )
        .await;
        let e = tokio::time::timeout(Duration::from_secs(20), vault(addr).get_key("k", ""))
            .await
            .unwrap_or_else(|_| panic!("reading an endless error body did not stop"))
            .err();
        assert!(
            matches!(&e, Some(KvError::NotFound { code, message }) if code.is_empty() && message.is_empty()),
            "{e:?}"
        );
    }
}
