//! The listeners and request handling: Key Vault data plane + Entra ID (HTTPS), IMDS, NMI and the
//! admin API (plain HTTP, loopback).

use crate::admin::{FaultAction, FaultRule, Telemetry};
use crate::certs::{self, CT_PKCS12};
use crate::entra::{Directory, EntraError, Principal, Signer};
use crate::error::{KvError, ObjectKind};
use crate::keys::KeyMaterial;
use crate::store::{self, Attrs, Store, Vault};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

pub(crate) type Resp = Response<Full<Bytes>>;

/// Largest request body accepted (a PFX import with a long chain fits easily).
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Key Vault's limit on a secret value.
const MAX_SECRET_VALUE: usize = 25 * 1024;
/// API versions accepted on the data plane.
pub(crate) const API_VERSIONS: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
    "2026-04-01",
];
const LATEST_API_VERSION: &str = "2026-04-01";

/// Returned by a handler to make hyper close the connection without an answer (fault `Drop`).
#[derive(Debug)]
pub(crate) struct DropConnection;
impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for DropConnection {}

pub(crate) struct Shared {
    pub(crate) store: RwLock<Store>,
    pub(crate) state_path: Option<PathBuf>,
    pub(crate) dir: Directory,
    pub(crate) signer: Signer,
    pub(crate) telemetry: Telemetry,
    pub(crate) dns_suffix: String,
    /// `https://<ip>:<port>` (no trailing slash).
    pub(crate) authority: String,
    /// The challenge `resource`: `https://<suffix>[:<port>]`.
    pub(crate) resource: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) token_lifetime: Duration,
    pub(crate) admin_token: Zeroizing<String>,
    pub(crate) default_vault: Option<String>,
    pub(crate) tenants: Vec<String>,
}

// === listeners ===

pub(crate) fn spawn_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            // Small request/response exchanges: no Nagle delay (HTTP/2 clients felt it).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let shared = shared.clone();
            conns.spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { handle_https(shared, req).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

#[derive(Clone, Copy)]
pub(crate) enum PlainKind {
    Imds,
    Nmi,
    Admin,
}

pub(crate) fn spawn_plain(
    listener: TcpListener,
    kind: PlainKind,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            // Small request/response exchanges: no Nagle delay (HTTP/2 clients felt it).
            let _ = tcp.set_nodelay(true);
            let shared = shared.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, DropConnection>(match kind {
                            PlainKind::Imds => handle_imds(&shared, req).await,
                            PlainKind::Nmi => handle_nmi(&shared, req).await,
                            PlainKind::Admin => handle_admin(&shared, req).await,
                        })
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

// === helpers ===

fn json_response(status: u16, body: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

fn set_header(r: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn kv_response(status: u16, body: &Value, client_request_id: Option<&str>) -> Resp {
    let mut r = json_response(status, body);
    set_header(&mut r, "x-ms-request-id", &uuid::Uuid::new_v4().to_string());
    set_header(&mut r, "x-ms-keyvault-service-version", "1.9.0.0-emulator");
    set_header(&mut r, "x-ms-keyvault-region", "local");
    if let Some(id) = client_request_id {
        set_header(&mut r, "x-ms-client-request-id", id);
    }
    r
}

fn query_map(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn host_of(req: &Request<Incoming>) -> String {
    req.headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, KvError> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| {
            KvError::bad_parameter(format!(
                "The request body is too large or could not be read (limit {MAX_BODY} bytes)."
            ))
        })
}

fn parse_json(body: &[u8]) -> Result<Value, KvError> {
    if body.is_empty() {
        return Err(KvError::bad_parameter("The request body is missing."));
    }
    serde_json::from_slice(body)
        .map_err(|e| KvError::bad_parameter(format!("The request body is not valid JSON: {e}")))
}

fn parse_tags(v: &Value) -> Result<BTreeMap<String, String>, KvError> {
    match v.get("tags") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| KvError::bad_parameter(format!("tags.{k} must be a string")))
            })
            .collect(),
        Some(_) => Err(KvError::bad_parameter("tags must be an object of strings")),
    }
}

fn check_name(kind: ObjectKind, name: &str) -> Result<(), KvError> {
    if crate::seed::valid_object_name(name) {
        Ok(())
    } else {
        Err(KvError::bad_parameter(format!(
            "The {} name '{}' is invalid. It must be 1-127 characters long and contain only 0-9, a-z, A-Z, and -.",
            kind.noun(),
            name.chars().take(130).collect::<String>()
        )))
    }
}

// === HTTPS: routing ===

async fn handle_https(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_string();
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if matches!(
        first,
        "secrets"
            | "keys"
            | "certificates"
            | "deletedsecrets"
            | "deletedkeys"
            | "deletedcertificates"
    ) {
        data_plane(&shared, req).await
    } else {
        Ok(entra(&shared, req).await)
    }
}

/// One data-plane operation, decided from method and path before authentication.
#[derive(Debug, Clone)]
enum Route {
    ListSecrets,
    SetSecret(String),
    GetSecret(String, Option<String>),
    UpdateSecret(String, Option<String>),
    DeleteSecret(String),
    ListSecretVersions(String),
    ListKeys,
    CreateKey(String),
    ImportKey(String),
    GetKey(String, Option<String>),
    UpdateKey(String, Option<String>),
    DeleteKey(String),
    ListKeyVersions(String),
    ListCertificates,
    ImportCertificate(String),
    CreateCertificate(String),
    GetPending(String),
    GetPolicy(String),
    GetCertificate(String, Option<String>),
    UpdateCertificate(String, Option<String>),
    DeleteCertificate(String),
    ListCertificateVersions(String),
    GetDeleted(ObjectKind, String),
    Purge(ObjectKind, String),
    Recover(ObjectKind, String),
}

