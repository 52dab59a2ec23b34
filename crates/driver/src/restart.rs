//! `secrets-store.csi.k8s.io/on-change: rollout-restart`: when a rotation changes a volume's
//! objects, the pod's owning Deployment / StatefulSet / DaemonSet gets a new pod-template
//! annotation `kubectl.kubernetes.io/restartedAt`, exactly what `kubectl rollout restart` does.
//!
//! Once per change, not per pod or node: the owner carries [`DIGESTS_ANNOTATION`], a JSON map
//! class → `{digest, restartedAt}` where `digest` is a hash of the class's object IDs and
//! versions. Every driver that sees a change reads the owner, and patches only if the recorded
//! digest differs, with the owner's `resourceVersion` in the patch: of two drivers racing, the
//! second gets a 409, reads again, finds the digest recorded and stops. Restarts of one owner are
//! at least `min_interval` apart (a later change waits, and is retried at the next refresh). An
//! Event on the owner says which class and objects caused it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// On the owner: class → what was last applied for it.
pub const DIGESTS_ANNOTATION: &str = "secrets-store.csi.k8s.io/rotation-digests";
/// On the owner's pod template: what `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Event reason on the owner.
pub const REASON_RESTARTED: &str = "SecretsRotatedRolloutRestart";
/// Default of `--rollout-restart-min-interval`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(300);

/// Why the owner could not be found or patched.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("{op} {kind} {namespace}/{name}: {source}")]
    Api {
        op: &'static str,
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{kind} {namespace}/{name} changed under every attempt to patch it; the next refresh retries"
    )]
    Contended {
        kind: String,
        namespace: String,
        name: String,
    },
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod has no Deployment, StatefulSet or DaemonSet owner: nothing to restart.
    NoOwner,
    /// The owner already records this digest (another pod or node got there first).
    AlreadyApplied,
    /// First sighting (a new mount): the digest was recorded without a restart.
    Recorded,
    /// A first sighting found another digest recorded: left alone, no restart.
    NotRecorded,
    /// The owner was restarted.
    Restarted { kind: String, name: String },
    /// The owner was restarted less than the minimum interval ago: try again later.
    RateLimited { wait: Duration },
}

/// One class's record on the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub digest: String,
    /// RFC 3339; absent when the digest was recorded without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
}

/// A stable digest of object IDs and versions (order-independent); no contents go in.
pub fn digest(object_versions: &[(String, String)]) -> String {
    let sorted: BTreeMap<&str, &str> = object_versions
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut h = sha2::Sha256::new();
    for (id, v) in sorted {
        h.update(id.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let out = h.finalize();
    out.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The pod's workload: its controller, or for a ReplicaSet the Deployment controlling it.
pub async fn owner_of(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
) -> Result<Option<(String, String)>, RestartError> {
    let api_err = |op, kind: &str, name: &str| {
        let (kind, namespace, name) = (kind.to_string(), namespace.to_string(), name.to_string());
        move |source| RestartError::Api {
            op,
            kind,
            namespace,
            name,
            source,
        }
    };
    let p = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await
        .map_err(api_err("get", "Pod", pod))?;
    let Some(owner) = controller(p.metadata.owner_references.as_deref()) else {
        return Ok(None);
    };
    match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("apps/v1", "StatefulSet" | "DaemonSet" | "Deployment") => {
            Ok(Some((owner.kind.clone(), owner.name.clone())))
        }
        ("apps/v1", "ReplicaSet") => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .get(&owner.name)
                .await
                .map_err(api_err("get", "ReplicaSet", &owner.name))?;
            Ok(controller(rs.metadata.owner_references.as_deref())
                .filter(|o| o.api_version == "apps/v1" && o.kind == "Deployment")
                .map(|o| (o.kind.clone(), o.name.clone())))
        }
        _ => Ok(None),
    }
}

fn controller(refs: Option<&[OwnerReference]>) -> Option<&OwnerReference> {
    refs?.iter().find(|o| o.controller == Some(true))
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind))
}

/// The per-class records on an owner; an unreadable annotation counts as empty (and is
/// replaced by the next patch).
pub fn records(obj: &DynamicObject) -> BTreeMap<String, Record> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DIGESTS_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// What a mount asks of [`reconcile`].
pub struct Change<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub class: &'a str,
    pub node: &'a str,
    pub digest: &'a str,
    /// Object IDs, for the Event.
    pub objects: Vec<&'a str>,
    /// Whether this pod saw the change happen (a rotation), so a differing record means its
    /// workload runs stale contents; false for a first mount.
    pub rotated: bool,
}

