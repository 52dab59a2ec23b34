//! Certificates: import (PFX or PEM), create (self-signed), pending operation, policy, get, and
//! what an update changes (list, list versions, update's lookup and delete are in
//! [`super::objects`]).

use super::data_plane::{OpCtx, OpResult, internal, ok, reject_if_deleted};
use super::http::{check_name, parse_json, parse_tags};
use super::objects::{self, Patch};
use crate::certs::{self, Bundle, CT_PKCS12};
use crate::error::{KvError, ObjectKind};
use crate::store::{self, Cert, Object};
use serde_json::{Value, json};
use zeroize::Zeroizing;

pub(super) async fn import(ctx: &OpCtx<'_>, name: &str, body: &[u8]) -> OpResult {
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
    // PKCS#12 key derivation (PBKDF2) is CPU work: off the async threads.
    let bundle = tokio::task::spawn_blocking(move || certs::parse_import(&value, &pwd))
        .await
        .map_err(internal)?
        .map_err(|e| {
            KvError::bad_parameter(format!("The certificate could not be imported: {e}"))
        })?;
    ok(add(ctx, name, &b, bundle, policy, |c| {
        store::render_cert(ctx.base, c)
    })
    .await?)
}

pub(super) async fn create(ctx: &OpCtx<'_>, name: &str, body: &[u8]) -> OpResult {
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
    let key = super::keys::generate(kty, size, crv).await?;
    let bundle =
        tokio::task::spawn_blocking(move || certs::self_signed(key, &subject, &dns, months))
            .await
            .map_err(internal)?
            .map_err(|e| KvError::bad_parameter(e.to_string()))?;
    let stored = add(ctx, name, &b, bundle, policy, |c| c.name.clone()).await?;
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

/// The common tail of import and create: tags and `enabled` from the body, the backing
/// secret's content type from the policy, then a new version; answers `answer(new version)`.
async fn add<T>(
    ctx: &OpCtx<'_>,
    name: &str,
    b: &Value,
    bundle: Bundle,
    policy: Value,
    answer: impl FnOnce(&Cert) -> T,
) -> Result<T, KvError> {
    let content_type = policy
        .pointer("/secret_props/contentType")
        .and_then(|x| x.as_str())
        .unwrap_or(CT_PKCS12)
        .to_string();
    let tags = parse_tags(b)?;
    let enabled = b
        .pointer("/attributes/enabled")
        .and_then(|x| x.as_bool())
        .unwrap_or(true);
    ctx.write(|v| {
        reject_if_deleted(v, ObjectKind::Certificate, name)?;
        let cert = v.add_certificate(name, bundle, &content_type, tags, enabled, policy)?;
        Ok(answer(cert))
    })
    .await
}

pub(super) fn pending(ctx: &OpCtx<'_>, name: &str) -> OpResult {
    let stored = ctx.read(|v| Ok(v.get::<Cert>(name, None)?.name.clone()))?;
    ok(pending_op(ctx.base, &stored))
}

pub(super) fn policy(ctx: &OpCtx<'_>, name: &str) -> OpResult {
    ok(ctx.read(|v| {
        let c = v.get::<Cert>(name, None)?;
        let mut p = c.policy.clone();
        p["id"] = json!(format!("{}/certificates/{}/policy", ctx.base, c.name));
        Ok(p)
    })?)
}

/// Get: the version asked for, enabled or not.
pub(super) fn get(ctx: &OpCtx<'_>, name: &str, version: Option<&str>) -> OpResult {
    ok(ctx.read(|v| v.get::<Cert>(name, version)?.render(ctx.base))?)
}

/// Update: `enabled`, tags.
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
        |c: &mut Cert, b| {
            if let Some(e) = b.pointer("/attributes/enabled").and_then(|x| x.as_bool()) {
                c.attrs.enabled = e;
            }
            c.attrs.updated = store::now();
            Ok(())
        },
    )
    .await
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
