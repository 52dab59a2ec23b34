//! Entra ID: instance discovery, OpenID configuration, JWKS and the token endpoints (v1 and
//! v2, client secret or client assertion).

use super::http::{constant_time_eq, json_response, path_segments, query_map, read_body};
use super::{DropConnection, Resp, Shared, fault};
use crate::entra::{EntraError, Principal};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The operation name (counters and faults) of an Entra ID request; `None`: no such route.
fn operation(method: &str, segs: &[&str]) -> Option<&'static str> {
    Some(match (method, segs) {
        ("GET", [_, "discovery", "instance"]) => "InstanceDiscovery",
        ("GET", [_, "v2.0", ".well-known", "openid-configuration"])
        | ("GET", [_, ".well-known", "openid-configuration"]) => "OpenIdConfiguration",
        ("GET", [_, "discovery", "v2.0", "keys"]) | ("GET", [_, "discovery", "keys"]) => "Jwks",
        ("POST", [_, "oauth2", "v2.0", "token"]) | ("POST", [_, "oauth2", "token"]) => "Token",
        _ => return None,
    })
}

/// An injected fault's answer, Entra-shaped (`temporarily_unavailable` for 429, else
/// `server_error`).
fn fault_response(status: u16) -> Resp {
    let e = if status == 429 {
        EntraError::new(
            429,
            "temporarily_unavailable",
            50196,
            "The server is temporarily too busy to handle the request (injected by the emulator).",
        )
    } else {
        EntraError::new(
            status,
            "server_error",
            90000,
            "The service encountered an internal error (injected by the emulator).",
        )
    };
    json_response(status, &e.body())
}

pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_string();
    let segs = path_segments(&path);
    if let Some(op) = operation(req.method().as_str(), &segs) {
        fault::delay(&shared.telemetry, op, "").await;
        if let Some(r) = fault::apply(&shared.telemetry, op, "", fault_response)? {
            return Ok(r);
        }
    }
    Ok(route(shared, req, &path, &segs, false).await)
}

/// The AKS token proxy (identity binding): below its path prefix, an Entra ID path. It serves
/// the OpenID configuration and the token endpoint (what azidentity's proxy transport sends
/// through it); the token endpoint exchanges only identity-binding assertions. Counted and
/// faulted as `TokenProxyOpenIdConfiguration` / `TokenProxy`.
pub(super) async fn handle_proxy(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    let full = req.uri().path().to_string();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    {
        let mut hosts = crate::lock(&shared.token_proxy_hosts);
        if hosts.len() == super::PROXY_HOSTS_KEPT {
            hosts.pop_front();
        }
        hosts.push_back(authority);
    }
    let prefix = shared.token_proxy_path.trim_end_matches('/');
    let rest = full
        .strip_prefix(prefix)
        .filter(|r| r.starts_with('/'))
        .unwrap_or("")
        .to_string();
    let segs = path_segments(&rest);
    let op = match operation(req.method().as_str(), &segs) {
        Some("Token") => "TokenProxy",
        Some("OpenIdConfiguration") => "TokenProxyOpenIdConfiguration",
        _ => {
            shared.telemetry.count("TokenProxyUnknown", "", 404);
            return Ok(json_response(
                404,
                &json!({ "error": { "code": "NotFound", "message": format!("The token proxy has no route for {} {full}.", req.method()) } }),
            ));
        }
    };
    fault::delay(&shared.telemetry, op, "").await;
    if let Some(r) = fault::apply(&shared.telemetry, op, "", fault_response)? {
        return Ok(r);
    }
    Ok(route(shared, req, &rest, &segs, true).await)
}

async fn route(
    shared: &Shared,
    req: Request<Incoming>,
    path: &str,
    segs: &[&str],
    via_proxy: bool,
) -> Resp {
    let count = |op: &'static str, status: u16| {
        let op = match (via_proxy, op) {
            (true, "OpenIdConfiguration") => "TokenProxyOpenIdConfiguration",
            (_, op) => op,
        };
        shared.telemetry.count(op, "", status);
    };
    let query = query_map(&req);
    let method = req.method().clone();
    match (method.as_str(), segs) {
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
                count("OpenIdConfiguration", 400);
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
            count("OpenIdConfiguration", 200);
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
            token_endpoint(shared, req, &tenant, true, via_proxy).await
        }
        ("POST", [tenant, "oauth2", "token"]) => {
            let tenant = tenant.to_string();
            token_endpoint(shared, req, &tenant, false, via_proxy).await
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

async fn token_endpoint(
    shared: &Shared,
    req: Request<Incoming>,
    tenant: &str,
    v2: bool,
    via_proxy: bool,
) -> Resp {
    let result = token_inner(shared, req, tenant, v2, via_proxy).await;
    let op = if via_proxy { "TokenProxy" } else { "Token" };
    match result {
        Ok(body) => {
            shared.telemetry.count(op, "", 200);
            json_response(200, &body)
        }
        Err(e) => {
            shared.telemetry.count(op, "", e.status);
            tracing::info!(
                tenant,
                via_proxy,
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
    via_proxy: bool,
) -> Result<Value, EntraError> {
    let body = read_body(req)
        .await
        .map_err(|_| EntraError::invalid_request("The request body is too large."))?;
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map_err(|_| {
                EntraError::invalid_request(
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
            return Err(EntraError::missing("grant_type"));
        }
    }
    let client_id = get("client_id").ok_or_else(|| EntraError::missing("client_id"))?;
    let principal: &Principal = shared
        .dir
        .principals
        .get(&client_id.to_ascii_lowercase())
        .filter(|p| p.tenant.eq_ignore_ascii_case(tenant))
        .ok_or_else(|| EntraError::new(400, "unauthorized_client", 700016, format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")))?;
    if via_proxy && get("client_assertion").is_none() {
        return Err(EntraError::invalid_request(
            "The token proxy exchanges only client assertions (a service-account token for api://AKSIdentityBinding).",
        ));
    }
    if let Some(secret) = get("client_secret") {
        let ok = principal
            .client_secret
            .as_ref()
            .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()));
        if !ok {
            return Err(EntraError::invalid_client(
                401,
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
        shared
            .dir
            .validate_assertion(principal, assertion, via_proxy)
            .await?;
    } else {
        return Err(EntraError::invalid_client(
            400,
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    let resource = if v2 {
        let scope = get("scope").ok_or_else(|| EntraError::missing("scope"))?;
        scope
            .split(' ')
            .find_map(|s| s.strip_suffix("/.default"))
            .ok_or_else(|| EntraError::new(400, "invalid_scope", 1002012, format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")))?
            .to_string()
    } else {
        get("resource")
            .ok_or_else(|| EntraError::missing("resource"))?
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
