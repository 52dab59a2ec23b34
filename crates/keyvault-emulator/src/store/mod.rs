//! The vault contents: secrets, keys and certificates with versions; JSON rendering in Key Vault's
//! wire shapes ([`render`]). Persistence to the state file is in [`crate::persist`].

use crate::certs::{self, Bundle, CT_PEM, CT_PKCS12};
use crate::error::{KvError, ObjectKind};
use crate::keys::KeyMaterial;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

mod render;
pub(crate) use render::{deleted_fields, render_cert, render_secret};

pub(crate) const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
pub(crate) const RECOVERABLE_DAYS: u32 = 90;

/// A secret value: never printed.
#[derive(Clone, Default)]
pub(crate) struct SecretValue(pub(crate) Zeroizing<String>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
impl Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretValue(Zeroizing::new(String::deserialize(d)?)))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Attrs {
    pub(crate) enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exp: Option<i64>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

impl Attrs {
    pub(crate) fn now() -> Self {
        let t = now();
        Attrs {
            enabled: true,
            nbf: None,
            exp: None,
            created: t,
            updated: t,
        }
    }
    fn render(&self) -> Value {
        let mut v = json!({
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": RECOVERY_LEVEL,
            "recoverableDays": RECOVERABLE_DAYS,
        });
        if let Some(nbf) = self.nbf {
            v["nbf"] = json!(nbf);
        }
        if let Some(exp) = self.exp {
            v["exp"] = json!(exp);
        }
        v
    }
    /// Applies `{"enabled","nbf","exp"}` from a request body.
    pub(crate) fn apply(&mut self, body: &Value) -> Result<(), KvError> {
        if let Some(e) = body.get("enabled") {
            self.enabled = e
                .as_bool()
                .ok_or_else(|| KvError::bad_parameter("attributes.enabled must be a boolean"))?;
        }
        for (field, slot) in [("nbf", &mut self.nbf), ("exp", &mut self.exp)] {
            match body.get(field) {
                None => {}
                Some(Value::Null) => *slot = None,
                Some(v) => {
                    *slot = Some(v.as_i64().ok_or_else(|| {
                        KvError::bad_parameter(format!(
                            "attributes.{field} must be a Unix time in seconds"
                        ))
                    })?)
                }
            }
        }
        self.updated = now();
        Ok(())
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn new_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Secret {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) value: SecretValue,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) attrs: Attrs,
    /// Set for a certificate's backing secret.
    #[serde(default)]
    pub(crate) managed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) material: KeyMaterial,
    pub(crate) key_ops: Vec<String>,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) attrs: Attrs,
    #[serde(default)]
    pub(crate) managed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cert {
    pub(crate) name: String,
    pub(crate) version: String,
    /// DER certificates, leaf first, base64 in the state file.
    pub(crate) chain: Vec<String>,
    pub(crate) content_type: String,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) attrs: Attrs,
    pub(crate) policy: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Vault {
    pub(crate) name: String,
    pub(crate) tenant: String,
    pub(crate) access: Vec<String>,
    /// Identities limited to some operations (an access policy's permissions): client or object
    /// id → permission names as in 403 messages (`secrets get`, `secrets list`, `keys get`, …).
    /// An identity in `access` without an entry here may do everything.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) permissions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, Vec<Secret>>,
    #[serde(default)]
    pub(crate) keys: BTreeMap<String, Vec<Key>>,
    #[serde(default)]
    pub(crate) certificates: BTreeMap<String, Vec<Cert>>,
    /// Soft-deleted objects (Key Vault's "Recoverable+Purgeable"), by lower-case name.
    #[serde(default)]
    pub(crate) deleted: BTreeMap<String, Deleted>,
}

/// A soft-deleted object: its versions (a certificate keeps its key and secret with it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Deleted {
    pub(crate) deleted_date: i64,
    #[serde(default)]
    pub(crate) secrets: Option<Vec<Secret>>,
    #[serde(default)]
    pub(crate) keys: Option<Vec<Key>>,
    #[serde(default)]
    pub(crate) certificates: Option<Vec<Cert>>,
}

pub(crate) const PURGE_AFTER_SECS: i64 = RECOVERABLE_DAYS as i64 * 86400;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Store {
    /// By lower-case vault name.
    pub(crate) vaults: BTreeMap<String, Vault>,
}

impl Store {
    pub(crate) fn vault(&self, name: &str) -> Option<&Vault> {
        self.vaults.get(&name.to_ascii_lowercase())
    }
    pub(crate) fn vault_mut(&mut self, name: &str) -> Option<&mut Vault> {
        self.vaults.get_mut(&name.to_ascii_lowercase())
    }
}

