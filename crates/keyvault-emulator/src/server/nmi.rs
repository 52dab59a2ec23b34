//! aad-pod-identity NMI: `/host/token` for a pod named in headers, with the identity assigned
//! to that pod.

use super::Resp;
use super::Shared;
use super::http::{header, json_response, query_map};
use super::imds::token_fields;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Resp {
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
