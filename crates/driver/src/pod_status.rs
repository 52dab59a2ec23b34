//! SecretProviderClassPodStatus: what this node mounted for one pod and class.
//!
//! Read-compare-write: the object is created when missing, updated (with its resourceVersion,
//! so concurrent writers conflict instead of overwriting) only when the node label, owner or
//! status differ, and left alone otherwise. Upstream v1.6 updates it on every publish (#2058).
//!
//! The name is `<pod>-<namespace>-<class>`, so every volume of a pod that uses the same class
//! shares one object with one `targetPath`. A status that names another volume of the same pod
//! (and the same objects and versions) is therefore left as it is: upstream's last-writer-wins
//! made the volumes of such a pod, published at once, overwrite each other's `targetPath` and
//! fail on the conflicts (82 of 160 in issue 14), and rewrote the object at every rotation of
//! each volume. A conflict (another writer got there first, on create or update) is retried
//! on a fresh read after a short random pause.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use secrets_store_api::v1::{
    SecretProviderClassObject, SecretProviderClassPodStatus, SecretProviderClassPodStatusFields,
    SecretProviderClassPodStatusStatus,
};
use secrets_store_api::{INTERNAL_NODE_LABEL, pod_status_name};

use crate::volume_context::VolumeContext;

/// Outcome of [`record`], for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    Unchanged,
}

/// Why the status could not be recorded; the API server's error is kept (a conflict, a
/// permission problem and an outage get different gRPC codes).
#[derive(Debug, thiserror::Error)]
pub enum PodStatusError {
    /// The API server refused or failed the request.
    #[error("{}", api_hint(.0))]
    Api(#[source] kube::Error),
    /// Other writers kept changing the object.
    #[error("{name}: gave up after {attempts} conflicting writes")]
    Conflict { name: String, attempts: u32 },
}

fn api_hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            "forbidden: the driver's ServiceAccount needs get/create/update on \
             secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io (deploy/rbac.yaml)"
        }
        _ => "API request failed",
    }
}

/// Conflicting writes tolerated before giving up (the next publish or rotation retries).
const ATTEMPTS: u32 = 6;

/// The pause before attempt `n` (1-based) after a conflict: random, up to 20 ms doubling per
/// attempt, so writers that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let max_ms = 20u64 << attempt.min(5);
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// Whether `a` and `b` are two volumes of the pod `pod_uid` in kubelet's layout
/// (`<kubelet root>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount`).
fn volumes_of_one_pod(a: &str, b: &str, pod_uid: &str) -> bool {
    let volumes_dir = |t: &str| -> Option<std::path::PathBuf> {
        let d = Path::new(t).parent()?.parent()?;
        d.ends_with(
            Path::new("pods")
                .join(pod_uid)
                .join("volumes/kubernetes.io~csi"),
        )
        .then(|| d.to_path_buf())
    };
    !pod_uid.is_empty() && volumes_dir(a).is_some_and(|d| volumes_dir(b) == Some(d))
}

/// `have` says what `want` says, or the same for another volume of the same pod.
fn equivalent(
    have: &SecretProviderClassPodStatusStatus,
    want: &SecretProviderClassPodStatusStatus,
    pod_uid: &str,
) -> bool {
    if have == want {
        return true;
    }
    let same_but_target = SecretProviderClassPodStatusStatus {
        target_path: want.target_path.clone(),
        ..have.clone()
    } == *want;
    same_but_target && volumes_of_one_pod(&have.target_path, &want.target_path, pod_uid)
}

