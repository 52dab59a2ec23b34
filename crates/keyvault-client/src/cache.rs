//! Identity-scoped Key Vault object cache with single flight (issue 7).
//!
//! [`CachingConnector`] wraps any [`Connector`]; [`CachingConnector::connect_as`] returns a
//! [`KeyVault`] whose answers are cached under (authorized principal, vault, operation, object
//! type, name, version):
//!
//! - The principal is an [`entra_auth::PrincipalKey`]: identity plus a salted digest of the
//!   secret material, so a caller presenting another secret, another assertion or another
//!   identity never reads an entry it did not fetch itself.
//! - An entry is served only while the principal's own credential was accepted by that vault
//!   within the TTL (any successful call refreshes this; a 401/403 revokes it at once).
//! - "latest" (empty version), version listings and listings of a vault's objects (selection by
//!   prefix or tags) live one TTL; pinned versions, which Key Vault
//!   never changes, live `pinned_ttl`.
//! - A connection may carry a maximum age ([`CachingConnector::connect_as`]; the driver sends it
//!   on rotation as `secrets-store.csi.k8s.io/maxAge`): its "latest" answers and listings are
//!   then served only if fetched within min(TTL, max age), measured from when the fetch started,
//!   else fetched again; pinned versions ignore it. Callers asking at once still share one fetch,
//!   so N pods wanting answers no older than M make about one call per object per M.
//! - Concurrent identical requests are coalesced: one goes to Key Vault, the others wait for its
//!   answer. Errors are not cached (a waiter whose leader failed makes its own call).
//! - Bounded in entries and bytes; expired entries go first, then the oldest. Secret values are
//!   [`SecretBytes`](crate::SecretBytes) (zeroized when the last copy drops, which eviction
//!   causes). Nothing is written to disk.
//!
//! [`Connector::connect`] without a principal passes through to the inner connector uncached.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use entra_auth::{BoxFuture, PrincipalKey, TokenCredential};

use crate::model::{
    CertificateBundle, KeyBundle, ObjectItem, ObjectKind, SecretBundle, VersionItem,
};
use crate::{Connector, KeyVault, KvError};

/// Cache settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Lifetime of "latest" answers and listings, and of a principal's acceptance.
    pub ttl: Duration,
    /// Lifetime of pinned-version answers.
    pub pinned_ttl: Duration,
    /// Bound on entries.
    pub max_entries: usize,
    /// Bound on the (approximate) bytes held.
    pub max_bytes: usize,
}

