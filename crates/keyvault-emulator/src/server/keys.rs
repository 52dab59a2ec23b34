//! Keys: create (generated here), import (JWK), get, update, delete, list, list versions.

use super::Shared;
use super::data_plane::{
    OpCtx, OpResult, internal, ok, page, read_vault, reject_if_deleted, write_vault,
};
use super::http::{check_name, parse_json, parse_tags};
use crate::error::{KvError, ObjectKind};
use crate::keys::KeyMaterial;
use crate::store::{self, Attrs};
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

pub(super) async fn create(
    shared: &Shared,
    vault: &str,
    name: &str,
    body: &[u8],
    ctx: &OpCtx<'_>,
) -> OpResult {
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
    add(shared, vault, name, &b, material, key_ops, ctx).await
}

pub(super) async fn import(
    shared: &Shared,
    vault: &str,
    name: &str,
    body: &[u8],
    ctx: &OpCtx<'_>,
) -> OpResult {
    check_name(ObjectKind::Key, name)?;
    let b = parse_json(body)?;
    let jwk = b
        .get("key")
        .ok_or_else(|| KvError::bad_parameter("The parameter 'key' is required."))?;
    let material = KeyMaterial::from_jwk(jwk).map_err(|e| KvError::bad_parameter(e.to_string()))?;
    let key_ops = key_ops_of(jwk)?;
    add(shared, vault, name, &b, material, key_ops, ctx).await
}

/// The common tail of create and import: tags and attributes from the body, then a new version.
async fn add(
    shared: &Shared,
    vault: &str,
    name: &str,
    b: &Value,
    material: KeyMaterial,
    key_ops: Option<Vec<String>>,
    ctx: &OpCtx<'_>,
) -> OpResult {
    let tags = parse_tags(b)?;
    let mut attrs = Attrs::now();
    if let Some(a) = b.get("attributes") {
        attrs.apply(a)?;
    }
    ok(write_vault(shared, vault, |v| {
        reject_if_deleted(v, ObjectKind::Key, name)?;
        store::render_key(
            ctx.base,
            v.add_key(name, material, key_ops, tags, attrs, false, None),
        )
    })
    .await?)
}

pub(super) fn get(
    shared: &Shared,
    vault: &str,
    name: &str,
    version: Option<String>,
    ctx: &OpCtx<'_>,
) -> OpResult {
    ok(read_vault(shared, vault, |v| {
        store::render_key(ctx.base, v.get_key_checked(name, version.as_deref())?)
    })?)
}

pub(super) async fn update(
    shared: &Shared,
    vault: &str,
    name: &str,
    version: Option<String>,
    body: &[u8],
    ctx: &OpCtx<'_>,
) -> OpResult {
    let b = parse_json(body)?;
    let tags = b.get("tags").map(|_| parse_tags(&b)).transpose()?;
    let key_ops = key_ops_of(&b)?;
    ok(write_vault(shared, vault, |v| {
        let ver = v.key(name, version.as_deref())?.version.clone();
        let list = v
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(ObjectKind::Key, name, None))?;
        let k = list
            .iter_mut()
            .find(|k| k.version == ver)
            .ok_or_else(|| KvError::not_found(ObjectKind::Key, name, Some(&ver)))?;
        if let Some(a) = b.get("attributes") {
            k.attrs.apply(a)?;
        }
        if let Some(t) = tags {
            k.tags = t;
        }
        if let Some(ops) = key_ops {
            k.key_ops = ops;
        }
        store::render_key(ctx.base, k)
    })
    .await?)
}

pub(super) async fn delete(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let r = write_vault(shared, vault, |v| {
        let r = store::render_key(ctx.base, v.key(name, None)?)?;
        v.delete(ObjectKind::Key, name)?;
        Ok(r)
    })
    .await?;
    ok(store::deleted_fields(
        ctx.base,
        ObjectKind::Key,
        name,
        store::now(),
        r,
    ))
}

pub(super) fn list(shared: &Shared, vault: &str, ctx: &OpCtx<'_>) -> OpResult {
    let items = read_vault(shared, vault, |v| {
        Ok(v.keys
            .values()
            .filter_map(|vs| vs.last())
            .map(|k| store::render_key_item(ctx.base, k, false))
            .collect::<Vec<_>>())
    })?;
    ok(page(ctx, "/keys", items)?)
}

pub(super) fn list_versions(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let items = read_vault(shared, vault, |v| {
        let list = v
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(ObjectKind::Key, name, None))?;
        Ok(list
            .iter()
            .map(|k| store::render_key_item(ctx.base, k, true))
            .collect::<Vec<_>>())
    })?;
    ok(page(ctx, &format!("/keys/{name}/versions"), items)?)
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
