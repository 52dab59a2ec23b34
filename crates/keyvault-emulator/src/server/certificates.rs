//! Certificates: import (PFX or PEM), create (self-signed), pending operation, policy, get,
//! update, delete, list, list versions.

use super::Shared;
use super::data_plane::{
    OpCtx, OpResult, internal, ok, page, read_vault, reject_if_deleted, write_vault,
};
use super::http::{check_name, parse_json, parse_tags};
use crate::certs::{self, CT_PKCS12};
use crate::error::{KvError, ObjectKind};
use crate::store;
use serde_json::{Value, json};
use zeroize::Zeroizing;

pub(super) async fn import(
    shared: &Shared,
    vault: &str,
    name: &str,
    body: &[u8],
    ctx: &OpCtx<'_>,
) -> OpResult {
    let base = ctx.base;

    check_name(ObjectKind::Certificate, name)?;
    let b = parse_json(body)?;
    let value = Zeroizing::new(
        b.get("value")
            .and_then(|x| x.as_str())
            .ok_or_else(|| KvError::bad_parameter("The parameter 'value' is required."))?
            .to_string(),
    );
    let pwd = Zeroizing::new(
        b.get("pwd")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string(),
    );
    let policy = b.get("policy").cloned().unwrap_or_else(|| json!({}));
    let content_type = policy
        .pointer("/secret_props/contentType")
        .and_then(|x| x.as_str())
        .unwrap_or(CT_PKCS12)
        .to_string();
    // PKCS#12 key derivation (PBKDF2) is CPU work: off the async threads.
    let bundle = tokio::task::spawn_blocking(move || certs::parse_import(&value, &pwd))
        .await
        .map_err(internal)?
        .map_err(|e| {
            KvError::bad_parameter(format!("The certificate could not be imported: {e}"))
        })?;
    let tags = parse_tags(&b)?;
    let enabled = b
        .pointer("/attributes/enabled")
        .and_then(|x| x.as_bool())
        .unwrap_or(true);
    ok(write_vault(shared, vault, |v| {
        reject_if_deleted(v, ObjectKind::Certificate, name)?;
        Ok(store::render_cert(
            base,
            v.add_certificate(name, bundle, &content_type, tags, enabled, policy)?,
        ))
    })
    .await?)
}

pub(super) async fn create(
    shared: &Shared,
    vault: &str,
    name: &str,
    body: &[u8],
    ctx: &OpCtx<'_>,
) -> OpResult {
    let base = ctx.base;

    check_name(ObjectKind::Certificate, name)?;
    let b = parse_json(body)?;
    let policy = b
        .get("policy")
        .cloned()
        .ok_or_else(|| KvError::bad_parameter("The parameter 'policy' is required."))?;
    let issuer = policy
        .pointer("/issuer/name")
        .and_then(|x| x.as_str())
        .unwrap_or("Self");
    if !issuer.eq_ignore_ascii_case("self") {
        return Err(KvError::bad_parameter(format!(
            "Issuer '{issuer}' is not supported by the emulator; use 'Self'."
        )));
    }
    let kty = policy
        .pointer("/key_props/kty")
        .and_then(|x| x.as_str())
        .unwrap_or("RSA");
    let size = policy
        .pointer("/key_props/key_size")
        .and_then(|x| x.as_u64())
        .map(|x| x as u32);
    let crv = policy.pointer("/key_props/crv").and_then(|x| x.as_str());
    let subject = policy
        .pointer("/x509_props/subject")
        .and_then(|x| x.as_str())
        .unwrap_or("CN=emulator")
        .to_string();
    let dns: Vec<String> = policy
        .pointer("/x509_props/sans/dns_names")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let months = policy
        .pointer("/x509_props/validity_months")
        .and_then(|x| x.as_u64())
        .unwrap_or(12) as u32;
    let content_type = policy
        .pointer("/secret_props/contentType")
        .and_then(|x| x.as_str())
        .unwrap_or(CT_PKCS12)
        .to_string();
    let key = super::keys::generate(kty, size, crv).await?;
    let bundle =
        tokio::task::spawn_blocking(move || certs::self_signed(key, &subject, &dns, months))
            .await
            .map_err(internal)?
            .map_err(|e| KvError::bad_parameter(e.to_string()))?;
    let tags = parse_tags(&b)?;
    let enabled = b
        .pointer("/attributes/enabled")
        .and_then(|x| x.as_bool())
        .unwrap_or(true);
    let stored = write_vault(shared, vault, |v| {
        reject_if_deleted(v, ObjectKind::Certificate, name)?;
        Ok(
            v.add_certificate(name, bundle, &content_type, tags, enabled, policy)?
                .name
                .clone(),
        )
    })
    .await?;
    // Like Key Vault: the create answer is "inProgress"; the pending resource then says
    // "completed" (issuance is immediate here). SDK pollers rely on that first state.
    let mut pending = pending_op(base, &stored);
    pending["status"] = json!("inProgress");
    pending["status_details"] = json!(
        "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later."
    );
    Ok((
        202,
        pending,
        Some(format!(
            "{base}/certificates/{stored}/pending?api-version={}",
            ctx.api_version
        )),
    ))
}

