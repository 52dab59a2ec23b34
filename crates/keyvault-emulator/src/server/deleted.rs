//! Deleted objects (soft delete): get, purge, recover, for secrets, keys and certificates alike.

use super::data_plane::{OpCtx, OpResult, internal, ok};
use crate::error::{KvError, ObjectKind};
use crate::store::{self, Cert, Key, Object, Secret};
use serde_json::Value;

pub(super) fn get(ctx: &OpCtx<'_>, kind: ObjectKind, name: &str) -> OpResult {
    ok(ctx.read(|v| {
        let d = v.deleted_entry(kind, name)?;
        let (stored_name, bundle) = match kind {
            ObjectKind::Secret => newest(d.secrets.as_deref(), ctx.base),
            ObjectKind::Key => newest(d.keys.as_deref(), ctx.base),
            ObjectKind::Certificate => newest(d.certificates.as_deref(), ctx.base),
        }?;
        Ok(store::deleted_fields(
            ctx.base,
            kind,
            &stored_name,
            d.deleted_date,
            bundle,
        ))
    })?)
}

pub(super) async fn purge(ctx: &OpCtx<'_>, kind: ObjectKind, name: &str) -> OpResult {
    ctx.write(|v| v.purge(kind, name)).await?;
    Ok((204, Value::Null, None))
}

pub(super) async fn recover(ctx: &OpCtx<'_>, kind: ObjectKind, name: &str) -> OpResult {
    ok(ctx
        .write(|v| {
            v.recover(kind, name)?;
            match kind {
                ObjectKind::Secret => v.get::<Secret>(name, None)?.render(ctx.base),
                ObjectKind::Key => v.get::<Key>(name, None)?.render(ctx.base),
                ObjectKind::Certificate => v.get::<Cert>(name, None)?.render(ctx.base),
            }
        })
        .await?)
}

/// The stored name and the bundle of a deleted entry's newest version.
fn newest<T: Object>(versions: Option<&[T]>, base: &str) -> Result<(String, Value), KvError> {
    let o = versions
        .and_then(<[T]>::last)
        .ok_or_else(|| internal("deleted entry without versions"))?;
    Ok((o.name().to_string(), o.render(base)?))
}
