//! Request and response helpers shared by every endpoint.

use super::Resp;
use crate::error::{KvError, ObjectKind};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Largest request body accepted (a PFX import with a long chain fits easily).
pub(super) const MAX_BODY: usize = 1 << 20;

// === helpers ===

pub(super) fn json_response(status: u16, body: &Value) -> Resp {
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

pub(super) fn set_header(r: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

pub(super) fn kv_response(status: u16, body: &Value, client_request_id: Option<&str>) -> Resp {
    let mut r = json_response(status, body);
    set_header(&mut r, "x-ms-request-id", &uuid::Uuid::new_v4().to_string());
    set_header(&mut r, "x-ms-keyvault-service-version", "1.9.0.0-emulator");
    set_header(&mut r, "x-ms-keyvault-region", "local");
    if let Some(id) = client_request_id {
        set_header(&mut r, "x-ms-client-request-id", id);
    }
    r
}

pub(super) fn query_map(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

pub(super) fn host_of(req: &Request<Incoming>) -> String {
    req.headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// `/a/b/c` → `["a", "b", "c"]` (a trailing `/` gives a last empty segment).
pub(super) fn path_segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

pub(super) fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, KvError> {
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

pub(super) fn parse_json(body: &[u8]) -> Result<Value, KvError> {
    if body.is_empty() {
        return Err(KvError::bad_parameter("The request body is missing."));
    }
    serde_json::from_slice(body)
        .map_err(|e| KvError::bad_parameter(format!("The request body is not valid JSON: {e}")))
}

pub(super) fn parse_tags(v: &Value) -> Result<BTreeMap<String, String>, KvError> {
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

pub(super) fn check_name(kind: ObjectKind, name: &str) -> Result<(), KvError> {
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
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