impl Route {
    fn op(&self) -> &'static str {
        match self {
            Route::ListSecrets => "ListSecrets",
            Route::SetSecret(_) => "SetSecret",
            Route::GetSecret(..) => "GetSecret",
            Route::UpdateSecret(..) => "UpdateSecret",
            Route::DeleteSecret(_) => "DeleteSecret",
            Route::ListSecretVersions(_) => "ListSecretVersions",
            Route::ListKeys => "ListKeys",
            Route::CreateKey(_) => "CreateKey",
            Route::ImportKey(_) => "ImportKey",
            Route::GetKey(..) => "GetKey",
            Route::UpdateKey(..) => "UpdateKey",
            Route::DeleteKey(_) => "DeleteKey",
            Route::ListKeyVersions(_) => "ListKeyVersions",
            Route::ListCertificates => "ListCertificates",
            Route::ImportCertificate(_) => "ImportCertificate",
            Route::CreateCertificate(_) => "CreateCertificate",
            Route::GetPending(_) => "GetCertificateOperation",
            Route::GetPolicy(_) => "GetCertificatePolicy",
            Route::GetCertificate(..) => "GetCertificate",
            Route::UpdateCertificate(..) => "UpdateCertificate",
            Route::DeleteCertificate(_) => "DeleteCertificate",
            Route::ListCertificateVersions(_) => "ListCertificateVersions",
            Route::GetDeleted(ObjectKind::Secret, _) => "GetDeletedSecret",
            Route::GetDeleted(ObjectKind::Key, _) => "GetDeletedKey",
            Route::GetDeleted(ObjectKind::Certificate, _) => "GetDeletedCertificate",
            Route::Purge(ObjectKind::Secret, _) => "PurgeDeletedSecret",
            Route::Purge(ObjectKind::Key, _) => "PurgeDeletedKey",
            Route::Purge(ObjectKind::Certificate, _) => "PurgeDeletedCertificate",
            Route::Recover(ObjectKind::Secret, _) => "RecoverDeletedSecret",
            Route::Recover(ObjectKind::Key, _) => "RecoverDeletedKey",
            Route::Recover(ObjectKind::Certificate, _) => "RecoverDeletedCertificate",
        }
    }

    fn parse(method: &Method, path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let s = |i: usize| segs.get(i).map(|x| x.to_string());
        let ver = |i: usize| segs.get(i).filter(|v| !v.is_empty()).map(|v| v.to_string());
        let m = method.as_str();
        Some(match (segs.as_slice(), m) {
            (["secrets"] | ["secrets", ""], "GET") => Route::ListSecrets,
            (["secrets", _], "PUT") => Route::SetSecret(s(1)?),
            (["secrets", _], "DELETE") => Route::DeleteSecret(s(1)?),
            (["secrets", _, "versions"], "GET") => Route::ListSecretVersions(s(1)?),
            (["secrets", _] | ["secrets", _, _], "GET") => Route::GetSecret(s(1)?, ver(2)),
            (["secrets", _] | ["secrets", _, _], "PATCH") => Route::UpdateSecret(s(1)?, ver(2)),
            (["keys"] | ["keys", ""], "GET") => Route::ListKeys,
            (["keys", _, "create"], "POST") => Route::CreateKey(s(1)?),
            (["keys", _], "PUT") => Route::ImportKey(s(1)?),
            (["keys", _], "DELETE") => Route::DeleteKey(s(1)?),
            (["keys", _, "versions"], "GET") => Route::ListKeyVersions(s(1)?),
            (["keys", _] | ["keys", _, _], "GET") => Route::GetKey(s(1)?, ver(2)),
            (["keys", _] | ["keys", _, _], "PATCH") => Route::UpdateKey(s(1)?, ver(2)),
            (["certificates"] | ["certificates", ""], "GET") => Route::ListCertificates,
            (["certificates", _, "import"], "POST") => Route::ImportCertificate(s(1)?),
            (["certificates", _, "create"], "POST") => Route::CreateCertificate(s(1)?),
            (["certificates", _, "pending"], "GET") => Route::GetPending(s(1)?),
            (["certificates", _, "policy"], "GET") => Route::GetPolicy(s(1)?),
            (["certificates", _, "versions"], "GET") => Route::ListCertificateVersions(s(1)?),
            (["certificates", _], "DELETE") => Route::DeleteCertificate(s(1)?),
            (["certificates", _] | ["certificates", _, _], "GET") => {
                Route::GetCertificate(s(1)?, ver(2))
            }
            (["certificates", _] | ["certificates", _, _], "PATCH") => {
                Route::UpdateCertificate(s(1)?, ver(2))
            }
            ([c, _], "GET") if deleted_kind(c).is_some() => {
                Route::GetDeleted(deleted_kind(c)?, s(1)?)
            }
            ([c, _], "DELETE") if deleted_kind(c).is_some() => {
                Route::Purge(deleted_kind(c)?, s(1)?)
            }
            ([c, _, "recover"], "POST") if deleted_kind(c).is_some() => {
                Route::Recover(deleted_kind(c)?, s(1)?)
            }
            _ => return None,
        })
    }
}

fn deleted_kind(collection: &str) -> Option<ObjectKind> {
    match collection {
        "deletedsecrets" => Some(ObjectKind::Secret),
        "deletedkeys" => Some(ObjectKind::Key),
        "deletedcertificates" => Some(ObjectKind::Certificate),
        _ => None,
    }
}

fn reject_if_deleted(v: &Vault, kind: ObjectKind, name: &str) -> Result<(), KvError> {
    if v.is_deleted(kind, name) {
        let noun = match kind {
            ObjectKind::Secret => "Secret",
            ObjectKind::Key => "Key",
            ObjectKind::Certificate => "Certificate",
        };
        return Err(KvError::new(
            409,
            "Conflict",
            format!(
                "{noun} {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the {} can only be recovered or purged.",
                kind.noun()
            ),
        ));
    }
    Ok(())
}

/// Resolves the vault from the Host header: `<vault>.<suffix>[:port]`, or the single-vault
/// fallback for `127.0.0.1` / `localhost`.
fn resolve_vault(shared: &Shared, host: &str) -> Option<String> {
    let hostname = if host.starts_with('[') {
        host.split_once(']')
            .map(|(h, _)| format!("{h}]"))
            .unwrap_or_else(|| host.to_string())
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
            _ => host.to_string(),
        }
    };
    let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
    let suffix = format!(".{}", shared.dns_suffix.to_ascii_lowercase());
    if let Some(v) = hostname.strip_suffix(&suffix) {
        return (!v.is_empty() && !v.contains('.')).then(|| v.to_string());
    }
    if matches!(hostname.as_str(), "127.0.0.1" | "localhost" | "[::1]")
        || hostname.parse::<std::net::IpAddr>().is_ok()
    {
        if let Some(v) = &shared.default_vault {
            return Some(v.clone());
        }
        let store = shared.store.read().ok()?;
        if store.vaults.len() == 1 {
            return store.vaults.keys().next().cloned();
        }
    }
    None
}

fn challenge_header(shared: &Shared, tenant: &str) -> String {
    format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        shared.authority, tenant, shared.resource
    )
}

