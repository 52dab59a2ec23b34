//! Deleted objects (soft delete): get, purge, recover, for secrets, keys and certificates alike.

use super::Shared;
use super::data_plane::{OpCtx, OpResult, internal, ok, read_vault, write_vault};
use crate::error::ObjectKind;
use crate::store;
use serde_json::Value;

pub(super) fn get(
    shared: &Shared,
    vault: &str,
    kind: ObjectKind,
    name: &str,
    ctx: &OpCtx<'_>,
) -> OpResult {
    let base = ctx.base;
    ok(read_vault(shared, vault, |v| {
        let d = v.deleted_entry(kind, name)?;
        let rendered = match kind {
            ObjectKind::Secret => d
                .secrets
                .as_ref()
                .and_then(|x| x.last())
                .map(|s| Ok(store::render_secret(base, s, false))),
            ObjectKind::Key => d
                .keys
                .as_ref()
                .and_then(|x| x.last())
                .map(|k| store::render_key(base, k)),
            ObjectKind::Certificate => d
                .certificates
                .as_ref()
                .and_then(|x| x.last())
                .map(|c| Ok(store::render_cert(base, c))),
        }
        .ok_or_else(|| internal("deleted entry without versions"))??;
        let stored_name = rendered_name(&rendered).unwrap_or_else(|| name.to_string());
        Ok(store::deleted_fields(
            base,
            kind,
            &stored_name,
            d.deleted_date,
            rendered,
        ))
    })?)
}

pub(super) async fn purge(shared: &Shared, vault: &str, kind: ObjectKind, name: &str) -> OpResult {
    write_vault(shared, vault, |v| v.purge(kind, name)).await?;
    Ok((204, Value::Null, None))
}

pub(super) async fn recover(
    shared: &Shared,
    vault: &str,
    kind: ObjectKind,
    name: &str,
    ctx: &OpCtx<'_>,
) -> OpResult {
    let base = ctx.base;
    ok(write_vault(shared, vault, |v| {
        v.recover(kind, name)?;
        match kind {
            ObjectKind::Secret => Ok(store::render_secret(base, v.secret(name, None)?, false)),
            ObjectKind::Key => store::render_key(base, v.key(name, None)?),
            ObjectKind::Certificate => Ok(store::render_cert(base, v.cert(name, None)?)),
        }
    })
    .await?)
}

/// The object name as stored (case preserved), from a rendered bundle's id / kid.
fn rendered_name(v: &Value) -> Option<String> {
    let id = v.get("id").or_else(|| v.pointer("/key/kid"))?.as_str()?;
    id.split('/').nth(4).map(str::to_string)
}
