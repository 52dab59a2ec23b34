//! Key Vault response bodies (only the fields the provider reads).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::KvError;

/// Which collection an object lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `/secrets`
    Secret,
    /// `/keys`
    Key,
    /// `/certificates`
    Certificate,
}

impl ObjectKind {
    /// The URL path segment.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Secret => "secrets",
            Self::Key => "keys",
            Self::Certificate => "certificates",
        }
    }
}

pub use sensitive::SecretBytes;

/// A secret bundle.
#[derive(Clone, Debug)]
pub struct SecretBundle {
    /// `https://<vault>/secrets/<name>/<version>`; `None` if absent.
    pub id: Option<String>,
    /// The value as stored (text); `None` if absent.
    pub value: Option<SecretBytes>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// `kid`: set when the secret backs a certificate.
    pub kid: Option<String>,
}

/// The public part of a JSON Web Key (base64url fields left encoded).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    /// Key id URL.
    #[serde(default)]
    pub kid: Option<String>,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, …
    #[serde(default)]
    pub kty: String,
    /// RSA modulus.
    #[serde(default)]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default)]
    pub e: Option<String>,
    /// EC curve.
    #[serde(default)]
    pub crv: Option<String>,
    /// EC x.
    #[serde(default)]
    pub x: Option<String>,
    /// EC y.
    #[serde(default)]
    pub y: Option<String>,
}

/// A key bundle.
#[derive(Clone, Debug)]
pub struct KeyBundle {
    /// The key; `None` if absent.
    pub key: Option<Jwk>,
}

/// A certificate bundle.
#[derive(Clone, Debug)]
pub struct CertificateBundle {
    /// `https://<vault>/certificates/<name>/<version>`.
    pub id: Option<String>,
    /// DER of the leaf certificate (`cer`, standard base64 on the wire).
    pub cer: Option<Vec<u8>>,
}

/// One entry of a versions listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionItem {
    /// Object id (`id` for secrets/certificates, `kid` for keys).
    pub id: String,
    /// Whether the item had an `attributes` object at all.
    pub has_attributes: bool,
    /// `attributes.enabled`.
    pub enabled: Option<bool>,
    /// `attributes.created` (Unix seconds).
    pub created: Option<i64>,
}

impl VersionItem {
    /// The version: the last path segment of the id.
    pub fn version(&self) -> &str {
        last_segment(&self.id)
    }
}

/// One entry of a listing of a vault's secrets, keys or certificates (no values: Key Vault's
/// list operations return identifiers and attributes only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectItem {
    /// The object's name (the last segment of its id).
    pub name: String,
    /// `attributes.enabled` (`None`: absent).
    pub enabled: Option<bool>,
    /// `attributes.nbf` (Unix seconds): not valid before.
    pub not_before: Option<i64>,
    /// `attributes.exp` (Unix seconds): expiry.
    pub expires: Option<i64>,
    /// `tags`.
    pub tags: BTreeMap<String, String>,
    /// `managed`: the secret or key backs a certificate.
    pub managed: bool,
    /// `contentType` (secrets).
    pub content_type: Option<String>,
}

impl ObjectItem {
    /// Enabled, and within its `nbf`..`exp` window at `now` (Unix seconds).
    pub fn is_usable_at(&self, now: i64) -> bool {
        self.enabled != Some(false)
            && self.not_before.is_none_or(|nbf| nbf <= now)
            && self.expires.is_none_or(|exp| exp > now)
    }
}

/// The last `/`-separated segment (the version id of an object id).
pub fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

// === wire shapes ===

#[derive(Deserialize)]
pub(crate) struct WireSecret {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) value: Option<String>,
    #[serde(default, rename = "contentType")]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) kid: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireKey {
    #[serde(default)]
    pub(crate) key: Option<Jwk>,
}

#[derive(Deserialize)]
pub(crate) struct WireCert {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) cer: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireAttributes {
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) created: Option<i64>,
    #[serde(default)]
    pub(crate) nbf: Option<i64>,
    #[serde(default)]
    pub(crate) exp: Option<i64>,
}

#[derive(Deserialize)]
pub(crate) struct WireItem {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default)]
    pub(crate) attributes: Option<WireAttributes>,
    #[serde(default)]
    pub(crate) tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) managed: Option<bool>,
    #[serde(default, rename = "contentType")]
    pub(crate) content_type: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireList {
    #[serde(default)]
    pub(crate) value: Vec<WireItem>,
    #[serde(default, rename = "nextLink")]
    pub(crate) next_link: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct WireErrorBody {
    #[serde(default)]
    pub(crate) error: Option<WireError>,
}

#[derive(Deserialize, Default)]
pub(crate) struct WireError {
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) innererror: Option<Box<WireError>>,
}

// === decoding: the client's one path from response bytes to the types above ===

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, KvError> {
    serde_json::from_slice(body).map_err(|e| KvError::BadResponse(e.to_string()))
}

/// A get-secret response body → [`SecretBundle`] (an empty `kid` counts as none).
pub fn decode_secret(body: &[u8]) -> Result<SecretBundle, KvError> {
    let w: WireSecret = parse(body)?;
    Ok(SecretBundle {
        id: w.id,
        value: w.value.map(|v| SecretBytes::new(v.into_bytes())),
        content_type: w.content_type,
        kid: w.kid.filter(|k| !k.is_empty()),
    })
}

