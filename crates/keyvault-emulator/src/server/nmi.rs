//! aad-pod-identity NMI: `/host/token` for a pod named in headers, with the identity assigned
//! to that pod.

use super::http::{header, json_response, query_map};
use super::imds::token_fields;
use super::{DropConnection, Resp, Shared, fault};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

/// NMI's error shape: a line of text.
fn text_response(status: u16, msg: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    fault::delay(&shared.telemetry, "Nmi", "").await;
    let q = query_map(&req);
    let text = |status: u16, msg: &str| {
        shared.telemetry.count("Nmi", "", status);
        Ok(text_response(status, msg))
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
    // A well-formed call: the route's faults apply.
    let injected = fault::apply(&shared.telemetry, "Nmi", "", |status| {
        text_response(status, "failed to get token (injected by the emulator)")
    })?;
    if let Some(r) = injected {
        return Ok(r);
    }
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
            Ok(json_response(
                200,
                &json!({ "token": token, "clientid": p.client_id }),
            ))
        }
        Err(e) => text(500, &e),
    }
}
