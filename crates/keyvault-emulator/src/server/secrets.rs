//! Secrets: set, get, update, delete, list, list versions.

use super::Shared;
use super::data_plane::{OpCtx, OpResult, ok, page, read_vault, reject_if_deleted, write_vault};
use super::http::{check_name, parse_json, parse_tags};
use crate::error::{KvError, ObjectKind};
use crate::store::{self, Attrs};
use zeroize::Zeroizing;

/// Key Vault's limit on a secret value.
const MAX_SECRET_VALUE: usize = 25 * 1024;

pub(super) async fn set(
    shared: &Shared,
    vault: &str,
    name: &str,
    body: &[u8],
    ctx: &OpCtx<'_>,
) -> OpResult {
    let base = ctx.base;
    check_name(ObjectKind::Secret, name)?;
    let v = parse_json(body)?;
    let value = v.get("value").and_then(|x| x.as_str()).ok_or_else(|| {
        KvError::bad_parameter("The parameter 'value' is required and must be a string.")
    })?;
    if value.len() > MAX_SECRET_VALUE {
        return Err(KvError::bad_parameter(format!(
            "The secret value is too large (limit {MAX_SECRET_VALUE} bytes)."
        )));
    }
    let content_type = v
        .get("contentType")
        .and_then(|x| x.as_str())
        .map(str::to_string);
    let tags = parse_tags(&v)?;
    let mut attrs = Attrs::now();
    if let Some(a) = v.get("attributes") {
        attrs.apply(a)?;
    }
    let value = Zeroizing::new(value.to_string());
    let out = write_vault(shared, vault, |vt| {
                reject_if_deleted(vt, ObjectKind::Secret, name)?;
                if vt.certificates.contains_key(&name.to_ascii_lowercase()) {
                    return Err(KvError::new(
                        409,
                        "Conflict",
                        format!(
                            "Secret {name} is currently being used by a certificate and cannot be set directly."
                        ),
                    ));
                }
                Ok(store::render_secret(
                    base,
                    vt.set_secret(name, value, content_type, tags, attrs),
                    true,
                ))
            })
            .await?;
    ok(out)
}

pub(super) fn get(
    shared: &Shared,
    vault: &str,
    name: &str,
    version: Option<String>,
    ctx: &OpCtx<'_>,
) -> OpResult {
    ok(read_vault(shared, vault, |v| {
        Ok(store::render_secret(
            ctx.base,
            v.get_secret_checked(name, version.as_deref())?,
            true,
        ))
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
    let base = ctx.base;
    let b = parse_json(body)?;
    let tags = b.get("tags").map(|_| parse_tags(&b)).transpose()?;
    ok(write_vault(shared, vault, |v| {
        let ver = v.secret(name, version.as_deref())?.version.clone();
        let list = v
            .secrets
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(ObjectKind::Secret, name, None))?;
        let s = list
            .iter_mut()
            .find(|s| s.version == ver)
            .ok_or_else(|| KvError::not_found(ObjectKind::Secret, name, Some(&ver)))?;
        if let Some(a) = b.get("attributes") {
            s.attrs.apply(a)?;
        }
        if let Some(ct) = b.get("contentType") {
            s.content_type = ct.as_str().map(str::to_string);
        }
        if let Some(t) = tags {
            s.tags = t;
        }
        s.attrs.updated = store::now();
        Ok(store::render_secret(base, s, false))
    })
    .await?)
}

pub(super) async fn delete(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;
    let r = write_vault(shared, vault, |v| {
        let r = store::render_secret(base, v.secret(name, None)?, false);
        v.delete(ObjectKind::Secret, name)?;
        Ok(r)
    })
    .await?;
    ok(store::deleted_fields(
        base,
        ObjectKind::Secret,
        name,
        store::now(),
        r,
    ))
}

pub(super) fn list(shared: &Shared, vault: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;
    let items = read_vault(shared, vault, |v| {
        Ok(v.secrets
            .values()
            .filter_map(|vs| vs.last())
            .map(|s| store::render_secret_item(base, s, false))
            .collect::<Vec<_>>())
    })?;
    ok(page(ctx, "/secrets", items)?)
}

pub(super) fn list_versions(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;
    let items = read_vault(shared, vault, |v| {
        let list = v
            .secrets
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(ObjectKind::Secret, name, None))?;
        Ok(list
            .iter()
            .map(|s| store::render_secret_item(base, s, true))
            .collect::<Vec<_>>())
    })?;
    ok(page(ctx, &format!("/secrets/{name}/versions"), items)?)
}
