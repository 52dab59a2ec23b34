//! The admin API (loopback, bearer admin token): health, request counters, fault rules, and
//! writes that bypass Key Vault's checks (seeding secrets, changing attributes).

use super::Resp;
use super::Shared;
use super::data_plane::write_vault;
use super::http::{check_name, constant_time_eq, header, json_response, path_segments, read_body};
use crate::admin::FaultRule;
use crate::error::ObjectKind;
use crate::store::{Attrs, Secret};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Resp {
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
    let segs = path_segments(&path);
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return json_response(400, &e.body()),
    };
    let bad = |m: String| json_response(400, &json!({ "error": m }));
    match (method.as_str(), segs.as_slice()) {
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
            })
            .await
            {
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
                vt.get_mut::<Secret>(name, None)?.attrs.apply(&v)
            })
            .await;
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
