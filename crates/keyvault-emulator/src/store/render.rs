//! Rendering in Key Vault's wire shapes: bundles and list items of secrets, keys and
//! certificates, and the fields a deleted entry adds.

use super::{Cert, Key, PURGE_AFTER_SECS, Secret};
use crate::certs;
use crate::error::{KvError, ObjectKind};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `deletedsecrets`, `deletedkeys`, `deletedcertificates` entries: rendered bundle plus dates.
pub(crate) fn deleted_fields(
    base: &str,
    kind: ObjectKind,
    name: &str,
    deleted_date: i64,
    mut v: Value,
) -> Value {
    let collection = match kind {
        ObjectKind::Secret => "deletedsecrets",
        ObjectKind::Key => "deletedkeys",
        ObjectKind::Certificate => "deletedcertificates",
    };
    v["recoveryId"] = json!(format!("{base}/{collection}/{name}"));
    v["deletedDate"] = json!(deleted_date);
    v["scheduledPurgeDate"] = json!(deleted_date + PURGE_AFTER_SECS);
    v
}

fn tags_json(tags: &BTreeMap<String, String>) -> Option<Value> {
    (!tags.is_empty()).then(|| json!(tags))
}

pub(crate) fn render_secret(base: &str, s: &Secret, with_value: bool) -> Value {
    let mut v = json!({
        "id": format!("{base}/secrets/{}/{}", s.name, s.version),
        "attributes": s.attrs.render(),
    });
    if with_value {
        v["value"] = json!(s.value.0.as_str());
    }
    if let Some(ct) = &s.content_type {
        v["contentType"] = json!(ct);
    }
    if let Some(t) = tags_json(&s.tags) {
        v["tags"] = t;
    }
    if s.managed {
        v["managed"] = json!(true);
        v["kid"] = json!(format!("{base}/keys/{}/{}", s.name, s.version));
    }
    v
}

/// A list item: the id has no version (for "list") or has it (for "list versions").
pub(crate) fn render_secret_item(base: &str, s: &Secret, versioned: bool) -> Value {
    let mut v = render_secret(base, s, false);
    if !versioned {
        v["id"] = json!(format!("{base}/secrets/{}", s.name));
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("kid");
    }
    v
}

/// Key attributes as Key Vault returns them (RSA carries `key_size`; `hsmPlatform` "0" for software keys).
fn key_attrs(k: &Key) -> Value {
    let mut attrs = k.attrs.render();
    if let Some(size) = k.material.key_size {
        attrs["key_size"] = json!(size);
    }
    attrs["exportable"] = json!(k.managed);
    attrs["hsmPlatform"] = json!("0");
    attrs
}

pub(crate) fn render_key(base: &str, k: &Key) -> Result<Value, KvError> {
    let mut jwk = k
        .material
        .public_jwk_fields()
        .map_err(|e| KvError::new(500, "InternalServerError", e.to_string()))?;
    jwk.insert(
        "kid".into(),
        json!(format!("{base}/keys/{}/{}", k.name, k.version)),
    );
    jwk.insert("key_ops".into(), json!(k.key_ops));
    let attrs = key_attrs(k);
    let mut v = json!({ "key": Value::Object(jwk), "attributes": attrs });
    if let Some(t) = tags_json(&k.tags) {
        v["tags"] = t;
    }
    if k.managed {
        v["managed"] = json!(true);
    }
    Ok(v)
}

pub(crate) fn render_key_item(base: &str, k: &Key, versioned: bool) -> Value {
    let kid = if versioned {
        format!("{base}/keys/{}/{}", k.name, k.version)
    } else {
        format!("{base}/keys/{}", k.name)
    };
    let attrs = key_attrs(k);
    let mut v = json!({ "kid": kid, "attributes": attrs });
    if let Some(t) = tags_json(&k.tags) {
        v["tags"] = t;
    }
    if k.managed {
        v["managed"] = json!(true);
    }
    v
}

fn cert_leaf(c: &Cert) -> Vec<u8> {
    c.chain
        .first()
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_default()
}

pub(crate) fn render_cert(base: &str, c: &Cert) -> Value {
    let leaf = cert_leaf(c);
    let x5t = certs::leaf_info(&leaf).map(|i| i.x5t).unwrap_or_default();
    let mut policy = c.policy.clone();
    policy["id"] = json!(format!("{base}/certificates/{}/policy", c.name));
    let mut v = json!({
        "id": format!("{base}/certificates/{}/{}", c.name, c.version),
        "kid": format!("{base}/keys/{}/{}", c.name, c.version),
        "sid": format!("{base}/secrets/{}/{}", c.name, c.version),
        "x5t": x5t,
        "cer": STANDARD.encode(&leaf),
        "attributes": c.attrs.render(),
        "policy": policy,
    });
    if let Some(t) = tags_json(&c.tags) {
        v["tags"] = t;
    }
    v
}

pub(crate) fn render_cert_item(base: &str, c: &Cert, versioned: bool) -> Value {
    let leaf = cert_leaf(c);
    let x5t = certs::leaf_info(&leaf).map(|i| i.x5t).unwrap_or_default();
    let id = if versioned {
        format!("{base}/certificates/{}/{}", c.name, c.version)
    } else {
        format!("{base}/certificates/{}", c.name)
    };
    let mut v = json!({ "id": id, "x5t": x5t, "attributes": c.attrs.render() });
    if let Some(t) = tags_json(&c.tags) {
        v["tags"] = t;
    }
    v
}
