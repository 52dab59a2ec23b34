//! Access-token reuse across mounts (issue 7).
//!
//! Upstream asks Entra for a fresh token on every mount. Here a [`TokenCache`] shared by the whole
//! provider keeps each token until shortly before it expires, keyed by a [`PrincipalKey`]: the
//! credential's [`CredentialIdentity`] (kind, authority, tenant, client id, pod) plus a salted
//! SHA-256 digest of the secret material that proves it (client secret or client assertion), plus
//! the scope. So two mounts presenting different secrets for the same client id never share a
//! token: a wrong secret gets its own request, and fails. The secret itself is never stored in the
//! key; the digest is salted with a per-process random value so it is no offline oracle either.
//!
//! Concurrent requests for one key are coalesced: the first caller fetches while the others wait
//! on the key's lock and then reuse its token. Failures are not cached.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use crate::credential::{AccessToken, AuthError, BoxFuture, CredentialIdentity, TokenCredential};

/// A token is not handed out once it has less than this left (Key Vault calls and retries must fit).
pub const TOKEN_REFRESH_SKEW: Duration = Duration::from_secs(120);
/// Default bound on cached tokens.
pub const DEFAULT_MAX_TOKENS: usize = 4096;

fn salt() -> &'static [u8; 32] {
    static SALT: OnceLock<[u8; 32]> = OnceLock::new();
    SALT.get_or_init(rand::random)
}

/// Who is asking, without any secret: the identity plus a salted digest of the proof (client
/// secret or assertion), when there is one. Used as the key of the token cache and as the
/// "authorized principal" of the Key Vault object cache.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PrincipalKey {
    identity: CredentialIdentity,
    proof: Option<[u8; 32]>,
}

impl PrincipalKey {
    /// A key for `identity` proven by `secret` (the client secret or the client assertion; `None`
    /// for managed identity and pod identity, where the node endpoint decides).
    pub fn new(identity: CredentialIdentity, secret: Option<&str>) -> Self {
        let proof = secret.map(|s| {
            let mut h = sha2::Sha256::new();
            h.update(salt());
            h.update(s.as_bytes());
            let out = h.finalize();
            let mut a = [0u8; 32];
            a.copy_from_slice(&out);
            a
        });
        Self { identity, proof }
    }

    /// A key for a workload identity whose assertion was verified locally: every assertion with
    /// the same issuer, subject and audiences maps to it, so the pods of one service account
    /// share one token. Domain-separated from [`PrincipalKey::new`]'s secret digests.
    pub fn verified(identity: CredentialIdentity, subject: &crate::VerifiedSubject) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(salt());
        h.update(b"\0verified-subject\0");
        for part in [&subject.issuer, &subject.subject]
            .into_iter()
            .chain(&subject.audiences)
        {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let mut proof = [0u8; 32];
        proof.copy_from_slice(&h.finalize());
        Self {
            identity,
            proof: Some(proof),
        }
    }

    /// The identity part (safe to log).
    pub fn identity(&self) -> &CredentialIdentity {
        &self.identity
    }
}

impl fmt::Debug for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalKey")
            .field("identity", &self.identity)
            .field("proof", &self.proof.map(|_| "<digest>"))
            .finish()
    }
}

/// Counters of a [`TokenCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCacheStats {
    /// Tokens served from the cache (including callers that waited for a concurrent fetch).
    pub hits: u64,
    /// Tokens fetched from the identity provider (successful or not).
    pub misses: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

/// Tokens shared by every mount of the process, bounded in entries.
pub struct TokenCache {
    slots: Mutex<HashMap<(PrincipalKey, String), Slot>>,
    max_entries: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("max_entries", &self.max_entries)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TOKENS)
    }
}

fn usable(t: &AccessToken) -> bool {
    t.expires_on > SystemTime::now() + TOKEN_REFRESH_SKEW
}