async fn data_plane(shared: &Shared, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let client_request_id = header(&req, "x-ms-client-request-id").map(str::to_string);
    let crid = client_request_id.as_deref();
    let host = host_of(&req);
    let query = query_map(&req);
    let Some(route) = Route::parse(req.method(), req.uri().path()) else {
        shared.telemetry.count("Unknown", "", 400);
        let e = KvError::bad_parameter(format!(
            "The request URI {} {} is not a Key Vault operation.",
            req.method(),
            req.uri().path()
        ));
        return Ok(kv_response(e.status, &e.body(), crid));
    };
    let op = route.op();
    let Some(vault_name) = resolve_vault(shared, &host) else {
        shared.telemetry.count(op, "", 404);
        let e = KvError::new(
            404,
            "VaultNotFound",
            format!(
                "No vault is served at host '{host}'. Use https://<vault>.{}:<port>/.",
                shared.dns_suffix
            ),
        );
        return Ok(kv_response(e.status, &e.body(), crid));
    };
    let (tenant, access) = match shared.store.read().ok().and_then(|s| {
        s.vault(&vault_name)
            .map(|v| (v.tenant.clone(), v.access.clone()))
    }) {
        Some(x) => x,
        None => {
            shared.telemetry.count(op, &vault_name, 404);
            let e = KvError::new(
                404,
                "VaultNotFound",
                format!("The vault '{vault_name}' does not exist in this emulator."),
            );
            return Ok(kv_response(e.status, &e.body(), crid));
        }
    };

    // Authentication: bearer token issued by our Entra, for our resource, in the vault's tenant.
    let unauthorized = |message: &str| {
        let e = KvError::new(401, "Unauthorized", message);
        let mut r = kv_response(401, &e.body(), crid);
        set_header(
            &mut r,
            "www-authenticate",
            &challenge_header(shared, &tenant),
        );
        r
    };
    let token = header(&req, "authorization").and_then(|h| {
        let (scheme, rest) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        shared.telemetry.count(op, &vault_name, 401);
        return Ok(unauthorized(
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    };
    let claims = match shared.signer.verify(&token, &shared.audiences) {
        Ok(c) => c,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            shared.telemetry.count(op, &vault_name, 401);
            let msg = match e.kind() {
                ErrorKind::ExpiredSignature => {
                    "AKV10022: Invalid token: the token has expired.".to_string()
                }
                ErrorKind::InvalidAudience => format!(
                    "AKV10022: Invalid audience. Expected {}, found another audience.",
                    shared.resource
                ),
                _ => "AKV10022: Invalid token: signature validation failed.".to_string(),
            };
            return Ok(unauthorized(&msg));
        }
    };
    if !claims.tid.eq_ignore_ascii_case(&tenant) {
        shared.telemetry.count(op, &vault_name, 401);
        return Ok(unauthorized(&format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/{}/.",
            claims.tid
        )));
    }
    let allowed = access.iter().any(|a| {
        a == "*" || a.eq_ignore_ascii_case(&claims.appid) || a.eq_ignore_ascii_case(&claims.oid)
    });
    if !allowed {
        shared.telemetry.count(op, &vault_name, 403);
        let e = KvError::new(
            403,
            "Forbidden",
            format!(
                "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' does not have {} permission on key vault '{};location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                claims.appid,
                claims.oid,
                claims.tid,
                permission_name(op),
                vault_name
            ),
        )
        .inner("AccessDenied");
        return Ok(kv_response(403, &e.body(), crid));
    }

    // api-version
    let api_version = query.get("api-version").cloned().unwrap_or_default();
    if api_version.is_empty() {
        shared.telemetry.count(op, &vault_name, 400);
        let e = KvError::bad_parameter(
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
        return Ok(kv_response(400, &e.body(), crid));
    }
    if !API_VERSIONS.contains(&api_version.as_str()) {
        shared.telemetry.count(op, &vault_name, 400);
        let e = KvError::bad_parameter(format!(
            "The specified version ({api_version}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
        ));
        return Ok(kv_response(400, &e.body(), crid));
    }

    // Fault injection (after auth, so counted faults hit real calls only).
    let (latency, action) = shared.telemetry.check(op, &vault_name);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match action {
        FaultAction::None => {}
        FaultAction::Drop => {
            shared.telemetry.count(op, &vault_name, 0);
            return Err(DropConnection);
        }
        FaultAction::Respond {
            status,
            retry_after,
        } => {
            shared.telemetry.count(op, &vault_name, status);
            let e = if status == 429 {
                KvError::new(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                )
            } else {
                KvError::new(
                    status,
                    "InternalServerError",
                    "The service encountered an internal error (injected by the emulator).",
                )
            };
            let mut r = kv_response(status, &e.body(), crid);
            if let Some(s) = retry_after {
                set_header(&mut r, "retry-after", &s.to_string());
            }
            return Ok(r);
        }
    }

    let base = format!("https://{host}");
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => {
            shared.telemetry.count(op, &vault_name, e.status);
            return Ok(kv_response(e.status, &e.body(), crid));
        }
    };
    let ctx = OpCtx {
        base: &base,
        api_version: &api_version,
        query: &query,
    };
    let result = execute(shared, &vault_name, route, &body, &ctx);
    Ok(match result {
        Ok((status, value, location)) => {
            shared.telemetry.count(op, &vault_name, status);
            let mut r = kv_response(status, &value, crid);
            if status == 204 {
                *r.body_mut() = Full::new(Bytes::new());
                r.headers_mut().remove(hyper::header::CONTENT_TYPE);
            }
            if let Some(l) = location {
                set_header(&mut r, "location", &l);
                set_header(&mut r, "retry-after", "0");
            }
            r
        }
        Err(e) => {
            shared.telemetry.count(op, &vault_name, e.status);
            tracing::debug!(operation = op, vault = %vault_name, status = e.status, code = e.code, "key vault error");
            kv_response(e.status, &e.body(), crid)
        }
    })
}

fn permission_name(op: &str) -> &'static str {
    match op {
        "GetSecret" => "secrets get",
        "SetSecret" => "secrets set",
        "ListSecrets" | "ListSecretVersions" => "secrets list",
        "GetKey" => "keys get",
        "ListKeys" | "ListKeyVersions" => "keys list",
        "CreateKey" => "keys create",
        "ImportKey" => "keys import",
        "GetCertificate" | "GetCertificatePolicy" | "GetCertificateOperation" => "certificates get",
        "ListCertificates" | "ListCertificateVersions" => "certificates list",
        "ImportCertificate" => "certificates import",
        "CreateCertificate" => "certificates create",
        _ => "the required",
    }
}

struct OpCtx<'a> {
    base: &'a str,
    api_version: &'a str,
    query: &'a HashMap<String, String>,
}

type OpResult = Result<(u16, Value, Option<String>), KvError>;