impl CacheOptions {
    /// `ttl` for latest, ten times that for pinned versions, 10,000 entries, 64 MiB.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            pinned_ttl: ttl.saturating_mul(10),
            max_entries: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// `stored + ttl`; a TTL past the clock's range (`--cache-ttl` takes any Go duration, and
/// `Instant + Duration` panics on overflow) is held as long as the clock allows, 100 years.
fn expiry(stored: Instant, ttl: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    stored
        .checked_add(ttl)
        .or_else(|| stored.checked_add(CENTURY))
        .unwrap_or(stored)
}

/// Counters of an [`ObjectCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Answers served from the cache (including coalesced waits).
    pub hits: u64,
    /// Of the hits, callers that waited for a concurrent identical request.
    pub coalesced: u64,
    /// Calls passed to Key Vault.
    pub misses: u64,
    /// Entries dropped to stay within bounds or because they expired.
    pub evictions: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Get(ObjectKind),
    List(ObjectKind),
    /// A listing of the vault's objects of a kind.
    ListAll(ObjectKind),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ObjKey {
    principal: PrincipalKey,
    vault: String,
    op: Op,
    name: String,
    version: String,
}

#[derive(Clone, Debug)]
enum Value {
    Secret(SecretBundle),
    Key(KeyBundle),
    Cert(CertificateBundle),
    Versions(Vec<VersionItem>),
    Objects(Vec<ObjectItem>),
}

impl Value {
    fn size(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        128 + match self {
            Self::Secret(b) => {
                s(&b.id)
                    + s(&b.content_type)
                    + s(&b.kid)
                    + b.value.as_ref().map_or(0, |v| v.expose().len())
            }
            Self::Key(k) => k.key.as_ref().map_or(0, |j| {
                s(&j.kid) + j.kty.len() + s(&j.n) + s(&j.e) + s(&j.crv) + s(&j.x) + s(&j.y)
            }),
            Self::Cert(c) => s(&c.id) + c.cer.as_ref().map_or(0, Vec::len),
            Self::Versions(v) => v.iter().map(|i| 64 + i.id.len()).sum(),
            Self::Objects(v) => v
                .iter()
                .map(|i| {
                    96 + i.name.len()
                        + s(&i.content_type)
                        + i.tags
                            .iter()
                            .map(|(k, v)| 32 + k.len() + v.len())
                            .sum::<usize>()
                })
                .sum(),
        }
    }
}

struct Entry {
    value: Value,
    /// When the call that fetched it started: the answer shows the vault as of then or later.
    fetched: Instant,
    stored: Instant,
    expires: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

struct Meta {
    slot: Slot,
    bytes: usize,
    stored: Instant,
    expires: Instant,
}

#[derive(Default)]
struct Table {
    slots: HashMap<ObjKey, Meta>,
    bytes: usize,
    accepted: HashMap<(PrincipalKey, String), Instant>,
}

/// The shared cache (one per provider process).
pub struct ObjectCache {
    options: CacheOptions,
    table: Mutex<Table>,
    hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ObjectCache {
    /// An empty cache.
    pub fn new(options: CacheOptions) -> Self {
        Self {
            options,
            table: Mutex::new(Table::default()),
            hits: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The table. Poison policy of the workspace: recover it. Every change to it is a single
    /// insert, remove or counter update, so it is consistent even if a holder panicked.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries and approximate bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let t = self.table();
        (t.slots.iter().filter(|(_, m)| m.bytes > 0).count(), t.bytes)
    }

    fn slot(&self, key: &ObjKey) -> Option<Slot> {
        let mut t = self.table();
        if let Some(m) = t.slots.get(key) {
            return Some(m.slot.clone());
        }
        let now = Instant::now();
        let slot = Slot::default();
        t.slots.insert(
            key.clone(),
            Meta {
                slot: slot.clone(),
                bytes: 0,
                stored: now,
                expires: now,
            },
        );
        self.enforce_bounds(&mut t, key);
        Some(slot)
    }

    fn accepted_recently(&self, principal: &PrincipalKey, vault: &str) -> bool {
        let ttl = self.options.ttl;
        self.table()
            .accepted
            .get(&(principal.clone(), vault.to_owned()))
            .is_some_and(|at| at.elapsed() < ttl)
    }

    fn record(&self, key: &ObjKey, bytes: usize, stored: Instant, expires: Instant) {
        let mut t = self.table();
        t.accepted
            .insert((key.principal.clone(), key.vault.clone()), stored);
        let old = match t.slots.get_mut(key) {
            Some(m) => {
                let old = m.bytes;
                m.bytes = bytes;
                m.stored = stored;
                m.expires = expires;
                old
            }
            None => return,
        };
        t.bytes = t.bytes - old + bytes;
        self.enforce_bounds(&mut t, key);
    }

    fn revoke(&self, key: &ObjKey) {
        self.table()
            .accepted
            .remove(&(key.principal.clone(), key.vault.clone()));
    }

    /// Drops expired entries, then the oldest, until within bounds; never `keep` and never a slot
    /// someone is using (its value is then dropped by its last user).
    fn enforce_bounds(&self, t: &mut Table, keep: &ObjKey) {
        let over = |t: &Table| {
            t.slots.len() > self.options.max_entries || t.bytes > self.options.max_bytes
        };
        if !over(t) {
            return;
        }
        let now = Instant::now();
        let mut victims: Vec<(bool, Instant, ObjKey)> = t
            .slots
            .iter()
            .filter(|(k, m)| *k != keep && Arc::strong_count(&m.slot) == 1)
            .map(|(k, m)| (m.expires > now, m.stored, k.clone()))
            .collect();
        // expired (false) first, then oldest
        victims.sort_by_key(|v| (v.0, v.1));
        for (_, _, k) in victims {
            if !over(t) {
                break;
            }
            if let Some(m) = t.slots.remove(&k) {
                t.bytes -= m.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ttl = self.options.ttl;
        if t.accepted.len() > self.options.max_entries {
            t.accepted.retain(|_, at| at.elapsed() < ttl);
        }
    }

    /// The cached answer for `key` if it is fresh enough, else `fetch`'s (one fetch for all
    /// concurrent callers of the same key). `max_age` bounds the age of an unpinned answer.
    async fn get_or_fetch<'a>(
        &'a self,
        key: ObjKey,
        max_age: Option<Duration>,
        fetch: impl Future<Output = Result<Value, KvError>> + Send + 'a,
    ) -> Result<Value, KvError> {
        let Some(slot) = self.slot(&key) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return fetch.await;
        };
        let arrived = Instant::now();
        let mut held = slot.lock().await;
        let now = Instant::now();
        let pinned = matches!(key.op, Op::Get(_)) && is_pinned(&key.version);
        let young_enough = |e: &Entry| {
            pinned || max_age.is_none_or(|m| now.saturating_duration_since(e.fetched) < m)
        };
        if let Some(e) = held.as_ref()
            && e.expires > now
            && young_enough(e)
            && self.accepted_recently(&key.principal, &key.vault)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            if e.stored >= arrived {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(e.value.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // The stale value goes now (zeroized on drop), not after the call.
        *held = None;
        let fetched = Instant::now();
        match fetch.await {
            Ok(v) => {
                let stored = Instant::now();
                let ttl = if pinned {
                    self.options.pinned_ttl
                } else {
                    self.options.ttl
                };
                let bytes = v.size();
                let expires = expiry(stored, ttl);
                *held = Some(Entry {
                    value: v.clone(),
                    fetched,
                    stored,
                    expires,
                });
                drop(held);
                self.record(&key, bytes, stored, expires);
                Ok(v)
            }
            Err(e) => {
                // A refused identity loses its acceptance at once; a disabled object (a 403 too,
                // and a steady state for an optional one) says nothing about the identity.
                if matches!(
                    e,
                    KvError::Forbidden { .. }
                        | KvError::Unauthorized { .. }
                        | KvError::Auth(_)
                        | KvError::Challenge(_)
                ) && !e.is_disabled()
                {
                    self.revoke(&key);
                }
                Err(e)
            }
        }
    }
}

// === impl CachingConnector ===

/// A [`Connector`] whose principal-scoped connections share one [`ObjectCache`].
pub struct CachingConnector {
    inner: Arc<dyn Connector>,
    cache: Arc<ObjectCache>,
}

impl fmt::Debug for CachingConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingConnector")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CachingConnector {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Connector>, options: CacheOptions) -> Self {
        Self {
            inner,
            cache: Arc::new(ObjectCache::new(options)),
        }
    }

    /// The shared cache (for counters).
    pub fn cache(&self) -> &Arc<ObjectCache> {
        &self.cache
    }

    /// A cached connection for `principal` (who `credential` proves to be). With `max_age`, its
    /// "latest" answers and listings are at most that old (fetched within min(TTL, `max_age`));
    /// `None` serves them for the whole TTL.
    pub fn connect_as(
        &self,
        vault_url: &url::Url,
        credential: Arc<dyn TokenCredential>,
        principal: PrincipalKey,
        max_age: Option<Duration>,
    ) -> Arc<dyn KeyVault> {
        let inner = self.inner.connect(vault_url, credential);
        Arc::new(CachedKeyVault {
            vault: inner.vault_url().to_ascii_lowercase(),
            inner,
            principal,
            max_age,
            cache: self.cache.clone(),
        })
    }
}

impl Connector for CachingConnector {
    fn connect(
        &self,
        vault_url: &url::Url,
        credential: Arc<dyn TokenCredential>,
    ) -> Arc<dyn KeyVault> {
        self.inner.connect(vault_url, credential)
    }
}

struct CachedKeyVault {
    inner: Arc<dyn KeyVault>,
    principal: PrincipalKey,
    vault: String,
    max_age: Option<Duration>,
    cache: Arc<ObjectCache>,
}

impl CachedKeyVault {
    fn key(&self, op: Op, name: &str, version: &str) -> ObjKey {
        ObjKey {
            principal: self.principal.clone(),
            vault: self.vault.clone(),
            op,
            name: name.to_owned(),
            // "latest" spelled out stays its own key: the inner client sends it as given.
            version: version.to_owned(),
        }
    }
}

/// A concrete version id (immutable in Key Vault), not "" or "latest".
fn is_pinned(version: &str) -> bool {
    !version.is_empty() && !version.eq_ignore_ascii_case("latest")
}

fn mismatch() -> KvError {
    KvError::BadResponse("cache entry of another type".into())
}

impl KeyVault for CachedKeyVault {
    fn get_secret<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SecretBundle, KvError>> {
        Box::pin(async move {
            let key = self.key(Op::Get(ObjectKind::Secret), name, version);
            let fetch = async move {
                self.inner
                    .get_secret(name, version)
                    .await
                    .map(Value::Secret)
            };
            match self.cache.get_or_fetch(key, self.max_age, fetch).await? {
                Value::Secret(b) => Ok(b),
                _ => Err(mismatch()),
            }
        })
    }

    fn get_key<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<KeyBundle, KvError>> {
        Box::pin(async move {
            let key = self.key(Op::Get(ObjectKind::Key), name, version);
            let fetch = async move { self.inner.get_key(name, version).await.map(Value::Key) };
            match self.cache.get_or_fetch(key, self.max_age, fetch).await? {
                Value::Key(b) => Ok(b),
                _ => Err(mismatch()),
            }
        })
    }

    fn get_certificate<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<CertificateBundle, KvError>> {
        Box::pin(async move {
            let key = self.key(Op::Get(ObjectKind::Certificate), name, version);
            let fetch = async move {
                self.inner
                    .get_certificate(name, version)
                    .await
                    .map(Value::Cert)
            };
            match self.cache.get_or_fetch(key, self.max_age, fetch).await? {
                Value::Cert(b) => Ok(b),
                _ => Err(mismatch()),
            }
        })
    }

    fn list_versions<'a>(
        &'a self,
        kind: ObjectKind,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionItem>, KvError>> {
        Box::pin(async move {
            let key = self.key(Op::List(kind), name, "");
            let fetch = async move {
                self.inner
                    .list_versions(kind, name)
                    .await
                    .map(Value::Versions)
            };
            match self.cache.get_or_fetch(key, self.max_age, fetch).await? {
                Value::Versions(v) => Ok(v),
                _ => Err(mismatch()),
            }
        })
    }

    fn list_objects<'a>(
        &'a self,
        kind: ObjectKind,
    ) -> BoxFuture<'a, Result<Vec<ObjectItem>, KvError>> {
        Box::pin(async move {
            let key = self.key(Op::ListAll(kind), "", "");
            let fetch = async move { self.inner.list_objects(kind).await.map(Value::Objects) };
            match self.cache.get_or_fetch(key, self.max_age, fetch).await? {
                Value::Objects(v) => Ok(v),
                _ => Err(mismatch()),
            }
        })
    }

