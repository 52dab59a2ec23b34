//! Local verification of workload-identity assertions (Kubernetes service-account tokens), so
//! that every pod of one service account can share one Entra token (issue 7).
//!
//! Each pod's token differs (its own `iat`, `exp`, `jti` and pod binding), so a cache keyed by the
//! assertion makes one Entra request per pod and per rotation. Entra decides only on the issuer,
//! subject and audience of a signature-valid, unexpired assertion; a token obtained for one such
//! assertion is what any other with the same three would get. [`AssertionVerifier`] checks the
//! signature against the issuer's published keys (OpenID discovery: `<iss>/.well-known/
//! openid-configuration` → `jwks_uri`), the expiry, and that the issuer is one the operator listed;
//! only then does the caller key the token by [`VerifiedSubject`] instead of the assertion.
//! Anything that does not verify falls back to per-assertion keying: never an error of the mount,
//! never a shared token.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Keys of an issuer are re-read after this long.
const KEYS_TTL: Duration = Duration::from_secs(600);
/// After a failed discovery, or a token signed by a key the issuer does not list, the issuer is
/// not asked again for this long (a bad token cannot make the provider hammer the issuer).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Largest discovery document or key set read (read chunk by chunk, never buffered whole).
const MAX_BODY: usize = crate::http::MAX_TOKEN_RESPONSE;

/// Issuer, subject and audiences of an assertion whose signature and expiry were checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VerifiedSubject {
    /// `iss`.
    pub issuer: String,
    /// `sub`, e.g. `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// `aud`, sorted.
    pub audiences: Vec<String>,
}

/// Why an assertion was not verified (then it is keyed by itself, as without a verifier).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or no `iss`.
    #[error("the assertion is not a JWT with an issuer")]
    Malformed,
    /// `iss` is not in the configured list.
    #[error("issuer {0} is not configured for token sharing")]
    UntrustedIssuer(String),
    /// Discovery or the key set could not be read (or failed recently).
    #[error("keys of issuer {issuer} unavailable: {reason}")]
    Keys {
        /// The issuer.
        issuer: String,
        /// What failed.
        reason: String,
    },
    /// No key matches, bad signature, expired, not yet valid, unsupported algorithm.
    #[error("assertion rejected: {0}")]
    Invalid(String),
}

struct IssuerKeys {
    fetched: Instant,
    /// `Err` = the last fetch failed; retried after [`RETRY_AFTER_FAILURE`].
    keys: Result<JwkSet, String>,
}