fn internal(e: impl std::fmt::Display) -> KvError {
    KvError::new(500, "InternalServerError", e.to_string())
}

/// Runs a read-only closure on the vault.
fn read_vault<T>(
    shared: &Shared,
    vault: &str,
    f: impl FnOnce(&Vault) -> Result<T, KvError>,
) -> Result<T, KvError> {
    let store = shared
        .store
        .read()
        .map_err(|_| internal("store lock poisoned"))?;
    let v = store
        .vault(vault)
        .ok_or_else(|| KvError::new(404, "VaultNotFound", "vault vanished"))?;
    f(v)
}

/// Runs a mutation on the vault and persists the store before answering.
fn write_vault<T>(
    shared: &Shared,
    vault: &str,
    f: impl FnOnce(&mut Vault) -> Result<T, KvError>,
) -> Result<T, KvError> {
    let mut store = shared
        .store
        .write()
        .map_err(|_| internal("store lock poisoned"))?;
    let v = store
        .vault_mut(vault)
        .ok_or_else(|| KvError::new(404, "VaultNotFound", "vault vanished"))?;
    let out = f(v)?;
    if let Some(path) = &shared.state_path {
        store.persist(path).map_err(|e| {
            tracing::error!(error = %e, "state file write failed");
            internal("the emulator could not persist its state")
        })?;
    }
    Ok(out)
}

fn page(ctx: &OpCtx<'_>, path: &str, items: Vec<Value>) -> Result<Value, KvError> {
    let max = match ctx.query.get("maxresults") {
        None => 25,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(KvError::bad_parameter(
                    "maxresults must be between 1 and 25",
                ));
            }
        },
    };
    let skip = ctx
        .query
        .get("$skiptoken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let end = (skip + max).min(items.len());
    let value: Vec<Value> = items
        .get(skip..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len()).then(|| {
        format!(
            "{}{path}?api-version={}&$skiptoken={end}&maxresults={max}",
            ctx.base, ctx.api_version
        )
    });
    Ok(json!({ "value": value, "nextLink": next }))
}