/// The ids the provider now reports absent ([`provider_proto::ABSENT_OBJECT_VERSION`]: optional
/// objects the store does not have) that the previous status did not already record as absent:
/// what to warn about, once.
pub fn newly_absent(
    previous: &[SecretProviderClassObject],
    versions: &[(String, String)],
) -> Vec<String> {
    versions
        .iter()
        .filter(|(id, v)| {
            v == provider_proto::ABSENT_OBJECT_VERSION
                && !previous
                    .iter()
                    .any(|p| &p.id == id && p.version == provider_proto::ABSENT_OBJECT_VERSION)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Create or update the pod status; returns the object as stored (its uid is an owner of
/// synced Secrets for pods without owners), and the objects it recorded before.
pub async fn record(
    client: &kube::Client,
    node_id: &str,
    vc: &VolumeContext,
    target_path: &str,
    versions: &[(String, String)],
) -> Result<
    (
        SecretProviderClassPodStatus,
        Written,
        Vec<SecretProviderClassObject>,
    ),
    PodStatusError,
> {
    let name = pod_status_name(&vc.pod_name, &vc.pod_namespace, &vc.secret_provider_class);
    let api: Api<SecretProviderClassPodStatus> = Api::namespaced(client.clone(), &vc.pod_namespace);
    let mut objects: Vec<SecretProviderClassObject> = versions
        .iter()
        .map(|(id, version)| SecretProviderClassObject {
            id: id.clone(),
            version: version.clone(),
        })
        .collect();
    objects.sort();
    let status = SecretProviderClassPodStatusStatus {
        pod_name: vc.pod_name.clone(),
        secret_provider_class_name: vc.secret_provider_class.clone(),
        mounted: true,
        target_path: target_path.to_string(),
        objects,
    };
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: vc.pod_name.clone(),
        uid: vc.pod_uid.clone(),
        ..Default::default()
    };
    let explain = PodStatusError::Api;

    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        match api.get_opt(&name).await.map_err(explain)? {
            None => {
                let mut obj =
                    SecretProviderClassPodStatus::new(&name, SecretProviderClassPodStatusFields {});
                obj.metadata = ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(vc.pod_namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        INTERNAL_NODE_LABEL.to_string(),
                        node_id.to_string(),
                    )])),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                };
                obj.status = Some(status.clone());
                match api.create(&PostParams::default(), &obj).await {
                    Ok(created) => return Ok((created, Written::Created, Vec::new())),
                    // AlreadyExists: another volume of the pod created it; read it again.
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(explain(e)),
                }
            }
            Some(mut existing) => {
                let label_ok = existing
                    .labels()
                    .get(INTERNAL_NODE_LABEL)
                    .map(String::as_str)
                    == Some(node_id);
                let owner_ok = existing.owner_references() == std::slice::from_ref(&owner);
                let status_ok = existing
                    .status
                    .as_ref()
                    .is_some_and(|have| equivalent(have, &status, &vc.pod_uid));
                let previous = existing
                    .status
                    .as_ref()
                    .map(|s| s.objects.clone())
                    .unwrap_or_default();
                if label_ok && owner_ok && status_ok {
                    return Ok((existing, Written::Unchanged, previous));
                }
                // The object may carry another node's label (a StatefulSet pod that moved).
                existing
                    .labels_mut()
                    .insert(INTERNAL_NODE_LABEL.to_string(), node_id.to_string());
                existing.metadata.owner_references = Some(vec![owner.clone()]);
                existing.status = Some(status.clone());
                match api.replace(&name, &PostParams::default(), &existing).await {
                    Ok(updated) => return Ok((updated, Written::Updated, previous)),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(explain(e)),
                }
            }
        }
    }
    Err(PodStatusError::Conflict {
        name,
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_optional_object_is_news_once() {
        let absent = provider_proto::ABSENT_OBJECT_VERSION;
        let obj = |id: &str, v: &str| SecretProviderClassObject {
            id: id.into(),
            version: v.into(),
        };
        let now = vec![
            ("secret/a".to_owned(), absent.to_owned()),
            ("secret/b".to_owned(), "v1".to_owned()),
        ];
        assert_eq!(newly_absent(&[], &now), ["secret/a"], "first mount");
        assert!(
            newly_absent(&[obj("secret/a", absent), obj("secret/b", "v0")], &now).is_empty(),
            "already recorded absent: no second warning"
        );
        assert_eq!(
            newly_absent(&[obj("secret/a", "v9")], &now),
            ["secret/a"],
            "it was there and is gone again"
        );
    }

    fn status(target: &str, version: &str) -> SecretProviderClassPodStatusStatus {
        SecretProviderClassPodStatusStatus {
            pod_name: "web".into(),
            secret_provider_class_name: "kv".into(),
            mounted: true,
            target_path: target.into(),
            objects: vec![SecretProviderClassObject {
                id: "secret/foo".into(),
                version: version.into(),
            }],
        }
    }

    const V1: &str = "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/a/mount";
    const V2: &str = "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/b/mount";

    #[test]
    fn another_volume_of_the_same_pod_is_the_same_status() {
        assert!(equivalent(&status(V1, "1"), &status(V1, "1"), "uid-1"));
        assert!(equivalent(&status(V1, "1"), &status(V2, "1"), "uid-1"));
        // Different versions, another pod's volume, another kubelet root, not kubelet's layout.
        assert!(!equivalent(&status(V1, "1"), &status(V2, "2"), "uid-1"));
        assert!(!equivalent(&status(V1, "1"), &status(V2, "1"), "uid-2"));
        let other_root = V1.replace("/var/lib/kubelet", "/other");
        assert!(!equivalent(
            &status(&other_root, "1"),
            &status(V2, "1"),
            "uid-1"
        ));
        assert!(!equivalent(
            &status("/elsewhere", "1"),
            &status(V2, "1"),
            "uid-1"
        ));
        assert!(!equivalent(&status(V1, "1"), &status(V2, "1"), ""));
        let mut unmounted = status(V1, "1");
        unmounted.mounted = false;
        assert!(!equivalent(&unmounted, &status(V2, "1"), "uid-1"));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 1..10 {
            assert!(backoff(attempt) <= Duration::from_millis(640));
        }
    }
}