pub(super) fn pending(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;

    let stored = read_vault(shared, vault, |v| Ok(v.cert(name, None)?.name.clone()))?;
    ok(pending_op(base, &stored))
}

pub(super) fn policy(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;
    ok(read_vault(shared, vault, |v| {
        let c = v.cert(name, None)?;
        let mut p = c.policy.clone();
        p["id"] = json!(format!("{base}/certificates/{}/policy", c.name));
        Ok(p)
    })?)
}

pub(super) fn get(
    shared: &Shared,
    vault: &str,
    name: &str,
    version: Option<String>,
    ctx: &OpCtx<'_>,
) -> OpResult {
    let base = ctx.base;
    ok(read_vault(shared, vault, |v| {
        Ok(store::render_cert(base, v.cert(name, version.as_deref())?))
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
        let ver = v.cert(name, version.as_deref())?.version.clone();
        let list = v
            .certificates
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(ObjectKind::Certificate, name, None))?;
        let c = list
            .iter_mut()
            .find(|c| c.version == ver)
            .ok_or_else(|| KvError::not_found(ObjectKind::Certificate, name, Some(&ver)))?;
        if let Some(e) = b.pointer("/attributes/enabled").and_then(|x| x.as_bool()) {
            c.attrs.enabled = e;
        }
        if let Some(t) = tags {
            c.tags = t;
        }
        c.attrs.updated = store::now();
        Ok(store::render_cert(base, c))
    })
    .await?)
}

pub(super) async fn delete(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;

    let r = write_vault(shared, vault, |v| {
        let r = store::render_cert(base, v.cert(name, None)?);
        v.delete(ObjectKind::Certificate, name)?;
        Ok(r)
    })
    .await?;
    ok(store::deleted_fields(
        base,
        ObjectKind::Certificate,
        name,
        store::now(),
        r,
    ))
}

pub(super) fn list(shared: &Shared, vault: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;

    let items = read_vault(shared, vault, |v| {
        Ok(v.certificates
            .values()
            .filter_map(|vs| vs.last())
            .map(|c| store::render_cert_item(base, c, false))
            .collect::<Vec<_>>())
    })?;
    ok(page(ctx, "/certificates", items)?)
}

pub(super) fn list_versions(shared: &Shared, vault: &str, name: &str, ctx: &OpCtx<'_>) -> OpResult {
    let base = ctx.base;

    let items = read_vault(shared, vault, |v| {
        let list = v
            .certificates
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(ObjectKind::Certificate, name, None))?;
        Ok(list
            .iter()
            .map(|c| store::render_cert_item(base, c, true))
            .collect::<Vec<_>>())
    })?;
    ok(page(ctx, &format!("/certificates/{name}/versions"), items)?)
}

/// The pending-operation resource of a certificate (issuance is immediate here: "completed").
fn pending_op(base: &str, name: &str) -> Value {
    json!({
        "id": format!("{base}/certificates/{name}/pending"),
        "issuer": { "name": "Self" },
        "cancellation_requested": false,
        "status": "completed",
        "target": format!("{base}/certificates/{name}"),
        "request_id": uuid::Uuid::new_v4().simple().to_string(),
    })
}