fn execute(shared: &Shared, vault: &str, route: Route, body: &[u8], ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;
    let ok = |v: Value| Ok((200, v, None));
    match route {
        // --- secrets ---
        Route::SetSecret(name) => {
            check_name(ObjectKind::Secret, &name)?;
            let v = parse_json(body)?;
            let value = v.get("value").and_then(|x| x.as_str()).ok_or_else(|| {
                KvError::bad_parameter("The parameter 'value' is required and must be a string.")
            })?;
            if value.len() > MAX_SECRET_VALUE {
                return Err(KvError::bad_parameter(format!(
                    "The secret value is too large (limit {MAX_SECRET_VALUE} bytes)."
                )));
            }
            let content_type = v
                .get("contentType")
                .and_then(|x| x.as_str())
                .map(str::to_string);
            let tags = parse_tags(&v)?;
            let mut attrs = Attrs::now();
            if let Some(a) = v.get("attributes") {
                attrs.apply(a)?;
            }
            let value = Zeroizing::new(value.to_string());
            let out = write_vault(shared, vault, |vt| {
                reject_if_deleted(vt, ObjectKind::Secret, &name)?;
                if vt.certificates.contains_key(&name.to_ascii_lowercase()) {
                    return Err(KvError::new(
                        409,
                        "Conflict",
                        format!(
                            "Secret {name} is currently being used by a certificate and cannot be set directly."
                        ),
                    ));
                }
                Ok(store::render_secret(
                    base,
                    vt.set_secret(&name, value, content_type, tags, attrs),
                    true,
                ))
            })?;
            ok(out)
        }
        Route::GetSecret(name, version) => ok(read_vault(shared, vault, |v| {
            Ok(store::render_secret(
                base,
                v.get_secret_checked(&name, version.as_deref())?,
                true,
            ))
        })?),
        Route::UpdateSecret(name, version) => {
            let b = parse_json(body)?;
            let tags = b.get("tags").map(|_| parse_tags(&b)).transpose()?;
            ok(write_vault(shared, vault, |v| {
                let ver = v.secret(&name, version.as_deref())?.version.clone();
                let list = v
                    .secrets
                    .get_mut(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Secret, &name, None))?;
                let s = list
                    .iter_mut()
                    .find(|s| s.version == ver)
                    .ok_or_else(|| KvError::not_found(ObjectKind::Secret, &name, Some(&ver)))?;
                if let Some(a) = b.get("attributes") {
                    s.attrs.apply(a)?;
                }
                if let Some(ct) = b.get("contentType") {
                    s.content_type = ct.as_str().map(str::to_string);
                }
                if let Some(t) = tags {
                    s.tags = t;
                }
                s.attrs.updated = store::now();
                Ok(store::render_secret(base, s, false))
            })?)
        }
        Route::DeleteSecret(name) => {
            let r = write_vault(shared, vault, |v| {
                let r = store::render_secret(base, v.secret(&name, None)?, false);
                v.delete(ObjectKind::Secret, &name)?;
                Ok(r)
            })?;
            ok(store::deleted_fields(
                base,
                ObjectKind::Secret,
                &name,
                store::now(),
                r,
            ))
        }
        Route::ListSecrets => {
            let items = read_vault(shared, vault, |v| {
                Ok(v.secrets
                    .values()
                    .filter_map(|vs| vs.last())
                    .map(|s| store::render_secret_item(base, s, false))
                    .collect::<Vec<_>>())
            })?;
            ok(page(ctx, "/secrets", items)?)
        }
        Route::ListSecretVersions(name) => {
            let items = read_vault(shared, vault, |v| {
                let list = v
                    .secrets
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Secret, &name, None))?;
                Ok(list
                    .iter()
                    .map(|s| store::render_secret_item(base, s, true))
                    .collect::<Vec<_>>())
            })?;
            ok(page(ctx, &format!("/secrets/{name}/versions"), items)?)
        }
        // --- keys ---
        Route::CreateKey(name) => {
            check_name(ObjectKind::Key, &name)?;
            let b = parse_json(body)?;
            let kty = b
                .get("kty")
                .and_then(|x| x.as_str())
                .ok_or_else(|| KvError::bad_parameter("The parameter 'kty' is required."))?;
            let size = b.get("key_size").and_then(|x| x.as_u64()).map(|x| x as u32);
            let crv = b.get("crv").and_then(|x| x.as_str());
            let material = KeyMaterial::generate(kty, size, crv)
                .map_err(|e| KvError::bad_parameter(e.to_string()))?;
            let key_ops = key_ops_of(&b)?;
            let tags = parse_tags(&b)?;
            let mut attrs = Attrs::now();
            if let Some(a) = b.get("attributes") {
                attrs.apply(a)?;
            }
            ok(write_vault(shared, vault, |v| {
                reject_if_deleted(v, ObjectKind::Key, &name)?;
                store::render_key(
                    base,
                    v.add_key(&name, material, key_ops, tags, attrs, false, None),
                )
            })?)
        }
        Route::ImportKey(name) => {
            check_name(ObjectKind::Key, &name)?;
            let b = parse_json(body)?;
            let jwk = b
                .get("key")
                .ok_or_else(|| KvError::bad_parameter("The parameter 'key' is required."))?;
            let material =
                KeyMaterial::from_jwk(jwk).map_err(|e| KvError::bad_parameter(e.to_string()))?;
            let key_ops = key_ops_of(jwk)?;
            let tags = parse_tags(&b)?;
            let mut attrs = Attrs::now();
            if let Some(a) = b.get("attributes") {
                attrs.apply(a)?;
            }
            ok(write_vault(shared, vault, |v| {
                reject_if_deleted(v, ObjectKind::Key, &name)?;
                store::render_key(
                    base,
                    v.add_key(&name, material, key_ops, tags, attrs, false, None),
                )
            })?)
        }
        Route::GetKey(name, version) => ok(read_vault(shared, vault, |v| {
            store::render_key(base, v.get_key_checked(&name, version.as_deref())?)
        })?),
        Route::UpdateKey(name, version) => {
            let b = parse_json(body)?;
            let tags = b.get("tags").map(|_| parse_tags(&b)).transpose()?;
            let key_ops = key_ops_of(&b)?;
            ok(write_vault(shared, vault, |v| {
                let ver = v.key(&name, version.as_deref())?.version.clone();
                let list = v
                    .keys
                    .get_mut(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Key, &name, None))?;
                let k = list
                    .iter_mut()
                    .find(|k| k.version == ver)
                    .ok_or_else(|| KvError::not_found(ObjectKind::Key, &name, Some(&ver)))?;
                if let Some(a) = b.get("attributes") {
                    k.attrs.apply(a)?;
                }
                if let Some(t) = tags {
                    k.tags = t;
                }
                if let Some(ops) = key_ops {
                    k.key_ops = ops;
                }
                store::render_key(base, k)
            })?)
        }
        Route::DeleteKey(name) => {
            let r = write_vault(shared, vault, |v| {
                let r = store::render_key(base, v.key(&name, None)?)?;
                v.delete(ObjectKind::Key, &name)?;
                Ok(r)
            })?;
            ok(store::deleted_fields(
                base,
                ObjectKind::Key,
                &name,
                store::now(),
                r,
            ))
        }
        Route::ListKeys => {
            let items = read_vault(shared, vault, |v| {
                Ok(v.keys
                    .values()
                    .filter_map(|vs| vs.last())
                    .map(|k| store::render_key_item(base, k, false))
                    .collect::<Vec<_>>())
            })?;
            ok(page(ctx, "/keys", items)?)
        }
        Route::ListKeyVersions(name) => {
            let items = read_vault(shared, vault, |v| {
                let list = v
                    .keys
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Key, &name, None))?;
                Ok(list
                    .iter()
                    .map(|k| store::render_key_item(base, k, true))
                    .collect::<Vec<_>>())
            })?;
            ok(page(ctx, &format!("/keys/{name}/versions"), items)?)
        }
        // --- certificates ---
        Route::ImportCertificate(name) => {
            check_name(ObjectKind::Certificate, &name)?;
            let b = parse_json(body)?;
            let value = Zeroizing::new(
                b.get("value")
                    .and_then(|x| x.as_str())
                    .ok_or_else(|| KvError::bad_parameter("The parameter 'value' is required."))?
                    .to_string(),
            );
            let pwd = Zeroizing::new(
                b.get("pwd")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string(),
            );
            let policy = b.get("policy").cloned().unwrap_or_else(|| json!({}));
            let content_type = policy
                .pointer("/secret_props/contentType")
                .and_then(|x| x.as_str())
                .unwrap_or(CT_PKCS12)
                .to_string();
            let bundle = certs::parse_import(&value, &pwd).map_err(|e| {
                KvError::bad_parameter(format!("The certificate could not be imported: {e}"))
            })?;
            let tags = parse_tags(&b)?;
            let enabled = b
                .pointer("/attributes/enabled")
                .and_then(|x| x.as_bool())
                .unwrap_or(true);
            ok(write_vault(shared, vault, |v| {
                reject_if_deleted(v, ObjectKind::Certificate, &name)?;
                Ok(store::render_cert(
                    base,
                    v.add_certificate(&name, bundle, &content_type, tags, enabled, policy)?,
                ))
            })?)
        }
        Route::CreateCertificate(name) => {
            check_name(ObjectKind::Certificate, &name)?;
            let b = parse_json(body)?;
            let policy = b
                .get("policy")
                .cloned()
                .ok_or_else(|| KvError::bad_parameter("The parameter 'policy' is required."))?;
            let issuer = policy
                .pointer("/issuer/name")
                .and_then(|x| x.as_str())
                .unwrap_or("Self");
            if !issuer.eq_ignore_ascii_case("self") {
                return Err(KvError::bad_parameter(format!(
                    "Issuer '{issuer}' is not supported by the emulator; use 'Self'."
                )));
            }
            let kty = policy
                .pointer("/key_props/kty")
                .and_then(|x| x.as_str())
                .unwrap_or("RSA");
            let size = policy
                .pointer("/key_props/key_size")
                .and_then(|x| x.as_u64())
                .map(|x| x as u32);
            let crv = policy.pointer("/key_props/crv").and_then(|x| x.as_str());
            let subject = policy
                .pointer("/x509_props/subject")
                .and_then(|x| x.as_str())
                .unwrap_or("CN=emulator")
                .to_string();
            let dns: Vec<String> = policy
                .pointer("/x509_props/sans/dns_names")
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let months = policy
                .pointer("/x509_props/validity_months")
                .and_then(|x| x.as_u64())
                .unwrap_or(12) as u32;
            let content_type = policy
                .pointer("/secret_props/contentType")
                .and_then(|x| x.as_str())
                .unwrap_or(CT_PKCS12)
                .to_string();
            let key = KeyMaterial::generate(kty, size, crv)
                .map_err(|e| KvError::bad_parameter(e.to_string()))?;
            let bundle = certs::self_signed(key, &subject, &dns, months)
                .map_err(|e| KvError::bad_parameter(e.to_string()))?;
            let tags = parse_tags(&b)?;
            let enabled = b
                .pointer("/attributes/enabled")
                .and_then(|x| x.as_bool())
                .unwrap_or(true);
            let stored = write_vault(shared, vault, |v| {
                reject_if_deleted(v, ObjectKind::Certificate, &name)?;
                Ok(
                    v.add_certificate(&name, bundle, &content_type, tags, enabled, policy)?
                        .name
                        .clone(),
                )
            })?;
            // Like Key Vault: the create answer is "inProgress"; the pending resource then says
            // "completed" (issuance is immediate here). SDK pollers rely on that first state.
            let mut pending = pending_op(base, &stored);
            pending["status"] = json!("inProgress");
            pending["status_details"] = json!(
                "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later."
            );
            Ok((
                202,
                pending,
                Some(format!(
                    "{base}/certificates/{stored}/pending?api-version={}",
                    ctx.api_version
                )),
            ))
        }
        Route::GetPending(name) => {
            let stored = read_vault(shared, vault, |v| Ok(v.cert(&name, None)?.name.clone()))?;
            ok(pending_op(base, &stored))
        }
        Route::GetPolicy(name) => ok(read_vault(shared, vault, |v| {
            let c = v.cert(&name, None)?;
            let mut p = c.policy.clone();
            p["id"] = json!(format!("{base}/certificates/{}/policy", c.name));
            Ok(p)
        })?),
        Route::GetCertificate(name, version) => ok(read_vault(shared, vault, |v| {
            Ok(store::render_cert(base, v.cert(&name, version.as_deref())?))
        })?),
        Route::UpdateCertificate(name, version) => {
            let b = parse_json(body)?;
            let tags = b.get("tags").map(|_| parse_tags(&b)).transpose()?;
            ok(write_vault(shared, vault, |v| {
                let ver = v.cert(&name, version.as_deref())?.version.clone();
                let list = v
                    .certificates
                    .get_mut(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Certificate, &name, None))?;
                let c = list.iter_mut().find(|c| c.version == ver).ok_or_else(|| {
                    KvError::not_found(ObjectKind::Certificate, &name, Some(&ver))
                })?;
                if let Some(e) = b.pointer("/attributes/enabled").and_then(|x| x.as_bool()) {
                    c.attrs.enabled = e;
                }
                if let Some(t) = tags {
                    c.tags = t;
                }
                c.attrs.updated = store::now();
                Ok(store::render_cert(base, c))
            })?)
        }
        Route::DeleteCertificate(name) => {
            let r = write_vault(shared, vault, |v| {
                let r = store::render_cert(base, v.cert(&name, None)?);
                v.delete(ObjectKind::Certificate, &name)?;
                Ok(r)
            })?;
            ok(store::deleted_fields(
                base,
                ObjectKind::Certificate,
                &name,
                store::now(),
                r,
            ))
        }
        Route::ListCertificates => {
            let items = read_vault(shared, vault, |v| {
                Ok(v.certificates
                    .values()
                    .filter_map(|vs| vs.last())
                    .map(|c| store::render_cert_item(base, c, false))
                    .collect::<Vec<_>>())
            })?;
            ok(page(ctx, "/certificates", items)?)
        }
        Route::GetDeleted(kind, name) => ok(read_vault(shared, vault, |v| {
            let d = v.deleted_entry(kind, &name)?;
            let rendered = match kind {
                ObjectKind::Secret => d
                    .secrets
                    .as_ref()
                    .and_then(|x| x.last())
                    .map(|s| Ok(store::render_secret(base, s, false))),
                ObjectKind::Key => d
                    .keys
                    .as_ref()
                    .and_then(|x| x.last())
                    .map(|k| store::render_key(base, k)),
                ObjectKind::Certificate => d
                    .certificates
                    .as_ref()
                    .and_then(|x| x.last())
                    .map(|c| Ok(store::render_cert(base, c))),
            }
            .ok_or_else(|| internal("deleted entry without versions"))??;
            let stored_name = rendered_name(&rendered).unwrap_or(name.clone());
            Ok(store::deleted_fields(
                base,
                kind,
                &stored_name,
                d.deleted_date,
                rendered,
            ))
        })?),
        Route::Purge(kind, name) => {
            write_vault(shared, vault, |v| v.purge(kind, &name))?;
            Ok((204, Value::Null, None))
        }
        Route::Recover(kind, name) => ok(write_vault(shared, vault, |v| {
            v.recover(kind, &name)?;
            match kind {
                ObjectKind::Secret => Ok(store::render_secret(base, v.secret(&name, None)?, false)),
                ObjectKind::Key => store::render_key(base, v.key(&name, None)?),
                ObjectKind::Certificate => Ok(store::render_cert(base, v.cert(&name, None)?)),
            }
        })?),
        Route::ListCertificateVersions(name) => {
            let items = read_vault(shared, vault, |v| {
                let list = v
                    .certificates
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Certificate, &name, None))?;
                Ok(list
                    .iter()
                    .map(|c| store::render_cert_item(base, c, true))
                    .collect::<Vec<_>>())
            })?;
            ok(page(ctx, &format!("/certificates/{name}/versions"), items)?)
        }
    }
}