impl TokenCache {
    /// An empty cache holding at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hit/miss counters.
    pub fn stats(&self) -> TokenCacheStats {
        TokenCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wraps `inner` so its tokens go through this cache under `principal`.
    pub fn wrap(
        self: &Arc<Self>,
        inner: Arc<dyn TokenCredential>,
        principal: PrincipalKey,
    ) -> Arc<dyn TokenCredential> {
        Arc::new(CachedCredential {
            inner,
            principal,
            cache: self.clone(),
        })
    }

    fn slot(&self, key: (PrincipalKey, String)) -> Slot {
        // The map is only changed by single inserts, retains and removes: still valid after a
        // panic (the workspace's poison policy: recover, never hand out a fresh value).
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slots.get(&key) {
            return s.clone();
        }
        if slots.len() >= self.max_entries {
            // Drop what is expired or idle (no one waiting, nothing usable), then anything idle.
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock()
                        .map(|t| t.as_ref().is_some_and(usable))
                        .unwrap_or(true)
            });
            if slots.len() >= self.max_entries {
                let idle: Vec<_> = slots
                    .iter()
                    .filter(|(_, s)| Arc::strong_count(s) == 1)
                    .map(|(k, _)| k.clone())
                    .take(slots.len() + 1 - self.max_entries)
                    .collect();
                for k in idle {
                    slots.remove(&k);
                }
            }
        }
        let s = Slot::default();
        if slots.len() < self.max_entries {
            slots.insert(key, s.clone());
        }
        s
    }

    async fn get(
        &self,
        inner: &dyn TokenCredential,
        principal: &PrincipalKey,
        scope: &str,
    ) -> Result<AccessToken, AuthError> {
        let slot = self.slot((principal.clone(), scope.to_owned()));
        let mut held = slot.lock().await;
        if let Some(t) = held.as_ref().filter(|t| usable(t)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(t.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Drop the old token (zeroized) before asking for a new one.
        *held = None;
        let t = inner.get_token(scope).await?;
        *held = Some(t.clone());
        Ok(t)
    }
}

/// A [`TokenCredential`] whose tokens come from a shared [`TokenCache`].
pub struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    principal: PrincipalKey,
    cache: Arc<TokenCache>,
}

impl fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredential")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl TokenCredential for CachedCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(self.cache.get(self.inner.as_ref(), &self.principal, scope))
    }

    fn identity(&self) -> CredentialIdentity {
        self.inner.identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensitive::SecretString;

    #[derive(Debug)]
    struct Counting {
        calls: AtomicU64,
        lifetime: Duration,
        fail: bool,
    }

    impl TokenCredential for Counting {
        fn get_token<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.fail {
                    return Err(AuthError::Rejected {
                        endpoint: "e".into(),
                        reason: "invalid_client".into(),
                    });
                }
                Ok(AccessToken {
                    token: SecretString::new(format!("tok-{n}")),
                    expires_on: SystemTime::now() + self.lifetime,
                })
            })
        }
        fn identity(&self) -> CredentialIdentity {
            CredentialIdentity {
                kind: "service_principal",
                authority: "https://login.test/".into(),
                tenant: Some("t".into()),
                client_id: Some("c".into()),
                pod: None,
            }
        }
    }

    fn counting(lifetime: Duration, fail: bool) -> Arc<Counting> {
        Arc::new(Counting {
            calls: AtomicU64::new(0),
            lifetime,
            fail,
        })
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_secrets_separate_keys() {
        let cache = Arc::new(TokenCache::default());
        let inner = counting(Duration::from_secs(3600), false);
        let key = PrincipalKey::new(inner.identity(), Some("secret-a"));
        let creds: Vec<_> = (0..50)
            .map(|_| cache.wrap(inner.clone(), key.clone()))
            .collect();
        let tokens = futures::future::join_all(creds.iter().map(|c| c.get_token("s/.default")))
            .await
            .into_iter()
            .map(|t| t.unwrap().token.expose().to_owned())
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(tokens.len(), 1);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.stats(),
            TokenCacheStats {
                hits: 49,
                misses: 1
            }
        );

        // another scope, another secret: their own fetches
        creds[0].get_token("other/.default").await.unwrap();
        let other = PrincipalKey::new(inner.identity(), Some("secret-b"));
        assert_ne!(other, key);
        cache
            .wrap(inner.clone(), other)
            .get_token("s/.default")
            .await
            .unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
        assert!(!format!("{key:?}").contains("secret-a"));
    }

    #[tokio::test]
    async fn short_lived_and_failed_tokens_are_not_reused() {
        let cache = Arc::new(TokenCache::default());
        let inner = counting(TOKEN_REFRESH_SKEW / 2, false);
        let c = cache.wrap(inner.clone(), PrincipalKey::new(inner.identity(), None));
        c.get_token("s").await.unwrap();
        c.get_token("s").await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);

        let bad = counting(Duration::from_secs(3600), true);
        let c = cache.wrap(bad.clone(), PrincipalKey::new(bad.identity(), Some("x")));
        assert!(c.get_token("s").await.is_err());
        assert!(c.get_token("s").await.is_err());
        assert_eq!(bad.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bounded_in_entries() {
        let cache = Arc::new(TokenCache::new(3));
        let inner = counting(Duration::from_secs(3600), false);
        for i in 0..10 {
            let k = PrincipalKey::new(inner.identity(), Some(&format!("s{i}")));
            cache.wrap(inner.clone(), k).get_token("s").await.unwrap();
            assert!(cache.len() <= 3, "{}", cache.len());
        }
    }
}
