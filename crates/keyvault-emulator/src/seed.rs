//! The seed: tenants, vaults, objects, identities and access, declared in YAML.
//!
//! ```yaml
//! tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47     # default tenant for everything below
//! vaults:
//!   - name: demo                                   # https://demo.<dns-suffix>:<port>/
//!     access: [11111111-1111-1111-1111-111111111111]  # client ids (or object ids); "*" = any identity of the tenant
//!     permissions:                                 # optional: limit an identity of `access` to some operations
//!       11111111-1111-1111-1111-111111111111: ["secrets get", "keys get", "certificates get"]
//!     secrets:
//!       - { name: db-password, value: s3cr3t, content_type: text/plain, tags: { env: dev } }
//!       - { name: old-token, value: x, enabled: false, exp: 1700000000 }  # exp / nbf: Unix seconds
//!     keys:
//!       - { name: signing, kty: RSA, key_size: 2048 }
//!       - { name: ec, kty: EC, crv: P-384, tags: { team: a }, enabled: true }
//!       - { name: imported, pem: "-----BEGIN PRIVATE KEY-----\n..." }
//!     certificates:
//!       - { name: web, generate: { subject: CN=web, kty: RSA, key_size: 2048, dns_names: [web.local] } }
//!       - { name: chain, pem: "<key + leaf + intermediates PEM>", content_type: application/x-pem-file }
//!       - { name: pfx, pfx_base64: "MIIK...", password: "" }
//! identities:
//!   service_principals:
//!     - client_id: 11111111-1111-1111-1111-111111111111
//!       client_secret: not-a-real-secret
//!       federated_credentials:
//!         - { issuer: "https://kubernetes.default.svc", subject: "system:serviceaccount:default:app" }  # audience defaults to api://AzureADTokenExchange
//!   managed_identities:                             # IMDS: /metadata/identity/oauth2/token
//!     - { client_id: 22222222-2222-2222-2222-222222222222, default: true }
//!   pod_identities:                                 # NMI: /host/token/ with podns/podname headers
//!     - { namespace: default, pod: nginx, client_id: 22222222-2222-2222-2222-222222222222 }
//! issuers:                                          # who may sign client assertions
//!   - issuer: "https://kubernetes.default.svc"
//!     jwks: '{"keys":[...]}'                        # inline, or:
//!     # jwks_uri: https://127.0.0.1:6443/openid/v1/jwks   (+ ca_pem, bearer_token)
//! ```

use crate::Error;
use crate::certs::{self, Bundle};
use crate::keys::KeyMaterial;
use crate::store;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Tenant used when the seed names none.
pub const DEFAULT_TENANT: &str = "00000000-0000-0000-0000-00000000a11e";
/// The audience a federated credential expects unless told otherwise.
pub const DEFAULT_FIC_AUDIENCE: &str = "api://AzureADTokenExchange";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub vaults: Vec<VaultSeed>,
    #[serde(default)]
    pub identities: IdentitiesSeed,
    #[serde(default)]
    pub issuers: Vec<IssuerSeed>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSeed {
    pub name: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub access: Vec<String>,
    /// Identities of `access` limited to some operations, e.g.
    /// `{ <client id>: ["secrets get"] }` (may get secrets, not list them).
    #[serde(default)]
    pub permissions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub secrets: Vec<SecretSeed>,
    #[serde(default)]
    pub keys: Vec<KeySeed>,
    #[serde(default)]
    pub certificates: Vec<CertificateSeed>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSeed {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `attributes.exp`: expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// `attributes.nbf`: not valid before, Unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
}

impl std::fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSeed")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySeed {
    pub name: String,
    #[serde(default)]
    pub kty: Option<String>,
    #[serde(default)]
    pub key_size: Option<u32>,
    #[serde(default)]
    pub crv: Option<String>,
    /// A private key in PEM (PKCS#8, PKCS#1 or SEC1) instead of generating one.
    #[serde(default)]
    pub pem: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `attributes.exp`: expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
}

