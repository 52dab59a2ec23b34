//! Entra ID: identities, access-token issuing (RS256 JWT) and verification, client-assertion
//! (workload identity federation) validation against an issuer's JWKS.

use crate::lock;
use crate::seed::{DEFAULT_FIC_AUDIENCE, Seed};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64URL};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// An identity that can get tokens.
#[derive(Clone)]
pub(crate) struct Principal {
    pub(crate) client_id: String,
    pub(crate) object_id: String,
    pub(crate) tenant: String,
    pub(crate) client_secret: Option<Zeroizing<String>>,
    pub(crate) federated: Vec<Fic>,
}

impl Principal {
    /// An identity as the seed declares it: the object id defaults to the client id, the tenant
    /// to the seed's; no credential.
    fn declared(
        client_id: &str,
        object_id: &Option<String>,
        tenant: &Option<String>,
        default_tenant: &str,
    ) -> Principal {
        Principal {
            client_id: client_id.to_string(),
            object_id: object_id.clone().unwrap_or_else(|| client_id.to_string()),
            tenant: tenant.clone().unwrap_or_else(|| default_tenant.to_string()),
            client_secret: None,
            federated: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Fic {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) audience: String,
}

pub(crate) struct IssuerCfg {
    pub(crate) issuer: String,
    pub(crate) jwks: Option<String>,
    pub(crate) jwks_uri: Option<String>,
    pub(crate) ca_pem: Option<String>,
    pub(crate) bearer_token: Option<Zeroizing<String>>,
}

pub(crate) struct Directory {
    /// Service principals by client id (lower case).
    pub(crate) principals: HashMap<String, Principal>,
    /// Managed identities by client id (lower case) and the default one.
    pub(crate) managed: HashMap<String, Principal>,
    pub(crate) default_managed: Option<String>,
    /// Pod identities: (namespace, pod) -> client id.
    pub(crate) pods: HashMap<(String, String), String>,
    pub(crate) issuers: Vec<IssuerCfg>,
    jwks_cache: Mutex<HashMap<String, (Instant, String)>>,
}

impl Directory {
    pub(crate) fn from_seed(seed: &Seed) -> Directory {
        let default_tenant = seed.default_tenant().to_string();
        let mut principals = HashMap::new();
        for sp in &seed.identities.service_principals {
            let principal = Principal {
                client_secret: sp.client_secret.clone().map(Zeroizing::new),
                federated: sp
                    .federated_credentials
                    .iter()
                    .map(|f| Fic {
                        issuer: f.issuer.clone(),
                        subject: f.subject.clone(),
                        audience: f
                            .audience
                            .clone()
                            .unwrap_or_else(|| DEFAULT_FIC_AUDIENCE.to_string()),
                    })
                    .collect(),
                ..Principal::declared(&sp.client_id, &sp.object_id, &sp.tenant, &default_tenant)
            };
            principals.insert(sp.client_id.to_ascii_lowercase(), principal);
        }
        let mut managed = HashMap::new();
        let mut default_managed = None;
        for mi in &seed.identities.managed_identities {
            if mi.default || seed.identities.managed_identities.len() == 1 {
                default_managed = Some(mi.client_id.to_ascii_lowercase());
            }
            let principal =
                Principal::declared(&mi.client_id, &mi.object_id, &mi.tenant, &default_tenant);
            managed.insert(mi.client_id.to_ascii_lowercase(), principal);
        }
        let pods = seed
            .identities
            .pod_identities
            .iter()
            .map(|p| {
                (
                    (p.namespace.clone(), p.pod.clone()),
                    p.client_id.to_ascii_lowercase(),
                )
            })
            .collect();
        let issuers = seed
            .issuers
            .iter()
            .map(|i| IssuerCfg {
                issuer: i.issuer.clone(),
                jwks: i.jwks.clone(),
                jwks_uri: i.jwks_uri.clone(),
                ca_pem: i.ca_pem.clone(),
                bearer_token: i.bearer_token.clone().map(Zeroizing::new),
            })
            .collect();
        Directory {
            principals,
            managed,
            default_managed,
            pods,
            issuers,
            jwks_cache: Mutex::new(HashMap::new()),
        }
    }

    /// A principal for IMDS/NMI by client id (managed identities first, then service principals).
    pub(crate) fn managed_or_principal(&self, client_id: &str) -> Option<&Principal> {
        let id = client_id.to_ascii_lowercase();
        self.managed.get(&id).or_else(|| self.principals.get(&id))
    }

    async fn jwks_for(&self, issuer: &IssuerCfg) -> Result<String, String> {
        if let Some(inline) = &issuer.jwks {
            return Ok(inline.clone());
        }
        let uri = issuer.jwks_uri.clone().unwrap_or_default();
        if let Some((at, doc)) = lock(&self.jwks_cache).get(&uri)
            && at.elapsed() < Duration::from_secs(60)
        {
            return Ok(doc.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &issuer.ca_pem {
            for block in pem.split_inclusive("-----END CERTIFICATE-----") {
                if let Ok((_, der)) = der::pem::decode_vec(block.trim().as_bytes()) {
                    let _ = roots.add(rustls::pki_types::CertificateDer::from(der));
                }
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.get(&uri);
        if let Some(t) = &issuer.bearer_token {
            req = req.bearer_auth(t.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("fetching {uri}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetching {uri}: HTTP {}", resp.status()));
        }
        let doc = resp.text().await.map_err(|e| e.to_string())?;
        lock(&self.jwks_cache).insert(uri, (Instant::now(), doc.clone()));
        Ok(doc)
    }

    /// Validates a client assertion for `client_id`; returns the principal or an Entra error.
    pub(crate) async fn validate_assertion(
        &self,
        principal: &Principal,
        assertion: &str,
        via_proxy: bool,
    ) -> Result<(), EntraError> {
        #[derive(Deserialize)]
        struct Unverified {
            iss: Option<String>,
        }
        let malformed =
            || EntraError::invalid_client(400, 50027, "JWT token is invalid or malformed.");
        let bad_signature = || {
            EntraError::invalid_client(401, 700027, "Client assertion failed signature validation.")
        };
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
        let claims: Unverified =
            jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| malformed())?;
        let iss = claims.iss.unwrap_or_default();
        // A federated credential for api://AKSIdentityBinding stands for an AKS identity
        // binding: only the token proxy exchanges it, and the proxy exchanges nothing else.
        let fics: Vec<&Fic> = principal
            .federated
            .iter()
            .filter(|f| f.issuer == iss)
            .filter(|f| (f.audience == crate::IDENTITY_BINDING_AUDIENCE) == via_proxy)
            .collect();
        if fics.is_empty() {
            return Err(no_federated_credential(700211, "issuer", &iss));
        }
        let oidc_failed = |why: String| {
            EntraError::invalid_client(
                401,
                50166,
                format!("Request to External OIDC endpoint failed: {why}"),
            )
        };
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| oidc_failed(format!("no JWKS is configured for issuer '{iss}'.")))?;
        let jwks_text = self.jwks_for(issuer).await.map_err(oidc_failed)?;
        let jwks: JwkSet = serde_json::from_str(&jwks_text).map_err(|e| {
            EntraError::invalid_client(401, 50166, format!("The issuer's JWKS is not valid: {e}"))
        })?;
        let jwk = match &header.kid {
            Some(kid) => jwks.find(kid),
            None => jwks.keys.first(),
        }
        .ok_or_else(|| {
            EntraError::invalid_client(
                401,
                700027,
                "Client assertion failed signature validation: no key in the issuer's JWKS matches the assertion's kid.",
            )
        })?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| bad_signature())?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::PS256
        ) {
            return Err(EntraError::invalid_client(
                401,
                700027,
                "Client assertion uses an unsupported algorithm.",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[&iss]);
        #[derive(Deserialize)]
        struct Verified {
            sub: String,
            aud: Value,
        }
        let data = jsonwebtoken::decode::<Verified>(assertion, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    EntraError::invalid_client(
                        400,
                        700024,
                        "Client assertion is not within its valid time range.",
                    )
                }
                ErrorKind::InvalidSignature => bad_signature(),
                _ => malformed(),
            }
        })?;
        let auds: Vec<String> = match &data.claims.aud {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let by_subject: Vec<&&Fic> = fics
            .iter()
            .filter(|f| f.subject == data.claims.sub)
            .collect();
        if by_subject.is_empty() {
            return Err(no_federated_credential(700213, "subject", &data.claims.sub));
        }
        if !by_subject
            .iter()
            .any(|f| auds.iter().any(|a| a == &f.audience))
        {
            return Err(no_federated_credential(700212, "audience", &auds.join(",")));
        }
        Ok(())
    }
}

// === token signing ===

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub(crate) aud: String,
    pub(crate) iss: String,
    pub(crate) iat: i64,
    pub(crate) nbf: i64,
    pub(crate) exp: i64,
    pub(crate) appid: String,
    pub(crate) appidacr: String,
    pub(crate) idtyp: String,
    pub(crate) oid: String,
    pub(crate) sub: String,
    pub(crate) tid: String,
    pub(crate) uti: String,
    pub(crate) ver: String,
}

pub(crate) struct Signer {
    kid: String,
    /// Signs with `ring` rather than through jsonwebtoken's RustCrypto backend: an RSA-2048
    /// signature there costs ~3 ms of CPU, ring's ~10 times less. Every token the emulator hands
    /// out (IMDS, NMI, client credentials) is one signature, and the latency benchmarks should
    /// measure the client, not the peer's big-number arithmetic.
    signing: ring::rsa::KeyPair,
    decoding: DecodingKey,
    jwks: Value,
    /// Tokens already verified (signature and audience), so the data plane does one RSA
    /// verification per token rather than per request. Bounded; expiry is re-checked on use.
    verified: Mutex<HashMap<String, AccessClaims>>,
}

const VERIFIED_CACHE_MAX: usize = 4096;

impl Signer {
    pub(crate) fn generate() -> Result<Signer, String> {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
        let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
        let signing = ring::rsa::KeyPair::from_pkcs8(der.as_bytes()).map_err(|e| e.to_string())?;
        let n = B64URL.encode(key.n().to_bytes_be());
        let e = B64URL.encode(key.e().to_bytes_be());
        let kid = B64URL.encode(&sha2::Sha256::digest_bytes(n.as_bytes())[..12]);
        let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
        Ok(Signer {
            jwks: json!({ "keys": [{ "kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": n, "e": e, "alg": "RS256" }] }),
            kid,
            signing,
            decoding,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn jwks(&self) -> &Value {
        &self.jwks
    }

    pub(crate) fn issue(
        &self,
        p: &Principal,
        resource: &str,
        lifetime: Duration,
    ) -> Result<(String, i64), String> {
        let now = crate::store::now();
        let exp = now + lifetime.as_secs() as i64;
        let claims = AccessClaims {
            aud: resource.to_string(),
            iss: format!("https://sts.windows.net/{}/", p.tenant),
            iat: now,
            nbf: now - 300,
            exp,
            appid: p.client_id.clone(),
            appidacr: "1".into(),
            idtyp: "app".into(),
            oid: p.object_id.clone(),
            sub: p.object_id.clone(),
            tid: p.tenant.clone(),
            uti: uuid::Uuid::new_v4().simple().to_string(),
            ver: "1.0".into(),
        };
        let header = json!({ "alg": "RS256", "kid": self.kid, "typ": "JWT" });
        let mut token = B64URL.encode(serde_json::to_vec(&header).map_err(|e| e.to_string())?);
        token.push('.');
        B64URL.encode_string(
            serde_json::to_vec(&claims).map_err(|e| e.to_string())?,
            &mut token,
        );
        let mut signature = vec![0; self.signing.public().modulus_len()];
        self.signing
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|e| e.to_string())?;
        token.push('.');
        B64URL.encode_string(&signature, &mut token);
        Ok((token, exp))
    }

    /// Verifies signature, expiry and audience; returns the claims.
    pub(crate) fn verify(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<AccessClaims, jsonwebtoken::errors::Error> {
        // `audiences` is fixed per emulator, so a cached verification stays valid until `exp`.
        if let Some(c) = lock(&self.verified).get(token)
            && c.exp > crate::store::now()
        {
            return Ok(c.clone());
        }
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = 0;
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "aud"]);
        let claims =
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &v).map(|d| d.claims)?;
        {
            let mut cache = lock(&self.verified);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
            cache.insert(token.to_string(), claims.clone());
        }
        Ok(claims)
    }
}

trait DigestBytes {
    fn digest_bytes(data: &[u8]) -> Vec<u8>;
}
impl DigestBytes for sha2::Sha256 {
    fn digest_bytes(data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(data).to_vec()
    }
}

// === errors ===

/// No federated credential of the client matches the assertion's `claim` (issuer, subject or
/// audience).
fn no_federated_credential(code: u32, claim: &str, value: &str) -> EntraError {
    EntraError::invalid_client(
        400,
        code,
        format!(
            "No matching federated identity record found for presented assertion {claim} '{value}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
        ),
    )
}

/// An Entra ID error response (`{"error","error_description","error_codes",…}`).
#[derive(Debug)]
pub(crate) struct EntraError {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) code: u32,
    pub(crate) description: String,
}