/// Verifies assertions of the configured issuers against their published keys.
pub struct AssertionVerifier {
    http: reqwest::Client,
    issuers: Vec<String>,
    keys: Mutex<HashMap<String, IssuerKeys>>,
    /// Serialises key fetches, so a burst of mounts reads an issuer's keys once.
    fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AssertionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionVerifier")
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

/// Issuers compare without a trailing slash (Kubernetes and AKS differ in whether they print one).
fn normalise(issuer: &str) -> &str {
    issuer.trim_end_matches('/')
}

impl AssertionVerifier {
    /// A verifier for `issuers` (exact `iss` values, e.g. the cluster's OIDC issuer URL), reading
    /// their keys with `http`.
    pub fn new(http: reqwest::Client, issuers: Vec<String>) -> Self {
        Self {
            http,
            issuers: issuers
                .iter()
                .map(|i| normalise(i).to_owned())
                .filter(|i| !i.is_empty())
                .collect(),
            keys: Mutex::new(HashMap::new()),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// Checks `assertion`'s issuer, signature and lifetime.
    pub async fn verify(&self, assertion: &str) -> Result<VerifiedSubject, VerifyError> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| VerifyError::Malformed)?;
        let unverified = jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(assertion)
            .map_err(|_| VerifyError::Malformed)?;
        let iss = unverified.iss.ok_or(VerifyError::Malformed)?;
        let issuer = normalise(&iss);
        if !self.issuers.iter().any(|i| i == issuer) {
            return Err(VerifyError::UntrustedIssuer(iss.clone()));
        }
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            return Err(VerifyError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let kid = header.kid.unwrap_or_default();
        let jwks = self.keys_for(issuer, &kid).await?;
        let jwk = if kid.is_empty() {
            jwks.keys.first()
        } else {
            jwks.find(&kid)
        }
        .ok_or_else(|| VerifyError::Invalid("no key of the issuer matches the token".into()))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| VerifyError::Invalid(format!("issuer key unusable: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[iss.as_str()]);
        let data = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
            .map_err(|e| VerifyError::Invalid(e.to_string()))?;
        let mut audiences = data.claims.aud;
        audiences.sort();
        audiences.dedup();
        Ok(VerifiedSubject {
            issuer: issuer.to_owned(),
            subject: data.claims.sub,
            audiences,
        })
    }

    fn cached(&self, issuer: &str, kid: &str) -> Option<Result<JwkSet, VerifyError>> {
        let map = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(issuer)?;
        let age = entry.fetched.elapsed();
        match &entry.keys {
            Ok(set) if age < KEYS_TTL && (kid.is_empty() || set.find(kid).is_some()) => {
                Some(Ok(set.clone()))
            }
            // An unknown kid may be a rotated key: re-read, but not more than once a minute.
            Ok(set) if age < RETRY_AFTER_FAILURE => Some(Ok(set.clone())),
            Err(reason) if age < RETRY_AFTER_FAILURE => Some(Err(VerifyError::Keys {
                issuer: issuer.to_owned(),
                reason: reason.clone(),
            })),
            _ => None,
        }
    }

    async fn keys_for(&self, issuer: &str, kid: &str) -> Result<JwkSet, VerifyError> {
        if let Some(r) = self.cached(issuer, kid) {
            return r;
        }
        let _one = self.fetch.lock().await;
        if let Some(r) = self.cached(issuer, kid) {
            return r;
        }
        let fetched = self.fetch_keys(issuer).await;
        if let Err(reason) = &fetched {
            tracing::warn!(issuer, reason = %reason, "cannot read the issuer's keys; workload-identity tokens of this issuer are not shared for now");
        }
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                issuer.to_owned(),
                IssuerKeys {
                    fetched: Instant::now(),
                    keys: fetched.clone(),
                },
            );
        fetched.map_err(|reason| VerifyError::Keys {
            issuer: issuer.to_owned(),
            reason,
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("{url}: only https is accepted"));
        }
        let resp = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
        }
        // The cap used to be checked after the whole body was in memory.
        let body = crate::http::read_body(resp, MAX_BODY)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_slice(body.expose()).map_err(|e| format!("{url}: {e}"))
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<JwkSet, String> {
        let discovery: Discovery = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        self.get_json(&discovery.jwks_uri).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(issuers: &[&str]) -> AssertionVerifier {
        let http = crate::build_client(&crate::HttpOptions::default()).unwrap_or_default();
        AssertionVerifier::new(http, issuers.iter().map(|s| (*s).to_owned()).collect())
    }

    fn jwt(header: &str, claims: &str) -> String {
        use base64::Engine as _;
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", e(header), e(claims))
    }

    #[tokio::test]
    async fn only_configured_issuers_are_considered_and_nothing_is_fetched_otherwise() {
        let v = verifier(&["https://issuer.example/", ""]);
        assert_eq!(v.issuers, ["https://issuer.example"]);
        let t = jwt(
            r#"{"alg":"RS256","kid":"k"}"#,
            r#"{"iss":"https://other.example","sub":"s","aud":"a","exp":4102444800}"#,
        );
        assert!(matches!(
            v.verify(&t).await,
            Err(VerifyError::UntrustedIssuer(i)) if i == "https://other.example"
        ));
        assert!(matches!(
            v.verify("not-a-jwt").await,
            Err(VerifyError::Malformed)
        ));
        let none = jwt(
            r#"{"alg":"none"}"#,
            r#"{"iss":"https://issuer.example","sub":"s","aud":"a","exp":4102444800}"#,
        );
        assert!(v.verify(&none).await.is_err(), "alg none");
        let hs = jwt(
            r#"{"alg":"HS256"}"#,
            r#"{"iss":"https://issuer.example","sub":"s","aud":"a","exp":4102444800}"#,
        );
        assert!(
            matches!(v.verify(&hs).await, Err(VerifyError::Invalid(_))),
            "symmetric algorithms are refused before any fetch"
        );
        assert!(v.keys.lock().unwrap().is_empty());
    }

    #[test]
    fn audiences_may_be_one_or_many() {
        let c: Claims = serde_json::from_str(r#"{"sub":"s","aud":"a"}"#).unwrap();
        assert_eq!(c.aud, ["a"]);
        let c: Claims = serde_json::from_str(r#"{"sub":"s","aud":["b","a"]}"#).unwrap();
        assert_eq!(c.aud, ["b", "a"]);
    }
}
