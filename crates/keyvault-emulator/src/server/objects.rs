//! What secrets, keys and certificates share on the data plane: list and list versions (paged),
//! update's lookup and tags, and delete. Each kind's own operations (set, create, import, get,
//! the fields an update changes) are in [`super::secrets`], [`super::keys`] and
//! [`super::certificates`].

use super::data_plane::{OpCtx, OpResult, ok};
use super::http::{parse_json, parse_tags};
use crate::error::KvError;
use crate::store::{self, Object};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// List: the newest version of every object of the kind.
pub(super) fn list<T: Object>(ctx: &OpCtx<'_>) -> OpResult {
    let items = ctx.read(|v| {
        Ok(v.latest::<T>()
            .map(|o| o.render_item(ctx.base, false))
            .collect())
    })?;
    ok(page(ctx, &format!("/{}", T::KIND.collection()), items)?)
}

/// List versions: every version of one object, oldest first.
pub(super) fn list_versions<T: Object>(ctx: &OpCtx<'_>, name: &str) -> OpResult {
    let items = ctx.read(|v| {
        Ok(v.versions::<T>(name)?
            .iter()
            .map(|o| o.render_item(ctx.base, true))
            .collect())
    })?;
    let path = format!("/{}/{name}/versions", T::KIND.collection());
    ok(page(ctx, &path, items)?)
}

/// The body of an update (PATCH): its JSON, and its tags when it has any.
pub(super) struct Patch {
    pub(super) body: Value,
    tags: Option<BTreeMap<String, String>>,
}

impl Patch {
    pub(super) fn parse(body: &[u8]) -> Result<Patch, KvError> {
        let body = parse_json(body)?;
        let tags = body.get("tags").map(|_| parse_tags(&body)).transpose()?;
        Ok(Patch { body, tags })
    }
}

/// Update: `apply` takes the kind's fields from the body, then the tags are replaced (when the
/// body has them); answers the updated version.
pub(super) async fn update<T: Object>(
    ctx: &OpCtx<'_>,
    name: &str,
    version: Option<&str>,
    patch: Patch,
    apply: impl FnOnce(&mut T, &Value) -> Result<(), KvError>,
) -> OpResult {
    ok(ctx
        .write(|v| {
            let o = v.get_mut::<T>(name, version)?;
            apply(o, &patch.body)?;
            if let Some(tags) = patch.tags {
                *o.tags_mut() = tags;
            }
            o.render(ctx.base)
        })
        .await?)
}

/// Delete (soft): answers the newest version with the deleted entry's fields.
pub(super) async fn delete<T: Object>(ctx: &OpCtx<'_>, name: &str) -> OpResult {
    let bundle = ctx
        .write(|v| {
            let bundle = v.get::<T>(name, None)?.render(ctx.base)?;
            v.delete(T::KIND, name)?;
            Ok(bundle)
        })
        .await?;
    ok(store::deleted_fields(
        ctx.base,
        T::KIND,
        name,
        store::now(),
        bundle,
    ))
}

/// One page of `items` (`maxresults`, 1-25, default 25; `$skiptoken`), with the `nextLink` to
/// `path` for the rest.
fn page(ctx: &OpCtx<'_>, path: &str, items: Vec<Value>) -> Result<Value, KvError> {
    let max = match ctx.query.get("maxresults") {
        None => 25,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(KvError::bad_parameter(
                    "maxresults must be between 1 and 25",
                ));
            }
        },
    };
    let skip = ctx
        .query
        .get("$skiptoken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let end = skip.saturating_add(max).min(items.len());
    let value: Vec<Value> = items
        .get(skip..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len()).then(|| {
        format!(
            "{}{path}?api-version={}&$skiptoken={end}&maxresults={max}",
            ctx.base, ctx.api_version
        )
    });
    Ok(json!({ "value": value, "nextLink": next }))
}