impl EntraError {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }
    /// `invalid_client`: how Entra refuses a client's credential (every client assertion check).
    pub(crate) fn invalid_client(status: u16, code: u32, description: impl Into<String>) -> Self {
        Self::new(status, "invalid_client", code, description)
    }
    /// `invalid_request` AADSTS900144: a required form parameter is missing or unreadable.
    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", 900144, description)
    }
    /// A required form parameter is missing.
    pub(crate) fn missing(parameter: &str) -> Self {
        Self::invalid_request(format!(
            "The request body must contain the following parameter: '{parameter}'."
        ))
    }
    pub(crate) fn body(&self) -> Value {
        let trace = uuid::Uuid::new_v4().to_string();
        let corr = uuid::Uuid::new_v4().to_string();
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        json!({
            "error": self.error,
            "error_description": format!("AADSTS{}: {} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}", self.code, self.description),
            "error_codes": [self.code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;
    use jsonwebtoken::{EncodingKey, Header};

    /// An issuer key, its JWKS, and a signer of assertions.
    fn issuer() -> (EncodingKey, String) {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa");
        let jwks = json!({ "keys": [{ "kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
            "n": B64URL.encode(key.n().to_bytes_be()), "e": B64URL.encode(key.e().to_bytes_be()) }] });
        let der = key.to_pkcs1_der().expect("der");
        (EncodingKey::from_rsa_der(der.as_bytes()), jwks.to_string())
    }

    fn assertion(key: &EncodingKey, sub: &str, aud: &str, exp_offset: i64) -> String {
        let now = crate::store::now();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        let claims = json!({ "iss": "https://issuer.test", "sub": sub, "aud": [aud], "iat": now - 60, "nbf": now - 60, "exp": now + exp_offset });
        jsonwebtoken::encode(&h, &claims, key).expect("sign")
    }

    #[tokio::test]
    async fn client_assertions_are_checked_like_entra() {
        let (key, jwks) = issuer();
        let yaml = format!(
            "identities:\n  service_principals:\n    - client_id: app\n      federated_credentials: [{{ issuer: 'https://issuer.test', subject: 'system:serviceaccount:ns:sa' }}]\nissuers:\n  - issuer: 'https://issuer.test'\n    jwks: {}\n",
            serde_json::Value::String(jwks)
        );
        let dir = Directory::from_seed(&Seed::from_yaml(&yaml).expect("seed"));
        let p = dir.principals.get("app").expect("principal").clone();
        let sub = "system:serviceaccount:ns:sa";
        dir.validate_assertion(&p, &assertion(&key, sub, DEFAULT_FIC_AUDIENCE, 600), false)
            .await
            .expect("valid assertion");
        let code = |r: Result<(), EntraError>| r.err().map(|e| e.code);
        assert_eq!(
            code(
                dir.validate_assertion(&p, &assertion(&key, sub, DEFAULT_FIC_AUDIENCE, -30), false)
                    .await
            ),
            Some(700024)
        );
        assert_eq!(
            code(
                dir.validate_assertion(
                    &p,
                    &assertion(
                        &key,
                        "system:serviceaccount:ns:other",
                        DEFAULT_FIC_AUDIENCE,
                        600
                    ),
                    false
                )
                .await
            ),
            Some(700213)
        );
        assert_eq!(
            code(
                dir.validate_assertion(&p, &assertion(&key, sub, "api://other", 600), false)
                    .await
            ),
            Some(700212)
        );
        let (other_key, _) = issuer();
        assert_eq!(
            code(
                dir.validate_assertion(
                    &p,
                    &assertion(&other_key, sub, DEFAULT_FIC_AUDIENCE, 600),
                    false
                )
                .await
            ),
            Some(700027)
        );
        assert_eq!(
            code(dir.validate_assertion(&p, "not-a-jwt", false).await),
            Some(50027)
        );
    }

    /// A federated credential for api://AKSIdentityBinding (an identity binding) is honoured
    /// only through the token proxy, and the proxy honours nothing else.
    #[tokio::test]
    async fn identity_binding_credentials_only_through_the_proxy() {
        let (key, jwks) = issuer();
        let yaml = format!(
            "identities:\n  service_principals:\n    - client_id: app\n      federated_credentials:\n        - {{ issuer: 'https://issuer.test', subject: 'system:serviceaccount:ns:sa' }}\n        - {{ issuer: 'https://issuer.test', subject: 'system:serviceaccount:ns:sa', audience: 'api://AKSIdentityBinding' }}\nissuers:\n  - issuer: 'https://issuer.test'\n    jwks: {}\n",
            serde_json::Value::String(jwks)
        );
        let dir = Directory::from_seed(&Seed::from_yaml(&yaml).expect("seed"));
        let p = dir.principals.get("app").expect("principal").clone();
        let sub = "system:serviceaccount:ns:sa";
        let code = |r: Result<(), EntraError>| r.err().map(|e| e.code);
        let ib = assertion(&key, sub, crate::IDENTITY_BINDING_AUDIENCE, 600);
        let wi = assertion(&key, sub, DEFAULT_FIC_AUDIENCE, 600);
        assert_eq!(code(dir.validate_assertion(&p, &ib, true).await), None);
        assert_eq!(
            code(dir.validate_assertion(&p, &ib, false).await),
            Some(700212)
        );
        assert_eq!(code(dir.validate_assertion(&p, &wi, false).await), None);
        assert_eq!(
            code(dir.validate_assertion(&p, &wi, true).await),
            Some(700212)
        );
    }

    #[test]
    fn issued_tokens_verify_and_wrong_audience_does_not() {
        let signer = Signer::generate().expect("signer");
        let p = Principal {
            client_id: "c".into(),
            object_id: "o".into(),
            tenant: "t".into(),
            client_secret: None,
            federated: vec![],
        };
        let (tok, _) = signer
            .issue(&p, "https://vault.test:1", Duration::from_secs(60))
            .expect("issue");
        let claims = signer
            .verify(&tok, &["https://vault.test:1".to_string()])
            .expect("verify");
        assert_eq!((claims.appid.as_str(), claims.tid.as_str()), ("c", "t"));
        let other = Signer::generate().expect("signer");
        assert!(
            other
                .verify(&tok, &["https://vault.test:1".to_string()])
                .is_err()
        );
        let (tok2, _) = signer
            .issue(&p, "https://storage.test", Duration::from_secs(60))
            .expect("issue");
        assert!(
            signer
                .verify(&tok2, &["https://vault.test:1".to_string()])
                .is_err()
        );
    }
}