/// The object name as stored (case preserved), from a rendered bundle's id / kid.
fn rendered_name(v: &Value) -> Option<String> {
    let id = v.get("id").or_else(|| v.pointer("/key/kid"))?.as_str()?;
    id.split('/').nth(4).map(str::to_string)
}

fn key_ops_of(v: &Value) -> Result<Option<Vec<String>>, KvError> {
    match v.get("key_ops") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| KvError::bad_parameter("key_ops must be strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(KvError::bad_parameter("key_ops must be an array")),
    }
}

fn pending_op(base: &str, name: &str) -> Value {
    json!({
        "id": format!("{base}/certificates/{name}/pending"),
        "issuer": { "name": "Self" },
        "cancellation_requested": false,
        "status": "completed",
        "target": format!("{base}/certificates/{name}"),
        "request_id": uuid::Uuid::new_v4().simple().to_string(),
    })
}

// === Entra ID ===

async fn entra(shared: &Shared, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query = query_map(&req);
    let method = req.method().clone();
    match (method.as_str(), seg.as_slice()) {
        ("GET", [_, "discovery", "instance"]) => {
            let tenant = query
                .get("authorization_endpoint")
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| {
                    u.path_segments()
                        .and_then(|mut s| s.next().map(str::to_string))
                })
                .unwrap_or_else(|| "common".into());
            let host = shared.authority.trim_start_matches("https://").to_string();
            shared.telemetry.count("InstanceDiscovery", "", 200);
            json_response(
                200,
                &json!({
                    "tenant_discovery_endpoint": format!("{}/{tenant}/v2.0/.well-known/openid-configuration", shared.authority),
                    "api-version": "1.1",
                    "metadata": [{ "preferred_network": host, "preferred_cache": host, "aliases": [host] }],
                }),
            )
        }
        ("GET", [tenant, "v2.0", ".well-known", "openid-configuration"])
        | ("GET", [tenant, ".well-known", "openid-configuration"]) => {
            if !shared
                .tenants
                .iter()
                .any(|t| t.eq_ignore_ascii_case(tenant))
                && !matches!(*tenant, "common" | "organizations")
            {
                shared.telemetry.count("OpenIdConfiguration", "", 400);
                let e = EntraError::new(
                    400,
                    "invalid_tenant",
                    90002,
                    format!(
                        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                    ),
                );
                return json_response(e.status, &e.body());
            }
            shared.telemetry.count("OpenIdConfiguration", "", 200);
            let a = &shared.authority;
            json_response(
                200,
                &json!({
                    "token_endpoint": format!("{a}/{tenant}/oauth2/v2.0/token"),
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                    "jwks_uri": format!("{a}/{tenant}/discovery/v2.0/keys"),
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": format!("{a}/{tenant}/v2.0"),
                    "request_uri_parameter_supported": false,
                    "authorization_endpoint": format!("{a}/{tenant}/oauth2/v2.0/authorize"),
                    "device_authorization_endpoint": format!("{a}/{tenant}/oauth2/v2.0/devicecode"),
                    "end_session_endpoint": format!("{a}/{tenant}/oauth2/v2.0/logout"),
                    "tenant_region_scope": "local",
                    "cloud_instance_name": "emulator",
                }),
            )
        }
        ("GET", [_, "discovery", "v2.0", "keys"]) | ("GET", [_, "discovery", "keys"]) => {
            shared.telemetry.count("Jwks", "", 200);
            json_response(200, shared.signer.jwks())
        }
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
            let tenant = tenant.to_string();
            token_endpoint(shared, req, &tenant, true).await
        }
        ("POST", [tenant, "oauth2", "token"]) => {
            let tenant = tenant.to_string();
            token_endpoint(shared, req, &tenant, false).await
        }
        _ => {
            shared.telemetry.count("Unknown", "", 404);
            json_response(
                404,
                &json!({ "error": { "code": "NotFound", "message": format!("No route for {method} {path}.") } }),
            )
        }
    }
}

