//! Keys: create (generated here), import (JWK), get, and what an update changes (list, list
//! versions, update's lookup and delete are in [`super::objects`]).

use super::data_plane::{OpCtx, OpResult, internal, ok, reject_if_deleted};
use super::http::{check_name, parse_json, parse_tags};
use super::objects::{self, Patch};
use crate::error::{KvError, ObjectKind};
use crate::keys::KeyMaterial;
use crate::store::{Attrs, Key, Object};
use serde_json::Value;

/// Generates key material on the blocking pool: an RSA key takes from tens of milliseconds to
/// seconds, which an async worker thread must not spend.
pub(super) async fn generate(
    kty: &str,
    size: Option<u32>,
    crv: Option<&str>,
) -> Result<KeyMaterial, KvError> {
    let (kty, crv) = (kty.to_string(), crv.map(str::to_string));
    tokio::task::spawn_blocking(move || KeyMaterial::generate(&kty, size, crv.as_deref()))
        .await
        .map_err(internal)?
        .map_err(|e| KvError::bad_parameter(e.to_string()))
}

pub(super) async fn create(ctx: &OpCtx<'_>, name: &str, body: &[u8]) -> OpResult {
    check_name(ObjectKind::Key, name)?;
    let b = parse_json(body)?;
    let kty = b
        .get("kty")
        .and_then(|x| x.as_str())
        .ok_or_else(|| KvError::bad_parameter("The parameter 'kty' is required."))?;
    let size = b.get("key_size").and_then(|x| x.as_u64()).map(|x| x as u32);
    let crv = b.get("crv").and_then(|x| x.as_str());
    let material = generate(kty, size, crv).await?;
    let key_ops = key_ops_of(&b)?;
    add(ctx, name, &b, material, key_ops).await
}

pub(super) async fn import(ctx: &OpCtx<'_>, name: &str, body: &[u8]) -> OpResult {
    check_name(ObjectKind::Key, name)?;
    let b = parse_json(body)?;
    let jwk = b
        .get("key")
        .ok_or_else(|| KvError::bad_parameter("The parameter 'key' is required."))?;
    let material = KeyMaterial::from_jwk(jwk).map_err(|e| KvError::bad_parameter(e.to_string()))?;
    let key_ops = key_ops_of(jwk)?;
    add(ctx, name, &b, material, key_ops).await
}

/// The common tail of create and import: tags and attributes from the body, then a new version.
async fn add(
    ctx: &OpCtx<'_>,
    name: &str,
    b: &Value,
    material: KeyMaterial,
    key_ops: Option<Vec<String>>,
) -> OpResult {
    let tags = parse_tags(b)?;
    let mut attrs = Attrs::now();
    if let Some(a) = b.get("attributes") {
        attrs.apply(a)?;
    }
    ok(ctx
        .write(|v| {
            reject_if_deleted(v, ObjectKind::Key, name)?;
            v.add_key(name, material, key_ops, tags, attrs, false, None)
                .render(ctx.base)
        })
        .await?)
}

/// Get: the public key (a disabled version is forbidden).
pub(super) fn get(ctx: &OpCtx<'_>, name: &str, version: Option<&str>) -> OpResult {
    ok(ctx.read(|v| v.get_enabled::<Key>(name, version)?.render(ctx.base))?)
}

/// Update: attributes, operations, tags.
pub(super) async fn update(
    ctx: &OpCtx<'_>,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> OpResult {
    let patch = Patch::parse(body)?;
    let key_ops = key_ops_of(&patch.body)?;
    objects::update(ctx, name, version, patch, |k: &mut Key, b| {
        if let Some(a) = b.get("attributes") {
            k.attrs.apply(a)?;
        }
        if let Some(ops) = key_ops {
            k.key_ops = ops;
        }
        Ok(())
    })
    .await
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