impl std::fmt::Debug for KeySeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySeed")
            .field("name", &self.name)
            .field("kty", &self.kty)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSeed {
    pub name: String,
    /// Private key + certificate chain in PEM (leaf first, or any order).
    #[serde(default)]
    pub pem: Option<String>,
    /// A PFX, base64.
    #[serde(default)]
    pub pfx_base64: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Self-signed generation.
    #[serde(default)]
    pub generate: Option<GenerateSeed>,
    /// `application/x-pkcs12` (default) or `application/x-pem-file`: what the backing secret returns.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl std::fmt::Debug for CertificateSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSeed")
            .field("name", &self.name)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSeed {
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub kty: Option<String>,
    #[serde(default)]
    pub key_size: Option<u32>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub validity_months: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitiesSeed {
    #[serde(default)]
    pub service_principals: Vec<ServicePrincipalSeed>,
    #[serde(default)]
    pub managed_identities: Vec<ManagedIdentitySeed>,
    #[serde(default)]
    pub pod_identities: Vec<PodIdentitySeed>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipalSeed {
    pub client_id: String,
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredentialSeed>,
}

impl std::fmt::Debug for ServicePrincipalSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePrincipalSeed")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("federated_credentials", &self.federated_credentials)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialSeed {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub audience: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySeed {
    pub client_id: String,
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Used by IMDS when the request names no `client_id` (the "system-assigned" identity).
    #[serde(default)]
    pub default: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodIdentitySeed {
    pub namespace: String,
    pub pod: String,
    pub client_id: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSeed {
    pub issuer: String,
    /// The issuer's JWKS document, inline (JSON text).
    #[serde(default)]
    pub jwks: Option<String>,
    /// Or where to fetch it (HTTPS; fetched on use, cached for a minute).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// CA bundle (PEM) that signs the `jwks_uri` server certificate.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Bearer token sent to `jwks_uri` (kube-apiserver may require authentication).
    #[serde(default)]
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for IssuerSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerSeed")
            .field("issuer", &self.issuer)
            .field("jwks_uri", &self.jwks_uri)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Seed {
    /// Parses and validates a seed document.
    pub fn from_yaml(yaml: &str) -> Result<Seed, Error> {
        let seed: Seed = serde_saphyr::from_str(yaml).map_err(|e| Error::Seed(e.to_string()))?;
        seed.validate()?;
        Ok(seed)
    }

    pub(crate) fn default_tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    fn validate(&self) -> Result<(), Error> {
        let mut names = std::collections::BTreeSet::new();
        for v in &self.vaults {
            if !valid_vault_name(&v.name) {
                return Err(Error::Seed(format!(
                    "vaults[].name '{}' is not a valid vault name: use 3-24 characters, letters, digits and '-', starting with a letter",
                    v.name
                )));
            }
            if !names.insert(v.name.to_ascii_lowercase()) {
                return Err(Error::Seed(format!("vault '{}' is declared twice", v.name)));
            }
            let objects = v
                .secrets
                .iter()
                .map(|s| ("secret", &s.name))
                .chain(v.keys.iter().map(|k| ("key", &k.name)))
                .chain(v.certificates.iter().map(|c| ("certificate", &c.name)));
            for (kind, name) in objects {
                if !valid_object_name(name) {
                    return Err(Error::Seed(format!(
                        "vault '{}': {kind} name '{name}' breaks Key Vault naming rules (1-127 characters of 0-9, a-z, A-Z and '-')",
                        v.name
                    )));
                }
            }
            for c in &v.certificates {
                let sources = [
                    c.pem.is_some(),
                    c.pfx_base64.is_some(),
                    c.generate.is_some(),
                ];
                if sources.iter().filter(|s| **s).count() != 1 {
                    return Err(Error::Seed(format!(
                        "vault '{}': certificate '{}' needs exactly one of pem, pfx_base64 or generate",
                        v.name, c.name
                    )));
                }
            }
        }
        for i in &self.issuers {
            if i.jwks.is_none() == i.jwks_uri.is_none() {
                return Err(Error::Seed(format!(
                    "issuers: '{}' needs exactly one of jwks (inline) or jwks_uri",
                    i.issuer
                )));
            }
        }
        Ok(())
    }
}

impl VaultSeed {
    /// The vault this seed declares, its keys and certificates generated or parsed; in
    /// `default_tenant` unless it names its own.
    pub(crate) fn build(&self, default_tenant: &str) -> Result<store::Vault, Error> {
        let tenant = self.tenant.as_deref().unwrap_or(default_tenant);
        let mut v = store::Vault::new(&self.name, tenant, self.access.clone());
        v.permissions = self
            .permissions
            .iter()
            .map(|(id, p)| (id.to_ascii_lowercase(), p.clone()))
            .collect();
        let failed = |what: &str, name: &str, e: String| {
            Error::Seed(format!("vault '{}': {what} '{name}': {e}", self.name))
        };
        for s in &self.secrets {
            let mut attrs = store::Attrs::now();
            attrs.enabled = s.enabled;
            attrs.exp = s.exp;
            attrs.nbf = s.nbf;
            v.set_secret(
                &s.name,
                Zeroizing::new(s.value.clone()),
                s.content_type.clone(),
                s.tags.clone(),
                attrs,
            );
        }
        for k in &self.keys {
            let material = k.material().map_err(|e| failed("key", &k.name, e))?;
            let mut attrs = store::Attrs::now();
            attrs.enabled = k.enabled;
            attrs.exp = k.exp;
            v.add_key(&k.name, material, None, k.tags.clone(), attrs, false, None);
        }
        for c in &self.certificates {
            let Some(bundle) = c.bundle() else {
                return Err(Error::Seed(format!(
                    "vault '{}': certificate '{}' has no content",
                    self.name, c.name
                )));
            };
            let bundle = bundle.map_err(|e| failed("certificate", &c.name, e))?;
            let ct = c.content_type.as_deref().unwrap_or(certs::CT_PKCS12);
            v.add_certificate(&c.name, bundle, ct, c.tags.clone(), c.enabled, json!({}))
                .map_err(|e| failed("certificate", &c.name, e.message))?;
        }
        Ok(v)
    }
}

impl KeySeed {
    /// The PEM key, or a new one.
    fn material(&self) -> Result<KeyMaterial, String> {
        match &self.pem {
            Some(pem) => {
                let (label, der) =
                    der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| e.to_string())?;
                KeyMaterial::from_pem_block(label, &Zeroizing::new(der)).map_err(|e| e.to_string())
            }
            None => generate_key(self.kty.as_deref(), self.key_size, self.crv.as_deref()),
        }
    }
}

impl CertificateSeed {
    /// The certificate from its one source (PEM, PFX or generated); `None` without one.
    fn bundle(&self) -> Option<Result<Bundle, String>> {
        let bundle = if let Some(pem) = &self.pem {
            certs::parse_pem_bundle(pem).map_err(|e| e.to_string())
        } else if let Some(pfx) = &self.pfx_base64 {
            certs::parse_import(pfx, self.password.as_deref().unwrap_or(""))
                .map_err(|e| e.to_string())
        } else {
            let g = self.generate.as_ref()?;
            generate_key(g.kty.as_deref(), g.key_size, g.crv.as_deref()).and_then(|key| {
                let subject = g
                    .subject
                    .clone()
                    .unwrap_or_else(|| format!("CN={}", self.name));
                let months = g.validity_months.unwrap_or(12);
                certs::self_signed(key, &subject, &g.dns_names, months).map_err(|e| e.to_string())
            })
        };
        Some(bundle)
    }
}

/// A new key: RSA unless `kty` says otherwise.
fn generate_key(
    kty: Option<&str>,
    size: Option<u32>,
    crv: Option<&str>,
) -> Result<KeyMaterial, String> {
    KeyMaterial::generate(kty.unwrap_or("RSA"), size, crv).map_err(|e| e.to_string())
}

/// Key Vault object names: 1-127 characters, `^[0-9a-zA-Z-]+$`.
pub fn valid_object_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Vault names: 3-24 characters, letters, digits and hyphens, starting with a letter.
pub fn valid_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphabetic()
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let yaml = include_str!("../examples/seed.yaml");
        let seed = Seed::from_yaml(yaml).expect("example seed parses");
        assert!(!seed.vaults.is_empty());
        assert!(!seed.identities.service_principals.is_empty());
    }

    #[test]
    fn rejects_bad_names_with_the_field_named() {
        let err = Seed::from_yaml(
            "vaults: [{ name: ok-vault, secrets: [{ name: 'bad_name', value: x }] }]",
        )
        .expect_err("underscore is invalid");
        assert!(err.to_string().contains("bad_name"), "{err}");
        let err = Seed::from_yaml("vaults: [{ name: '1x' }]").expect_err("bad vault");
        assert!(err.to_string().contains("vaults[].name"), "{err}");
        let err = Seed::from_yaml("vaultz: []").expect_err("unknown field");
        assert!(err.to_string().contains("vaultz"), "{err}");
    }

    #[test]
    fn naming_rules() {
        assert!(valid_object_name("a"));
        assert!(valid_object_name(&"a".repeat(127)));
        assert!(!valid_object_name(&"a".repeat(128)));
        assert!(!valid_object_name(""));
        assert!(!valid_object_name("a.b"));
    }
}