async fn token_endpoint(shared: &Shared, req: Request<Incoming>, tenant: &str, v2: bool) -> Resp {
    let result = token_inner(shared, req, tenant, v2).await;
    match result {
        Ok(body) => {
            shared.telemetry.count("Token", "", 200);
            json_response(200, &body)
        }
        Err(e) => {
            shared.telemetry.count("Token", "", e.status);
            tracing::info!(
                tenant,
                status = e.status,
                code = e.code,
                "token request refused"
            );
            json_response(e.status, &e.body())
        }
    }
}

async fn token_inner(
    shared: &Shared,
    req: Request<Incoming>,
    tenant: &str,
    v2: bool,
) -> Result<Value, EntraError> {
    let body = read_body(req).await.map_err(|_| {
        EntraError::new(
            400,
            "invalid_request",
            900144,
            "The request body is too large.",
        )
    })?;
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map_err(|_| {
                EntraError::new(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must be application/x-www-form-urlencoded.",
                )
            })?
            .into_iter()
            .collect();
    let form = Zeroizing::new(form.into_iter().collect::<Vec<_>>());
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if !shared
        .tenants
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tenant))
    {
        return Err(EntraError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    match get("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(EntraError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
        None => {
            return Err(EntraError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
    }
    let client_id = get("client_id").ok_or_else(|| {
        EntraError::new(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    })?;
    let principal: &Principal = shared
        .dir
        .principals
        .get(&client_id.to_ascii_lowercase())
        .filter(|p| p.tenant.eq_ignore_ascii_case(tenant))
        .ok_or_else(|| EntraError::new(400, "unauthorized_client", 700016, format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")))?;
    if let Some(secret) = get("client_secret") {
        let ok = principal
            .client_secret
            .as_ref()
            .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()));
        if !ok {
            return Err(EntraError::new(
                401,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    principal.client_id
                ),
            ));
        }
    } else if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err(EntraError::new(
                400,
                "invalid_request",
                50027,
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        shared.dir.validate_assertion(principal, assertion).await?;
    } else {
        return Err(EntraError::new(
            400,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    let resource = if v2 {
        let scope = get("scope").ok_or_else(|| {
            EntraError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        })?;
        scope
            .split(' ')
            .find_map(|s| s.strip_suffix("/.default"))
            .ok_or_else(|| EntraError::new(400, "invalid_scope", 1002012, format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")))?
            .to_string()
    } else {
        get("resource")
            .ok_or_else(|| {
                EntraError::new(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'resource'.",
                )
            })?
            .to_string()
    };
    let (token, exp) = shared
        .signer
        .issue(principal, &resource, shared.token_lifetime)
        .map_err(|e| EntraError::new(500, "server_error", 90000, e))?;
    let lifetime = shared.token_lifetime.as_secs();
    let mut body = json!({ "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token });
    if !v2 {
        body["expires_on"] = json!(exp.to_string());
        body["resource"] = json!(resource);
    }
    Ok(body)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === IMDS and NMI ===

fn token_fields(shared: &Shared, p: &Principal, resource: &str) -> Result<Value, String> {
    let (token, exp) = shared.signer.issue(p, resource, shared.token_lifetime)?;
    let now = store::now();
    let lifetime = shared.token_lifetime.as_secs();
    Ok(json!({
        "access_token": token,
        "client_id": p.client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": exp.to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": (now - 300).to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
}

async fn handle_imds(shared: &Shared, req: Request<Incoming>) -> Resp {
    let q = query_map(&req);
    let err = |status: u16, error: &str, desc: &str| {
        shared.telemetry.count("Imds", "", status);
        json_response(
            status,
            &json!({ "error": error, "error_description": desc }),
        )
    };
    if req.uri().path().trim_end_matches('/') != "/metadata/identity/oauth2/token" {
        return err(
            404,
            "not_found",
            "Only /metadata/identity/oauth2/token is served.",
        );
    }
    if req.method() != Method::GET {
        return err(405, "invalid_request", "Use GET.");
    }
    if !header(&req, "metadata").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return err(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return err(
            400,
            "invalid_request",
            "Required audience parameter not specified",
        );
    };
    if q.contains_key("mi_res_id") || q.contains_key("msi_res_id") || q.contains_key("object_id") {
        return err(
            400,
            "invalid_request",
            "Identity not found: select managed identities by client_id in the emulator",
        );
    }
    let principal = match q.get("client_id") {
        Some(id) => shared.dir.managed.get(&id.to_ascii_lowercase()),
        None => shared
            .dir
            .default_managed
            .as_ref()
            .and_then(|d| shared.dir.managed.get(d)),
    };
    let Some(p) = principal else {
        return err(400, "invalid_request", "Identity not found");
    };
    match token_fields(shared, p, resource) {
        Ok(body) => {
            shared.telemetry.count("Imds", "", 200);
            json_response(200, &body)
        }
        Err(e) => err(500, "unknown_error", &e),
    }
}

async fn handle_nmi(shared: &Shared, req: Request<Incoming>) -> Resp {
    let q = query_map(&req);
    let text = |status: u16, msg: &str| {
        shared.telemetry.count("Nmi", "", status);
        let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r
    };
    if req.uri().path().trim_end_matches('/') != "/host/token" {
        return text(404, "404 page not found");
    }
    let (Some(ns), Some(pod)) = (header(&req, "podns"), header(&req, "podname")) else {
        return text(400, "missing podname and podns from request headers");
    };
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return text(400, "parameter resource cannot be empty");
    };
    let Some(client_id) = shared.dir.pods.get(&(ns.to_string(), pod.to_string())) else {
        return text(
            403,
            &format!("no AzureAssignedIdentity found for pod:{ns}/{pod} in assigned state"),
        );
    };
    let Some(p) = shared.dir.managed_or_principal(client_id) else {
        return text(
            403,
            &format!("the identity {client_id} assigned to pod {ns}/{pod} is not declared"),
        );
    };
    match token_fields(shared, p, resource) {
        Ok(mut token) => {
            if let Some(obj) = token.as_object_mut() {
                obj.remove("client_id");
                obj.insert("refresh_token".into(), json!(""));
            }
            shared.telemetry.count("Nmi", "", 200);
            json_response(200, &json!({ "token": token, "clientid": p.client_id }))
        }
        Err(e) => text(500, &e),
    }
}

// === admin ===

async fn handle_admin(shared: &Shared, req: Request<Incoming>) -> Resp {
    let authorized = header(&req, "authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), shared.admin_token.as_bytes()));
    if !authorized {
        return json_response(
            401,
            &json!({ "error": "the admin API needs 'Authorization: Bearer <admin token>' (printed at start)" }),
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return json_response(400, &e.body()),
    };
    let bad = |m: String| json_response(400, &json!({ "error": m }));
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["admin", "health"]) => json_response(200, &json!({ "status": "ok" })),
        ("GET", ["admin", "counters"]) => json_response(200, &json!(shared.telemetry.rows())),
        ("POST", ["admin", "counters", "reset"]) => {
            shared.telemetry.reset_counters();
            json_response(200, &json!({}))
        }
        ("POST", ["admin", "faults"]) => match serde_json::from_slice::<FaultRule>(&body) {
            Ok(rule) => {
                shared.telemetry.add_fault(rule);
                json_response(200, &json!({}))
            }
            Err(e) => bad(format!("fault rule: {e}")),
        },
        ("DELETE", ["admin", "faults"]) => {
            shared.telemetry.clear_faults();
            json_response(200, &json!({}))
        }
        ("POST", ["admin", "reset"]) => {
            shared.telemetry.clear_faults();
            shared.telemetry.reset_counters();
            json_response(200, &json!({}))
        }
        ("PUT", ["admin", "vaults", vault, "secrets", name]) => {
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return bad(format!("body: {e}")),
            };
            let Some(value) = v.get("value").and_then(|x| x.as_str()) else {
                return bad("body needs a string 'value'".into());
            };
            if let Err(e) = check_name(ObjectKind::Secret, name) {
                return json_response(400, &e.body());
            }
            let ct = v
                .get("content_type")
                .and_then(|x| x.as_str())
                .map(str::to_string);
            let value = Zeroizing::new(value.to_string());
            match write_vault(shared, vault, |vt| {
                Ok(vt
                    .set_secret(name, value, ct, BTreeMap::new(), Attrs::now())
                    .version
                    .clone())
            }) {
                Ok(version) => json_response(200, &json!({ "version": version })),
                Err(e) => json_response(e.status, &e.body()),
            }
        }
        ("PATCH", ["admin", "vaults", vault, "secrets", name]) => {
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return bad(format!("body: {e}")),
            };
            let result = write_vault(shared, vault, |vt| {
                let list = vt
                    .secrets
                    .get_mut(&name.to_ascii_lowercase())
                    .ok_or_else(|| KvError::not_found(ObjectKind::Secret, name, None))?;
                let s = list
                    .last_mut()
                    .ok_or_else(|| KvError::not_found(ObjectKind::Secret, name, None))?;
                s.attrs.apply(&v)?;
                Ok(())
            });
            match result {
                Ok(()) => json_response(200, &json!({})),
                Err(e) => json_response(e.status, &e.body()),
            }
        }
        _ => json_response(
            404,
            &json!({ "error": format!("no admin route {method} {path}") }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_like_key_vault_paths() {
        let get = Method::GET;
        assert!(
            matches!(Route::parse(&get, "/secrets/a/"), Some(Route::GetSecret(n, None)) if n == "a")
        );
        assert!(
            matches!(Route::parse(&get, "/secrets/a"), Some(Route::GetSecret(n, None)) if n == "a")
        );
        assert!(
            matches!(Route::parse(&get, "/secrets/a/v1"), Some(Route::GetSecret(_, Some(v))) if v == "v1")
        );
        assert!(matches!(
            Route::parse(&get, "/secrets/a/versions"),
            Some(Route::ListSecretVersions(_))
        ));
        assert!(matches!(
            Route::parse(&get, "/secrets"),
            Some(Route::ListSecrets)
        ));
        assert!(matches!(
            Route::parse(&Method::POST, "/keys/k/create"),
            Some(Route::CreateKey(_))
        ));
        assert!(matches!(
            Route::parse(&Method::PUT, "/keys/k"),
            Some(Route::ImportKey(_))
        ));
        assert!(matches!(
            Route::parse(&Method::POST, "/certificates/c/import"),
            Some(Route::ImportCertificate(_))
        ));
        assert!(Route::parse(&get, "/secrets/a/b/c").is_none());
        assert!(Route::parse(&Method::POST, "/secrets/a").is_none());
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