    fn vault_url(&self) -> &str {
        self.inner.vault_url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretBytes;
    use entra_auth::{AccessToken, AuthError, CredentialIdentity};

    #[derive(Debug)]
    struct NoCred;
    impl TokenCredential for NoCred {
        fn get_token<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
            Box::pin(async { Err(AuthError::NoPodInfo) })
        }
        fn identity(&self) -> CredentialIdentity {
            CredentialIdentity {
                kind: "service_principal",
                authority: "a".into(),
                tenant: None,
                client_id: Some("c".into()),
                pod: None,
            }
        }
    }

    /// A vault answering secrets `"<name>@<version>#<n>"`; names starting with `deny` are 403.
    #[derive(Default)]
    struct Fake {
        calls: AtomicU64,
        lists: AtomicU64,
    }
    struct FakeVault(Arc<Fake>);
    impl KeyVault for FakeVault {
        fn get_secret<'a>(
            &'a self,
            name: &'a str,
            version: &'a str,
        ) -> BoxFuture<'a, Result<SecretBundle, KvError>> {
            Box::pin(async move {
                let n = self.0.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                if name.starts_with("deny") {
                    return Err(KvError::Forbidden {
                        code: "Forbidden".into(),
                        message: "no".into(),
                    });
                }
                if name.starts_with("off") {
                    return Err(KvError::Forbidden {
                        code: "SecretDisabled".into(),
                        message: "Operation get is not allowed on a disabled secret.".into(),
                    });
                }
                Ok(SecretBundle {
                    id: Some(format!("https://v/secrets/{name}/{version}")),
                    value: Some(SecretBytes::new(
                        format!("{name}@{version}#{n}").into_bytes(),
                    )),
                    content_type: None,
                    kid: None,
                })
            })
        }
        fn get_key<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<KeyBundle, KvError>> {
            Box::pin(async { Ok(KeyBundle { key: None }) })
        }
        fn get_certificate<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<CertificateBundle, KvError>> {
            Box::pin(async {
                Ok(CertificateBundle {
                    id: None,
                    cer: None,
                })
            })
        }
        fn list_versions<'a>(
            &'a self,
            _: ObjectKind,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<VersionItem>, KvError>> {
            Box::pin(async {
                self.0.lists.fetch_add(1, Ordering::SeqCst);
                Ok(vec![])
            })
        }
        fn vault_url(&self) -> &str {
            "https://v/"
        }
    }
    struct FakeConnector(Arc<Fake>);
    impl Connector for FakeConnector {
        fn connect(&self, _: &url::Url, _: Arc<dyn TokenCredential>) -> Arc<dyn KeyVault> {
            Arc::new(FakeVault(self.0.clone()))
        }
    }

