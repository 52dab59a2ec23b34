//! Change notification, opt-in per SecretProviderClass through the annotation
//! [`ON_CHANGE_ANNOTATION`] (the CRD schemas stay upstream's):
//!
//! - `file`: the writer puts [`NOTICE_FILE`] under the folder [`NOTICE_DIR`] of the payload, so
//!   it is swapped by the same `..data` rename as the files it describes; readers see the old
//!   files with the old notice or the new files with the new one, never a mix. The folder's name
//!   starts with `..`, which the writer refuses from a provider, so it cannot clash with an
//!   object. Schema: [`Notice`] (docs/rotation.md).
//! - `rollout-restart`: the owning workload is restarted once per change (`crate::restart`).
//!
//! The notice carries object IDs and versions only, never contents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The class annotation that turns notification on.
pub const ON_CHANGE_ANNOTATION: &str = "secrets-store.csi.k8s.io/on-change";

/// The payload folder holding the notice; `<target>/..secrets-store` links to it.
pub const NOTICE_DIR: &str = "..secrets-store";
/// The notice file inside [`NOTICE_DIR`].
pub const NOTICE_FILE: &str = "changes.json";
/// Its path relative to the payload folder.
pub const NOTICE_PATH: &str = "..secrets-store/changes.json";

/// What a class asks for when its contents change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Nothing (no annotation): upstream's behaviour.
    Nothing,
    /// Write the notice file.
    File,
    /// Restart the pod's owning Deployment / StatefulSet / DaemonSet.
    RolloutRestart,
}

impl OnChange {
    /// The mode named by a class's annotations; an unknown value is an error naming the fix.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, String> {
        match annotations.and_then(|a| a.get(ON_CHANGE_ANNOTATION)) {
            None => Ok(Self::Nothing),
            Some(v) => match v.trim() {
                "" | "none" => Ok(Self::Nothing),
                "file" => Ok(Self::File),
                "rollout-restart" => Ok(Self::RolloutRestart),
                other => Err(format!(
                    "annotation {ON_CHANGE_ANNOTATION}={other:?} is not known: use \"file\" or \"rollout-restart\" (or remove it)"
                )),
            },
        }
    }
}

/// One object whose version changed, appeared or went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The provider's object ID (Azure: `secret/<name>`, `key/<name>`, `cert/<name>`...).
    pub id: String,
    /// The version now mounted; `null` when the object went away.
    pub version: Option<String>,
    /// The version mounted before; `null` on the first write or when the object is new.
    pub previous_version: Option<String>,
}

/// The notice file, `<target>/..secrets-store/changes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Always 1 for this layout.
    pub schema_version: u32,
    /// Counts writes of this volume's payload since it was first mounted: 1, 2, ... A watcher
    /// that saw N and reads a larger number knows something changed.
    pub sequence: u64,
    /// When the payload was written (RFC 3339, UTC).
    pub updated_at: String,
    /// Whether any file's bytes, mode or presence changed in this write (false when only the
    /// reported versions moved).
    pub content_changed: bool,
    /// Every object now mounted: ID → version, as the provider reported them.
    pub objects: BTreeMap<String, String>,
    /// What differs from the previous notice (every object on the first write).
    pub changes: Vec<Change>,
}

impl Notice {
    /// The notice for a write of `objects` after `previous` (absent on the first write).
    pub fn next(
        previous: Option<&Notice>,
        objects: &[(String, String)],
        content_changed: bool,
        now: time::OffsetDateTime,
    ) -> Self {
        let objects: BTreeMap<String, String> = objects.iter().cloned().collect();
        let empty = BTreeMap::new();
        let before = previous.map_or(&empty, |p| &p.objects);
        let mut changes = Vec::new();
        for (id, v) in &objects {
            if before.get(id) != Some(v) {
                changes.push(Change {
                    id: id.clone(),
                    version: Some(v.clone()),
                    previous_version: before.get(id).cloned(),
                });
            }
        }
        for (id, v) in before {
            if !objects.contains_key(id) {
                changes.push(Change {
                    id: id.clone(),
                    version: None,
                    previous_version: Some(v.clone()),
                });
            }
        }
        Self {
            schema_version: 1,
            sequence: previous.map_or(1, |p| p.sequence.saturating_add(1)),
            updated_at: rfc3339(now),
            content_changed,
            objects,
            changes,
        }
    }

    /// Whether `objects` are the versions this notice records.
    pub fn same_objects(&self, objects: &[(String, String)]) -> bool {
        self.objects.len() == objects.len()
            && objects
                .iter()
                .all(|(id, v)| self.objects.get(id) == Some(v))
    }

    /// Parses a notice read back from disk; anything unreadable counts as none (the next write
    /// starts a fresh sequence).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and maps cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// `2026-12-02T18:30:00.123456789Z`.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect()
    }

    #[test]
    fn annotation_values() {
        let mut a = BTreeMap::new();
        assert_eq!(OnChange::from_annotations(None), Ok(OnChange::Nothing));
        a.insert(ON_CHANGE_ANNOTATION.to_string(), "file".to_string());
        assert_eq!(OnChange::from_annotations(Some(&a)), Ok(OnChange::File));
        a.insert(
            ON_CHANGE_ANNOTATION.to_string(),
            "rollout-restart".to_string(),
        );
        assert_eq!(
            OnChange::from_annotations(Some(&a)),
            Ok(OnChange::RolloutRestart)
        );
        a.insert(ON_CHANGE_ANNOTATION.to_string(), "restart".to_string());
        let err = OnChange::from_annotations(Some(&a))
            .err()
            .unwrap_or_default();
        assert!(
            err.contains(ON_CHANGE_ANNOTATION) && err.contains("rollout-restart"),
            "{err}"
        );
    }

    #[test]
    fn changes_sequence_and_round_trip() {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let first = Notice::next(None, &v(&[("secret/a", "1"), ("key/b", "1")]), true, now);
        assert_eq!(first.sequence, 1);
        assert_eq!(first.changes.len(), 2);
        assert!(first.changes.iter().all(|c| c.previous_version.is_none()));
        assert_eq!(first.updated_at, "1970-01-01T00:00:00Z");

        let second = Notice::next(
            Some(&first),
            &v(&[("secret/a", "2"), ("cert/c", "1")]),
            true,
            now,
        );
        assert_eq!(second.sequence, 2);
        assert_eq!(
            second.changes,
            vec![
                Change {
                    id: "cert/c".into(),
                    version: Some("1".into()),
                    previous_version: None
                },
                Change {
                    id: "secret/a".into(),
                    version: Some("2".into()),
                    previous_version: Some("1".into())
                },
                Change {
                    id: "key/b".into(),
                    version: None,
                    previous_version: Some("1".into())
                },
            ]
        );
        assert!(second.same_objects(&v(&[("cert/c", "1"), ("secret/a", "2")])));
        assert!(!second.same_objects(&v(&[("cert/c", "1")])));
        assert_eq!(Notice::parse(&second.to_json()), Some(second));
        assert_eq!(Notice::parse(b"{not json"), None);
    }
}