// === what secrets, keys and certificates share ===

/// A stored object kind: versions (oldest first) under a case-insensitive name, attributes,
/// tags, and Key Vault's rendering.
pub(crate) trait Object: Sized + 'static {
    const KIND: ObjectKind;
    /// The name as first stored (case preserved).
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    fn attrs(&self) -> &Attrs;
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String>;
    /// The vault's objects of this kind, by lower-case name.
    fn all(v: &Vault) -> &BTreeMap<String, Vec<Self>>;
    fn all_mut(v: &mut Vault) -> &mut BTreeMap<String, Vec<Self>>;
    /// The bundle Key Vault answers with (a secret without its value).
    fn render(&self, base: &str) -> Result<Value, KvError>;
    /// A list item: the id without the version ("list") or with it ("list versions").
    fn render_item(&self, base: &str, versioned: bool) -> Value;
}

impl Object for Secret {
    const KIND: ObjectKind = ObjectKind::Secret;
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn attrs(&self) -> &Attrs {
        &self.attrs
    }
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
    fn all(v: &Vault) -> &BTreeMap<String, Vec<Self>> {
        &v.secrets
    }
    fn all_mut(v: &mut Vault) -> &mut BTreeMap<String, Vec<Self>> {
        &mut v.secrets
    }
    fn render(&self, base: &str) -> Result<Value, KvError> {
        Ok(render_secret(base, self, false))
    }
    fn render_item(&self, base: &str, versioned: bool) -> Value {
        render::render_secret_item(base, self, versioned)
    }
}

impl Object for Key {
    const KIND: ObjectKind = ObjectKind::Key;
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn attrs(&self) -> &Attrs {
        &self.attrs
    }
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
    fn all(v: &Vault) -> &BTreeMap<String, Vec<Self>> {
        &v.keys
    }
    fn all_mut(v: &mut Vault) -> &mut BTreeMap<String, Vec<Self>> {
        &mut v.keys
    }
    fn render(&self, base: &str) -> Result<Value, KvError> {
        render::render_key(base, self)
    }
    fn render_item(&self, base: &str, versioned: bool) -> Value {
        render::render_key_item(base, self, versioned)
    }
}

impl Object for Cert {
    const KIND: ObjectKind = ObjectKind::Certificate;
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn attrs(&self) -> &Attrs {
        &self.attrs
    }
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
    fn all(v: &Vault) -> &BTreeMap<String, Vec<Self>> {
        &v.certificates
    }
    fn all_mut(v: &mut Vault) -> &mut BTreeMap<String, Vec<Self>> {
        &mut v.certificates
    }
    fn render(&self, base: &str) -> Result<Value, KvError> {
        Ok(render::render_cert(base, self))
    }
    fn render_item(&self, base: &str, versioned: bool) -> Value {
        render::render_cert_item(base, self, versioned)
    }
}

/// Where `version` (any case; `None`: the newest) is in `versions`.
fn position<T: Object>(
    versions: &[T],
    version: Option<&str>,
    name: &str,
) -> Result<usize, KvError> {
    match version {
        None => versions
            .len()
            .checked_sub(1)
            .ok_or_else(|| KvError::not_found(T::KIND, name, None)),
        Some(v) => versions
            .iter()
            .position(|x| x.version().eq_ignore_ascii_case(v))
            .ok_or_else(|| KvError::not_found(T::KIND, name, Some(v))),
    }
}

fn disabled(kind: ObjectKind, op: &str) -> KvError {
    let inner = match kind {
        ObjectKind::Secret => "SecretDisabled",
        ObjectKind::Key => "KeyDisabled",
        ObjectKind::Certificate => "CertificateDisabled",
    };
    KvError::new(
        403,
        "Forbidden",
        format!(
            "Operation {op} is not allowed on a disabled {}.",
            kind.noun()
        ),
    )
    .inner(inner)
}

/// The key of a soft-deleted object in [`Vault::deleted`].
fn deleted_key(kind: ObjectKind, name: &str) -> String {
    format!("{}/{}", kind.noun(), name.to_ascii_lowercase())
}

// === vault operations ===

impl Vault {
    pub(crate) fn new(name: &str, tenant: &str, access: Vec<String>) -> Self {
        Vault {
            name: name.to_string(),
            tenant: tenant.to_string(),
            access,
            permissions: BTreeMap::new(),
            secrets: BTreeMap::new(),
            keys: BTreeMap::new(),
            certificates: BTreeMap::new(),
            deleted: BTreeMap::new(),
        }
    }