    fn setup(options: CacheOptions) -> (Arc<Fake>, CachingConnector, url::Url) {
        let fake = Arc::new(Fake::default());
        let c = CachingConnector::new(Arc::new(FakeConnector(fake.clone())), options);
        (fake, c, url::Url::parse("https://v/").unwrap())
    }

    fn principal(secret: &str) -> PrincipalKey {
        PrincipalKey::new(NoCred.identity(), Some(secret))
    }

    fn text(b: &SecretBundle) -> String {
        String::from_utf8(b.value.as_ref().unwrap().expose().to_vec()).unwrap()
    }

    /// `--cache-ttl=5124095576030431h` parses (it fits a `Duration`), and the first cached
    /// answer then panicked in `stored + ttl`. Such a TTL now means "for as long as the clock
    /// goes"; a poisoned table is recovered, not turned into a cache that never hits.
    #[tokio::test]
    async fn a_ttl_past_the_clock_and_a_poisoned_table_still_cache() {
        for ttl in [
            Duration::MAX,
            Duration::from_secs(5_124_095_576_030_431 * 3600),
        ] {
            let (fake, c, url) = setup(CacheOptions::with_ttl(ttl));
            let kv = c.connect_as(&url, Arc::new(NoCred), principal("a"), None);
            let first = text(&kv.get_secret("s", "").await.unwrap());
            assert_eq!(text(&kv.get_secret("s", "").await.unwrap()), first);
            assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "{ttl:?}");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _held = c.cache().table.lock();
                panic!("poisoning the cache table on purpose");
            }));
            assert!(c.cache().table.is_poisoned());
            assert_eq!(text(&kv.get_secret("s", "").await.unwrap()), first);
            assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "still a hit");
            assert_eq!(c.cache().usage().0, 1);
        }
    }

    #[tokio::test]
    async fn coalesces_and_scopes_by_principal() {
        let (fake, c, url) = setup(CacheOptions::with_ttl(Duration::from_secs(60)));
        let kvs: Vec<_> = (0..100)
            .map(|_| c.connect_as(&url, Arc::new(NoCred), principal("a"), None))
            .collect();
        let got = futures::future::join_all(kvs.iter().map(|kv| kv.get_secret("s", "")))
            .await
            .into_iter()
            .map(|r| text(&r.unwrap()))
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(got.len(), 1);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        let s = c.cache().stats();
        assert_eq!((s.misses, s.hits), (1, 99));
        assert!(s.coalesced >= 90, "{s:?}");

        // another principal is not served from it
        kvs[0].get_secret("s", "").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        let b = c.connect_as(&url, Arc::new(NoCred), principal("b"), None);
        b.get_secret("s", "").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert!(is_pinned("abc123") && !is_pinned("") && !is_pinned("Latest"));
        // uncached path
        c.connect(&url, Arc::new(NoCred))
            .get_secret("s", "")
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn latest_expires_after_ttl_pinned_needs_recent_acceptance_and_errors_are_not_cached() {
        let ttl = Duration::from_millis(300);
        let (fake, c, url) = setup(CacheOptions::with_ttl(ttl));
        let kv = c.connect_as(&url, Arc::new(NoCred), principal("a"), None);
        let first = text(&kv.get_secret("s", "").await.unwrap());
        kv.get_secret("s", "v1").await.unwrap();
        assert_eq!(text(&kv.get_secret("s", "").await.unwrap()), first);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        // latest is fetched again; the pinned entry is still fresh but the principal's
        // acceptance is older than the TTL, so it is fetched again too
        assert_ne!(text(&kv.get_secret("s", "").await.unwrap()), first);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        kv.get_secret("s", "v1").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        // ... and a pinned entry is a hit while the principal was accepted recently
        kv.get_secret("s", "v1").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);

        // a disabled object (a 403 as well) says nothing about the principal: still a hit
        assert!(kv.get_secret("off-1", "").await.is_err());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);
        kv.get_secret("s", "v1").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);

        assert!(kv.get_secret("deny-me", "").await.is_err());
        assert!(kv.get_secret("deny-me", "").await.is_err());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 7);
        // a 403 revokes the principal's acceptance: the next read goes to the vault
        kv.get_secret("s", "v1").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 8);
    }

    /// Rotation (issue 15): a caller that asks for answers no older than `max_age` gets "latest"
    /// from the cache only while it is that young, shares one fetch with everyone asking at
    /// once, and leaves pinned versions (immutable) and callers without a max age alone.
    #[tokio::test]
    async fn max_age_bounds_latest_coalesces_and_leaves_pinned_alone() {
        let max_age = Duration::from_millis(200);
        let (fake, c, url) = setup(CacheOptions::with_ttl(Duration::from_secs(60)));
        let calls = || fake.calls.load(Ordering::SeqCst);
        let any = c.connect_as(&url, Arc::new(NoCred), principal("a"), None);
        let fresh = c.connect_as(&url, Arc::new(NoCred), principal("a"), Some(max_age));

        // Fresh enough: served from the cache.
        let first = text(&any.get_secret("s", "").await.unwrap());
        assert_eq!(text(&fresh.get_secret("s", "").await.unwrap()), first);
        assert_eq!(calls(), 1);

        // Older than the max age: fetched again for the asker; the new answer replaces the
        // entry, so callers without a max age see it too.
        tokio::time::sleep(max_age + Duration::from_millis(50)).await;
        assert_eq!(text(&any.get_secret("s", "").await.unwrap()), first, "TTL");
        assert_eq!(calls(), 1);
        let second = text(&fresh.get_secret("s", "").await.unwrap());
        assert_ne!(second, first);
        assert_eq!(calls(), 2);
        assert_eq!(text(&any.get_secret("s", "").await.unwrap()), second);
        assert_eq!(calls(), 2);

        // 1,000 mounts asking at once for a stale entry: one fetch.
        tokio::time::sleep(max_age + Duration::from_millis(50)).await;
        let kvs: Vec<_> = (0..1000)
            .map(|_| c.connect_as(&url, Arc::new(NoCred), principal("a"), Some(max_age)))
            .collect();
        let got = futures::future::join_all(kvs.iter().map(|kv| kv.get_secret("s", "")))
            .await
            .into_iter()
            .map(|r| text(&r.unwrap()))
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(got.len(), 1);
        assert!(!got.contains(&second));
        assert_eq!(calls(), 3, "coalesced");

        // Pinned versions never change in Key Vault: the max age does not apply.
        fresh.get_secret("s", "v1").await.unwrap();
        assert_eq!(calls(), 4);
        tokio::time::sleep(max_age + Duration::from_millis(50)).await;
        fresh.get_secret("s", "v1").await.unwrap();
        assert_eq!(calls(), 4, "pinned stays cached");

        // Version listings follow the max age like "latest".
        let lists = || fake.lists.load(Ordering::SeqCst);
        fresh.list_versions(ObjectKind::Secret, "s").await.unwrap();
        fresh.list_versions(ObjectKind::Secret, "s").await.unwrap();
        assert_eq!(lists(), 1);
        tokio::time::sleep(max_age + Duration::from_millis(50)).await;
        any.list_versions(ObjectKind::Secret, "s").await.unwrap();
        assert_eq!(lists(), 1);
        fresh.list_versions(ObjectKind::Secret, "s").await.unwrap();
        assert_eq!(lists(), 2);

        // A max age of zero always fetches (and still feeds the cache).
        let zero = c.connect_as(&url, Arc::new(NoCred), principal("a"), Some(Duration::ZERO));
        zero.get_secret("s", "").await.unwrap();
        zero.get_secret("s", "").await.unwrap();
        assert_eq!(calls(), 6);

        // A max age longer than the TTL: the TTL still bounds it.
        let ttl = Duration::from_millis(200);
        let (fake, c, url) = setup(CacheOptions::with_ttl(ttl));
        let long = c.connect_as(
            &url,
            Arc::new(NoCred),
            principal("a"),
            Some(Duration::from_secs(3600)),
        );
        long.get_secret("s", "").await.unwrap();
        long.get_secret("s", "").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        long.get_secret("s", "").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bounded_in_entries_and_bytes() {
        let mut o = CacheOptions::with_ttl(Duration::from_secs(60));
        o.max_entries = 5;
        let (_, c, url) = setup(o);
        let kv = c.connect_as(&url, Arc::new(NoCred), principal("a"), None);
        for i in 0..20 {
            kv.get_secret(&format!("s{i}"), "").await.unwrap();
            assert!(c.cache().usage().0 <= 5, "{:?}", c.cache().usage());
        }
        assert!(c.cache().stats().evictions >= 15);

        let mut o = CacheOptions::with_ttl(Duration::from_secs(60));
        o.max_bytes = 1000;
        let (_, c, url) = setup(o);
        let kv = c.connect_as(&url, Arc::new(NoCred), principal("a"), None);
        for i in 0..20 {
            kv.get_secret(&format!("s{i}"), "").await.unwrap();
            assert!(c.cache().usage().1 <= 1000, "{:?}", c.cache().usage());
        }
    }
}