/// Compares the owner's record for the class with `change.digest` and restarts the owner at most
/// once per digest, at most once per `min_interval`.
pub async fn reconcile(
    client: &kube::Client,
    events: &crate::events::PodEvents,
    change: &Change<'_>,
    min_interval: Duration,
) -> Result<Outcome, RestartError> {
    let Some((kind, name)) = owner_of(client, change.namespace, change.pod).await? else {
        return Ok(Outcome::NoOwner);
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), change.namespace, &resource(&kind));
    let api_err = |op| {
        let (kind, namespace, name) = (kind.clone(), change.namespace.to_string(), name.clone());
        move |source| RestartError::Api {
            op,
            kind,
            namespace,
            name,
            source,
        }
    };
    for _ in 0..5 {
        let obj = api.get(&name).await.map_err(api_err("get"))?;
        let mut recs = records(&obj);
        match recs.get(change.class) {
            Some(r) if r.digest == change.digest => return Ok(Outcome::AlreadyApplied),
            Some(_) if !change.rotated => return Ok(Outcome::NotRecorded),
            _ => {}
        }
        let now = time::OffsetDateTime::now_utc();
        let restart = change.rotated && recs.contains_key(change.class);
        if restart {
            let last = recs
                .values()
                .filter_map(|r| r.restarted_at.as_deref())
                .filter_map(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .max();
            if let Some(last) = last {
                let since = Duration::try_from(now - last).unwrap_or_default();
                if since < min_interval {
                    return Ok(Outcome::RateLimited {
                        wait: min_interval - since,
                    });
                }
            }
        }
        let stamp = crate::notify::rfc3339(now);
        recs.insert(
            change.class.to_string(),
            Record {
                digest: change.digest.to_string(),
                restarted_at: if restart {
                    Some(stamp.clone())
                } else {
                    recs.get(change.class).and_then(|r| r.restarted_at.clone())
                },
            },
        );
        let recs_json = serde_json::to_string(&recs).unwrap_or_default();
        let mut patch = serde_json::json!({
            "metadata": {
                "resourceVersion": obj.metadata.resource_version,
                "annotations": { DIGESTS_ANNOTATION: recs_json },
            }
        });
        if restart {
            patch["spec"] = serde_json::json!({
                "template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}
            });
        }
        match api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge::<serde_json::Value>(patch),
            )
            .await
        {
            Ok(_) => {}
            // Someone else wrote the owner since our read: read again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_err("patch")(e)),
        }
        if !restart {
            return Ok(Outcome::Recorded);
        }
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(kind.clone()),
            name: Some(name.clone()),
            namespace: Some(change.namespace.to_string()),
            uid: obj.metadata.uid.clone(),
            ..Default::default()
        };
        let mut note = format!(
            "SecretProviderClass {} changed ({}); pod template restarted, as seen by pod {} on node {}",
            change.class,
            change.objects.join(", "),
            change.pod,
            change.node
        );
        crate::events::truncate_note(&mut note);
        let ev = Event {
            type_: EventType::Normal,
            reason: REASON_RESTARTED.into(),
            note: Some(note),
            action: "RolloutRestart".into(),
            secondary: None,
        };
        events.publish(reference, ev);
        return Ok(Outcome::Restarted { kind, name });
    }
    Err(RestartError::Contended {
        kind,
        namespace: change.namespace.to_string(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_version_sensitive() {
        let a = vec![
            ("secret/a".to_string(), "1".to_string()),
            ("key/b".into(), "1".into()),
        ];
        let b = vec![
            ("key/b".to_string(), "1".to_string()),
            ("secret/a".into(), "1".into()),
        ];
        let c = vec![
            ("key/b".to_string(), "1".to_string()),
            ("secret/a".into(), "2".into()),
        ];
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        assert_eq!(digest(&a).len(), 32);
        // No ambiguity between ID and version boundaries.
        assert_ne!(
            digest(&[("ab".into(), "c".into())]),
            digest(&[("a".into(), "bc".into())])
        );
    }
}