    /// All versions of an object, oldest first; not found when there is no such object.
    pub(crate) fn versions<T: Object>(&self, name: &str) -> Result<&[T], KvError> {
        T::all(self)
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .ok_or_else(|| KvError::not_found(T::KIND, name, None))
    }

    /// The newest version of every object of a kind, by name.
    pub(crate) fn latest<T: Object>(&self) -> impl Iterator<Item = &T> {
        T::all(self).values().filter_map(|versions| versions.last())
    }

    /// One version of an object (`None`: the newest).
    pub(crate) fn get<T: Object>(&self, name: &str, version: Option<&str>) -> Result<&T, KvError> {
        let versions = self.versions::<T>(name)?;
        Ok(&versions[position(versions, version, name)?])
    }

    pub(crate) fn get_mut<T: Object>(
        &mut self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&mut T, KvError> {
        let versions = T::all_mut(self)
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::not_found(T::KIND, name, None))?;
        let i = position(versions, version, name)?;
        Ok(&mut versions[i])
    }

    /// [`Vault::get`] for reading the object's content: a disabled version is forbidden.
    pub(crate) fn get_enabled<T: Object>(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&T, KvError> {
        let o = self.get::<T>(name, version)?;
        if !o.attrs().enabled {
            return Err(disabled(T::KIND, "get"));
        }
        Ok(o)
    }

    /// The name a new version is stored under: the first version's (case preserved), else `name`.
    fn stored_name<T: Object>(&self, name: &str) -> String {
        T::all(self)
            .get(&name.to_ascii_lowercase())
            .and_then(|versions| versions.first())
            .map_or_else(|| name.to_string(), |first| first.name().to_string())
    }

    pub(crate) fn set_secret(
        &mut self,
        name: &str,
        value: Zeroizing<String>,
        content_type: Option<String>,
        tags: BTreeMap<String, String>,
        attrs: Attrs,
    ) -> &Secret {
        let stored_name = self.stored_name::<Secret>(name);
        let versions = self.secrets.entry(name.to_ascii_lowercase()).or_default();
        versions.push(Secret {
            name: stored_name,
            version: new_version(),
            value: SecretValue(value),
            content_type,
            tags,
            attrs,
            managed: false,
        });
        // `versions` was just pushed to, so it is non-empty.
        &versions[versions.len() - 1]
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_key(
        &mut self,
        name: &str,
        material: KeyMaterial,
        key_ops: Option<Vec<String>>,
        tags: BTreeMap<String, String>,
        attrs: Attrs,
        managed: bool,
        version: Option<String>,
    ) -> &Key {
        let stored_name = self.stored_name::<Key>(name);
        let versions = self.keys.entry(name.to_ascii_lowercase()).or_default();
        let key_ops = key_ops.unwrap_or_else(|| material.default_key_ops());
        versions.push(Key {
            name: stored_name,
            version: version.unwrap_or_else(new_version),
            material,
            key_ops,
            tags,
            attrs,
            managed,
        });
        &versions[versions.len() - 1]
    }

    /// Stores a certificate version with its backing key and secret under one version id.
    pub(crate) fn add_certificate(
        &mut self,
        name: &str,
        bundle: Bundle,
        content_type: &str,
        tags: BTreeMap<String, String>,
        enabled: bool,
        policy: Value,
    ) -> Result<&Cert, KvError> {
        if content_type != CT_PKCS12 && content_type != CT_PEM {
            return Err(KvError::bad_parameter(format!(
                "Invalid content type '{content_type}'. Use application/x-pkcs12 or application/x-pem-file."
            )));
        }
        let leaf = bundle
            .chain
            .first()
            .ok_or_else(|| KvError::bad_parameter("The certificate chain is empty."))?;
        let info = certs::leaf_info(leaf).map_err(|e| KvError::bad_parameter(e.to_string()))?;
        let version = new_version();
        let stored_name = self.stored_name::<Cert>(name);
        let value = certs::secret_value(&bundle, content_type, &uuid::Uuid::new_v4().to_string())
            .map_err(|e| KvError::bad_parameter(e.to_string()))?;
        let t = now();
        let attrs = Attrs {
            enabled,
            nbf: Some(info.not_before),
            exp: Some(info.not_after),
            created: t,
            updated: t,
        };

        let secrets = self.secrets.entry(name.to_ascii_lowercase()).or_default();
        secrets.push(Secret {
            name: stored_name.clone(),
            version: version.clone(),
            value: SecretValue(value),
            content_type: Some(content_type.to_string()),
            tags: BTreeMap::new(),
            attrs: attrs.clone(),
            managed: true,
        });
        let material = bundle.key.clone();
        let mut policy = policy;
        fill_policy(&mut policy, &material, content_type, &info.subject);
        self.add_key(
            &stored_name,
            material,
            None,
            BTreeMap::new(),
            attrs.clone(),
            true,
            Some(version.clone()),
        );
        let certs_list = self
            .certificates
            .entry(name.to_ascii_lowercase())
            .or_default();
        certs_list.push(Cert {
            name: stored_name,
            version,
            chain: bundle.chain.iter().map(|c| STANDARD.encode(c)).collect(),
            content_type: content_type.to_string(),
            tags,
            attrs,
            policy,
        });
        Ok(&certs_list[certs_list.len() - 1])
    }

    /// Soft-deletes: the object moves to the deleted collection (a certificate takes its key and
    /// secret along), where it can be read, recovered or purged.
    pub(crate) fn delete(&mut self, kind: ObjectKind, name: &str) -> Result<(), KvError> {
        let lname = name.to_ascii_lowercase();
        let mut entry = Deleted {
            deleted_date: now(),
            ..Deleted::default()
        };
        if kind != ObjectKind::Certificate && self.certificates.contains_key(&lname) {
            return Err(KvError::new(
                403,
                "Forbidden",
                format!(
                    "{} {name} is managed by a certificate; delete the certificate instead.",
                    kind.title()
                ),
            ));
        }
        let missing = || KvError::not_found(kind, name, None);
        match kind {
            ObjectKind::Secret => {
                entry.secrets = Some(self.secrets.remove(&lname).ok_or_else(missing)?)
            }
            ObjectKind::Key => entry.keys = Some(self.keys.remove(&lname).ok_or_else(missing)?),
            ObjectKind::Certificate => {
                entry.certificates = Some(self.certificates.remove(&lname).ok_or_else(missing)?);
                entry.secrets = self.secrets.remove(&lname);
                entry.keys = self.keys.remove(&lname);
            }
        }
        self.deleted.insert(deleted_key(kind, name), entry);
        Ok(())
    }

    pub(crate) fn deleted_entry(&self, kind: ObjectKind, name: &str) -> Result<&Deleted, KvError> {
        self.deleted
            .get(&deleted_key(kind, name))
            .ok_or_else(|| KvError::deleted_not_found(kind, name))
    }

    pub(crate) fn is_deleted(&self, kind: ObjectKind, name: &str) -> bool {
        self.deleted.contains_key(&deleted_key(kind, name))
    }

    pub(crate) fn purge(&mut self, kind: ObjectKind, name: &str) -> Result<(), KvError> {
        self.deleted
            .remove(&deleted_key(kind, name))
            .map(|_| ())
            .ok_or_else(|| KvError::deleted_not_found(kind, name))
    }

    pub(crate) fn recover(&mut self, kind: ObjectKind, name: &str) -> Result<(), KvError> {
        let lname = name.to_ascii_lowercase();
        let entry = self
            .deleted
            .remove(&deleted_key(kind, name))
            .ok_or_else(|| KvError::deleted_not_found(kind, name))?;
        if let Some(s) = entry.secrets {
            self.secrets.insert(lname.clone(), s);
        }
        if let Some(k) = entry.keys {
            self.keys.insert(lname.clone(), k);
        }
        if let Some(c) = entry.certificates {
            self.certificates.insert(lname, c);
        }
        Ok(())
    }
}

fn fill_policy(policy: &mut Value, key: &KeyMaterial, content_type: &str, subject: &str) {
    if !policy.is_object() {
        *policy = json!({});
    }
    let kp = &mut policy["key_props"];
    if !kp.is_object() {
        *kp = json!({});
    }
    kp["exportable"] = json!(true);
    kp["kty"] = json!(key.kty);
    if let Some(size) = key.key_size {
        kp["key_size"] = json!(size);
    }
    if let Some(crv) = &key.crv {
        kp["crv"] = json!(crv);
    }
    if kp.get("reuse_key").is_none() {
        kp["reuse_key"] = json!(false);
    }
    policy["secret_props"] = json!({ "contentType": content_type });
    let x = &mut policy["x509_props"];
    if !x.is_object() {
        *x = json!({});
    }
    if x.get("subject").is_none() {
        x["subject"] = json!(subject);
    }
    if policy.get("issuer").is_none() {
        policy["issuer"] = json!({ "name": "Self" });
    }
    let t = now();
    policy["attributes"] = json!({ "enabled": true, "created": t, "updated": t });
}
