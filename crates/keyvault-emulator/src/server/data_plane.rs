//! The Key Vault data plane's front half: vault from the Host header, bearer-token
//! authentication and access check, api-version, fault injection; then the operation (see
//! [`super::route`]) and the answer. Also the vault access helpers the operations share.

use super::http::{header, host_of, kv_response, query_map, read_body, set_header};
use super::route::{Route, permission_name};
use super::{DropConnection, Resp, Shared, fault};
use crate::error::{KvError, ObjectKind};
use crate::store::Vault;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::Value;
use std::collections::HashMap;

/// API versions accepted on the data plane.
const API_VERSIONS: &[&str] = &[
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

pub(super) fn reject_if_deleted(v: &Vault, kind: ObjectKind, name: &str) -> Result<(), KvError> {
    if v.is_deleted(kind, name) {
        return Err(KvError::new(
            409,
            "Conflict",
            format!(
                "{} {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the {} can only be recovered or purged.",
                kind.title(),
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

pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
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
    // Every request is a round trip, the unauthenticated challenge probe included.
    fault::delay(&shared.telemetry, op, &vault_name).await;
    let (tenant, access, permissions) = match shared.store.read().ok().and_then(|s| {
        s.vault(&vault_name)
            .map(|v| (v.tenant.clone(), v.access.clone(), v.permissions.clone()))
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
    let permitted = [&claims.appid, &claims.oid]
        .iter()
        .find_map(|id| permissions.get(&id.to_ascii_lowercase()))
        .is_none_or(|allowed| allowed.iter().any(|p| p == permission_name(op)));
    let allowed = permitted
        && access.iter().any(|a| {
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
    let injected = fault::apply(&shared.telemetry, op, &vault_name, |status| {
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
        kv_response(status, &e.body(), crid)
    })?;
    if let Some(r) = injected {
        return Ok(r);
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
        shared,
        vault: &vault_name,
        base: &base,
        api_version: &api_version,
        query: &query,
    };
    let result = route.execute(&body, &ctx).await;
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

/// What an operation needs besides its path and body: the vault it addresses, and from the
/// request the base of every id in the answer, the api-version and the query.
pub(super) struct OpCtx<'a> {
    pub(super) shared: &'a Shared,
    /// The vault's lower-case name.
    pub(super) vault: &'a str,
    /// `https://<host>`: the prefix of every id in an answer.
    pub(super) base: &'a str,
    pub(super) api_version: &'a str,
    pub(super) query: &'a HashMap<String, String>,
}

impl OpCtx<'_> {
    /// [`read_vault`] on the operation's vault.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Vault) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        read_vault(self.shared, self.vault, f)
    }
    /// [`write_vault`] on the operation's vault.
    pub(super) async fn write<T>(
        &self,
        f: impl FnOnce(&mut Vault) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        write_vault(self.shared, self.vault, f).await
    }
}

/// Status, body and (for a long-running create) the `location` to poll.
pub(super) type OpResult = Result<(u16, Value, Option<String>), KvError>;

pub(super) fn internal(e: impl std::fmt::Display) -> KvError {
    KvError::new(500, "InternalServerError", e.to_string())
}

fn poisoned<T>(_: T) -> KvError {
    internal("store lock poisoned")
}

/// The vault was removed between routing and the operation.
fn vanished() -> KvError {
    KvError::new(404, "VaultNotFound", "vault vanished")
}

/// Runs a read-only closure on the vault.
pub(super) fn read_vault<T>(
    shared: &Shared,
    vault: &str,
    f: impl FnOnce(&Vault) -> Result<T, KvError>,
) -> Result<T, KvError> {
    let store = shared.store.read().map_err(poisoned)?;
    f(store.vault(vault).ok_or_else(vanished)?)
}

/// Runs a mutation on the vault and persists the store before answering. The store's lock is
/// held for the mutation and the snapshot only; the file is written after it is released.
pub(super) async fn write_vault<T>(
    shared: &Shared,
    vault: &str,
    f: impl FnOnce(&mut Vault) -> Result<T, KvError>,
) -> Result<T, KvError> {
    let (out, snapshot) = {
        let mut store = shared.store.write().map_err(poisoned)?;
        let out = f(store.vault_mut(vault).ok_or_else(vanished)?)?;
        let snapshot = match &shared.persister {
            Some(p) => Some(p.snapshot(&mut store).map_err(persist_failed)?),
            None => None,
        };
        (out, snapshot)
    };
    if let Some(snapshot) = snapshot {
        snapshot.write().await.map_err(persist_failed)?;
    }
    Ok(out)
}

fn persist_failed(e: crate::Error) -> KvError {
    tracing::error!(error = %e, "state file write failed");
    internal("the emulator could not persist its state")
}

/// An ok answer (200) with `body`.
pub(super) fn ok(body: Value) -> OpResult {
    Ok((200, body, None))
}
