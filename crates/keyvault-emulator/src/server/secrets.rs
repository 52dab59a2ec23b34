//! Secrets: set, get, and what an update changes (list, list versions, update's lookup and
//! delete are in [`super::objects`]).

use super::data_plane::{OpCtx, OpResult, ok, reject_if_deleted};
use super::http::{check_name, parse_json, parse_tags};
use super::objects::{self, Patch};
use crate::error::{KvError, ObjectKind};
use crate::store::{self, Attrs, Secret};
use zeroize::Zeroizing;

/// Key Vault's limit on a secret value.
const MAX_SECRET_VALUE: usize = 25 * 1024;

pub(super) async fn set(ctx: &OpCtx<'_>, name: &str, body: &[u8]) -> OpResult {
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
    let out = ctx
        .write(|vt| {
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
                ctx.base,
                vt.set_secret(name, value, content_type, tags, attrs),
                true,
            ))
        })
        .await?;
    ok(out)
}

/// Get: the version with its value (a disabled version is forbidden).
pub(super) fn get(ctx: &OpCtx<'_>, name: &str, version: Option<&str>) -> OpResult {
    ok(ctx.read(|v| {
        let s = v.get_enabled::<Secret>(name, version)?;
        Ok(store::render_secret(ctx.base, s, true))
    })?)
}

/// Update: attributes, content type, tags.
pub(super) async fn update(
    ctx: &OpCtx<'_>,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> OpResult {
    objects::update(
        ctx,
        name,
        version,
        Patch::parse(body)?,
        |s: &mut Secret, b| {
            if let Some(a) = b.get("attributes") {
                s.attrs.apply(a)?;
            }
            if let Some(ct) = b.get("contentType") {
                s.content_type = ct.as_str().map(str::to_string);
            }
            s.attrs.updated = store::now();
            Ok(())
        },
    )
    .await
}