/// A get-key response body → [`KeyBundle`].
pub fn decode_key(body: &[u8]) -> Result<KeyBundle, KvError> {
    let w: WireKey = parse(body)?;
    Ok(KeyBundle { key: w.key })
}

/// A get-certificate response body → [`CertificateBundle`] (`cer` base64-decoded).
pub fn decode_certificate(body: &[u8]) -> Result<CertificateBundle, KvError> {
    let w: WireCert = parse(body)?;
    let cer = match w.cer {
        Some(c) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(c.as_bytes())
                .map_err(|e| KvError::BadResponse(format!("certificate cer: {e}")))?,
        ),
        None => None,
    };
    Ok(CertificateBundle { id: w.id, cer })
}

/// One page of a versions listing → its items and its `nextLink` (empty = none; the caller
/// checks the link's origin before following it).
pub fn decode_versions_page(
    kind: ObjectKind,
    body: &[u8],
) -> Result<(Vec<VersionItem>, Option<String>), KvError> {
    let page: WireList = parse(body)?;
    let items = page
        .value
        .into_iter()
        .map(|item| VersionItem {
            id: match kind {
                ObjectKind::Key => item.kid.or(item.id),
                _ => item.id.or(item.kid),
            }
            .unwrap_or_default(),
            has_attributes: item.attributes.is_some(),
            enabled: item.attributes.as_ref().and_then(|a| a.enabled),
            created: item.attributes.as_ref().and_then(|a| a.created),
        })
        .collect();
    Ok((items, page.next_link.filter(|l| !l.is_empty())))
}

/// One page of a listing of a vault's objects → its items and its `nextLink` (empty = none; the
/// caller checks the link's origin before following it). An item without an id is skipped.
pub fn decode_objects_page(
    kind: ObjectKind,
    body: &[u8],
) -> Result<(Vec<ObjectItem>, Option<String>), KvError> {
    let page: WireList = parse(body)?;
    let items = page
        .value
        .into_iter()
        .filter_map(|item| {
            let id = match kind {
                ObjectKind::Key => item.kid.or(item.id),
                _ => item.id.or(item.kid),
            }?;
            let name = last_segment(&id).to_owned();
            (!name.is_empty()).then(|| ObjectItem {
                name,
                enabled: item.attributes.as_ref().and_then(|a| a.enabled),
                not_before: item.attributes.as_ref().and_then(|a| a.nbf),
                expires: item.attributes.as_ref().and_then(|a| a.exp),
                tags: item.tags.unwrap_or_default(),
                managed: item.managed.unwrap_or(false),
                content_type: item.content_type,
            })
        })
        .collect();
    Ok((items, page.next_link.filter(|l| !l.is_empty())))
}

/// The `error.innererror.code` of an error body (e.g. `SecretDisabled`), if any.
pub fn decode_inner_code(body: &[u8]) -> Option<String> {
    let b: WireErrorBody = serde_json::from_slice(body).ok()?;
    b.error?
        .innererror
        .map(|i| i.code)
        .filter(|c| !c.is_empty())
}

/// An error response body → its `error.code` and `error.message` (the message cut at 300
/// characters); empty strings when the body is not Key Vault's error shape.
pub fn decode_error(body: &[u8]) -> (String, String) {
    let b: WireErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let e = b.error.unwrap_or_default();
    let mut msg = e.message;
    if msg.chars().count() > 300 {
        msg = msg.chars().take(300).collect::<String>() + "…";
    }
    (e.code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_objects_page_keeps_names_attributes_tags_and_flags() {
        let body = br#"{"value":[
            {"id":"https://v.vault.azure.net/secrets/app-db","attributes":{"enabled":true,"exp":200,"nbf":100},
             "tags":{"app":"web"},"contentType":"text/plain"},
            {"id":"https://v.vault.azure.net/secrets/web-tls","attributes":{"enabled":false},"managed":true},
            {"attributes":{"enabled":true}}
        ],"nextLink":"https://v.vault.azure.net/secrets?api-version=7.4&$skiptoken=2"}"#;
        let (items, next) =
            decode_objects_page(ObjectKind::Secret, body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(items.len(), 2, "an item without an id is skipped");
        assert_eq!(items[0].name, "app-db");
        assert_eq!(items[0].tags.get("app").map(String::as_str), Some("web"));
        assert_eq!(items[0].content_type.as_deref(), Some("text/plain"));
        assert!(items[0].is_usable_at(150));
        assert!(!items[0].is_usable_at(99), "not yet valid");
        assert!(!items[0].is_usable_at(200), "expired");
        assert!(items[1].managed && !items[1].is_usable_at(150));
        assert!(next.is_some_and(|n| n.contains("skiptoken=2")));
        let keys = br#"{"value":[{"kid":"https://v.vault.azure.net/keys/k1"}],"nextLink":null}"#;
        let (items, next) =
            decode_objects_page(ObjectKind::Key, keys).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((items[0].name.as_str(), next), ("k1", None));
    }

    #[test]
    fn a_disabled_objects_inner_code_is_read() {
        let body = br#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#;
        assert_eq!(decode_inner_code(body).as_deref(), Some("SecretDisabled"));
        assert_eq!(
            decode_inner_code(br#"{"error":{"code":"Forbidden"}}"#),
            None
        );
    }
}
