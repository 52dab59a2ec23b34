//! Last-known-good answers for new mounts during an outage (`maxStaleness`, not upstream).
//!
//! After a successful mount of a class with `maxStaleness`, the provider keeps the answer (files
//! and versions) in memory under the same key rules as its caches: the principal (who asked,
//! with a digest of its proof), the vault URL, the objects as parsed and the file mode. When a
//! later mount with the same key fails because Key Vault or Entra ID is unreachable (connection
//! refused or dropped, timeout, 5xx, throttled past the budget, identity endpoint down), the kept
//! answer is served if it is at most `maxStaleness` old. A 401/403, a missing or disabled object,
//! or bad parameters never fall back: revocation wins. Nothing is written to disk; a provider
//! restart forgets everything. Entries past their own `maxStaleness` are dropped.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use entra_auth::PrincipalKey;
use provider_proto::v1alpha1::{File, MountResponse, ObjectVersion};
use sensitive::SecretBytes;

use crate::error::MountError;

/// At most this many answers are kept; the oldest goes first.
const MAX_ENTRIES: usize = 4096;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    principal: PrincipalKey,
    vault: String,
    /// The parsed objects (`Debug` of the specs: names, types, versions, aliases; no secrets).
    objects: String,
    mode: u32,
}

impl Key {
    pub fn new(principal: PrincipalKey, vault: &str, objects: String, mode: u32) -> Self {
        Self {
            principal,
            vault: vault.to_owned(),
            objects,
            mode,
        }
    }
}

struct Entry {
    at: Instant,
    max_staleness: Duration,
    files: Vec<(String, i32, SecretBytes)>,
    versions: Vec<(String, String)>,
}

/// The kept answers.
#[derive(Default)]
pub struct LastGood {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// Whether a failed mount may fall back: the failure says Azure could not be reached or
/// answered with a server-side failure, not that the identity or object is refused.
pub fn may_fall_back(e: &MountError) -> bool {
    matches!(
        e.kind(),
        "unavailable" | "timeout" | "server_error" | "throttled" | "auth_unavailable"
    )
}

impl LastGood {
    /// Keeps a successful answer.
    pub fn keep(&self, key: Key, max_staleness: Duration, resp: &MountResponse) {
        let entry = Entry {
            at: Instant::now(),
            max_staleness,
            files: resp
                .files
                .iter()
                .map(|f| (f.path.clone(), f.mode, SecretBytes::new(f.contents.clone())))
                .collect(),
            versions: resp
                .object_version
                .iter()
                .map(|v| (v.id.clone(), v.version.clone()))
                .collect(),
        };
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, e| e.at.elapsed() <= e.max_staleness);
        if map.len() >= MAX_ENTRIES
            && !map.contains_key(&key)
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(key, entry);
    }

    /// The kept answer for `key` and its age, if at most `max_staleness` old.
    pub fn get(&self, key: &Key, max_staleness: Duration) -> Option<(MountResponse, Duration)> {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let e = map.get(key)?;
        let age = e.at.elapsed();
        if age > max_staleness || age > e.max_staleness {
            return None;
        }
        let resp = MountResponse {
            object_version: e
                .versions
                .iter()
                .map(|(id, version)| ObjectVersion {
                    id: id.clone(),
                    version: version.clone(),
                })
                .collect(),
            files: e
                .files
                .iter()
                .map(|(path, mode, contents)| File {
                    path: path.clone(),
                    mode: *mode,
                    contents: contents.expose().to_vec(),
                })
                .collect(),
            ..Default::default()
        };
        Some((resp, age))
    }

    /// Entries held (tests).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
