//! IMDS: the managed-identity token endpoint (`/metadata/identity/oauth2/token`).

use super::http::{header, json_response, query_map};
use super::{DropConnection, Resp, Shared, fault};
use crate::entra::Principal;
use crate::store;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Value, json};

/// The token fields IMDS answers with (NMI answers a subset).
pub(super) fn token_fields(
    shared: &Shared,
    p: &Principal,
    resource: &str,
) -> Result<Value, String> {
    let now = store::now();
    let lifetime = i64::try_from(shared.token_lifetime.as_secs()).unwrap_or(i64::MAX);
    let (token, exp) = cached_or_issued(shared, p, resource, now, lifetime)?;
    let expires_in = (exp - now).clamp(0, lifetime);
    Ok(json!({
        "access_token": token,
        "client_id": p.client_id,
        "expires_in": expires_in.to_string(),
        "expires_on": exp.to_string(),
        "ext_expires_in": expires_in.to_string(),
        "not_before": (exp - lifetime - 300).to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
}

/// The managed identity endpoint's token cache: Azure's IMDS answers repeated requests for one
/// identity and resource with the same token (its `expires_in` counting down) and issues a new
/// one only once the cached one has less than half its lifetime (and at least 5 minutes) left, so
/// a client refreshing ahead of expiry always gets a fresh one. Besides fidelity, this keeps
/// the emulator's RSA signing (a few ms with the pure-Rust `rsa` crate) out of latency figures.
fn cached_or_issued(
    shared: &Shared,
    p: &Principal,
    resource: &str,
    now: i64,
    lifetime: i64,
) -> Result<(String, i64), String> {
    let key = (p.client_id.clone(), resource.to_string());
    let mut cache = shared
        .mi_tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((token, exp)) = cache.get(&key)
        && exp - now > (lifetime / 2).max(300)
    {
        return Ok((token.clone(), *exp));
    }
    let (token, exp) = shared.signer.issue(p, resource, shared.token_lifetime)?;
    // Bounded: one entry per declared identity and resource a client asked for.
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(key, (token.clone(), exp));
    Ok((token, exp))
}

/// IMDS's error shape: `{"error","error_description"}`.
fn error_body(error: &str, desc: &str) -> Value {
    json!({ "error": error, "error_description": desc })
}

/// An injected fault's answer (IMDS answers 429 when too many requests reach it).
fn fault_response(status: u16) -> Resp {
    let body = if status == 429 {
        error_body(
            "too_many_requests",
            "Too many requests (injected by the emulator).",
        )
    } else {
        error_body(
            "unknown_error",
            "The service encountered an internal error (injected by the emulator).",
        )
    };
    json_response(status, &body)
}

pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    fault::delay(&shared.telemetry, "Imds", "").await;
    let q = query_map(&req);
    let err = |status: u16, error: &str, desc: &str| {
        shared.telemetry.count("Imds", "", status);
        Ok(json_response(status, &error_body(error, desc)))
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
    // A well-formed call (the header and resource a probe may lack): the route's faults apply.
    if let Some(r) = fault::apply(&shared.telemetry, "Imds", "", fault_response)? {
        return Ok(r);
    }
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
            Ok(json_response(200, &body))
        }
        Err(e) => err(500, "unknown_error", &e),
    }
}
