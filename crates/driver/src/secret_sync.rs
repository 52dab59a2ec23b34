//! Syncing mounted objects into Kubernetes Secrets (`secretObjects` of the class).
//!
//! Done in the publish path, right after the files are written (upstream runs a separate
//! reconciler off the pod status; same result, one fewer watch and no 5 s patch loop). Each
//! Secret is read, compared and written only when its data, labels, annotations or owners
//! differ (upstream v1.6 rewrites it on every reconcile, #2057). Owner references are added,
//! never removed, so a Secret shared by several deployments lives until the last owner goes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Resource, ResourceExt};
use secrets_store_api::MANAGED_LABEL;
use secrets_store_api::v1::{SecretObject, SecretProviderClassPodStatus};

use crate::pod_status::Written;
use crate::tls;
use crate::volume_context::VolumeContext;
use sensitive::SecretBytes;

/// One failed secretObject (or a failure common to all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    pub secret_name: String,
    /// Bounded, for metrics and the Event reason.
    pub kind: &'static str,
    pub message: String,
}

/// What happened to each Secret.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub written: Vec<(String, Written)>,
    pub failures: Vec<SyncFailure>,
}

/// The Secret data for one secretObject from the mounted files, as upstream builds it.
pub fn secret_data(
    obj: &SecretObject,
    files: &BTreeMap<String, SecretBytes>,
) -> Result<BTreeMap<String, SecretBytes>, SyncFailure> {
    let fail = |kind, message: String| SyncFailure {
        secret_name: obj.secret_name.clone(),
        kind,
        message,
    };
    if obj.secret_name.trim().is_empty() || obj.type_.trim().is_empty() || obj.data.is_empty() {
        return Err(fail(
            "InvalidSecretObject",
            format!(
                "secretObjects entry {:?} needs secretName, type and data all set",
                obj.secret_name
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for d in &obj.data {
        let (object_name, key) = (d.object_name.trim(), d.key.trim());
        if object_name.is_empty() || key.is_empty() {
            return Err(fail(
                "InvalidSecretObject",
                format!(
                    "secretObjects {:?}: every data entry needs objectName and key",
                    obj.secret_name
                ),
            ));
        }
        let Some(content) = files.get(object_name) else {
            return Err(fail(
                "SecretObjectNotMounted",
                format!(
                    "secretObjects {:?}: data key {key:?} names object {object_name:?}, which the provider did not \
                     return; use the object's file name (or objectAlias) as objectName",
                    obj.secret_name
                ),
            ));
        };
        let value = if obj.type_ == "kubernetes.io/tls" {
            match key {
                "tls.crt" => tls::certificate_chain(object_name, content),
                "tls.key" => tls::private_key(object_name, content),
                other => {
                    return Err(fail(
                        "InvalidSecretObject",
                        format!(
                            "secretObjects {:?} of type kubernetes.io/tls: key {other:?} must be tls.crt or tls.key",
                            obj.secret_name
                        ),
                    ));
                }
            }
            .map_err(|e| fail("InvalidTlsObject", format!("secretObjects {:?}: {e}", obj.secret_name)))?
        } else {
            content.clone()
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Owner references for synced Secrets: the pod's owners (ReplicaSet, StatefulSet, …) without
/// the controller flag, or the pod status for a pod without owners.
pub fn owners(pod: &Pod, pod_status: &SecretProviderClassPodStatus) -> Vec<OwnerReference> {
    let from_pod: Vec<OwnerReference> = pod
        .owner_references()
        .iter()
        .map(|o| OwnerReference {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            ..Default::default()
        })
        .collect();
    if !from_pod.is_empty() {
        return from_pod;
    }
    vec![OwnerReference {
        api_version: SecretProviderClassPodStatus::api_version(&()).into_owned(),
        kind: SecretProviderClassPodStatus::kind(&()).into_owned(),
        name: pod_status.name_any(),
        uid: pod_status.uid().unwrap_or_default(),
        ..Default::default()
    }]
}

/// Sync every secretObject of the class. Failures are collected, not returned early: one bad
/// entry does not stop the others.
pub async fn sync(
    client: &kube::Client,
    vc: &VolumeContext,
    secret_objects: &[SecretObject],
    files: &BTreeMap<String, SecretBytes>,
    pod_status: &SecretProviderClassPodStatus,
) -> SyncReport {
    let mut report = SyncReport::default();
    if secret_objects.is_empty() {
        return report;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &vc.pod_namespace);
    let pod = match pods.get(&vc.pod_name).await {
        Ok(p) if p.uid().as_deref() == Some(vc.pod_uid.as_str()) => p,
        Ok(_) => {
            report.failures.push(SyncFailure {
                secret_name: String::new(),
                kind: "PodNotFound",
                message: format!(
                    "pod {}/{} was replaced (uid differs); not syncing",
                    vc.pod_namespace, vc.pod_name
                ),
            });
            return report;
        }
        Err(e) => {
            report.failures.push(SyncFailure {
                secret_name: String::new(),
                kind: "PodNotFound",
                message: format!(
                    "reading pod {}/{} for owner references: {}",
                    vc.pod_namespace,
                    vc.pod_name,
                    explain(&e, "get", "pods")
                ),
            });
            return report;
        }
    };
    let owner_refs = owners(&pod, pod_status);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &vc.pod_namespace);
    for obj in secret_objects {
        let data = match secret_data(obj, files) {
            Ok(d) => d,
            Err(f) => {
                report.failures.push(f);
                continue;
            }
        };
        match upsert(&secrets, obj, &data, &owner_refs).await {
            Ok(w) => report.written.push((obj.secret_name.clone(), w)),
            Err(message) => report.failures.push(SyncFailure {
                secret_name: obj.secret_name.clone(),
                kind: "FailedToCreateSecret",
                message: format!("secret {}/{}: {message}", vc.pod_namespace, obj.secret_name),
            }),
        }
    }
    report
}

fn explain(e: &kube::Error, verb: &str, resource: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden ({}): the driver's ServiceAccount needs `{verb}` on {resource} \
             (deploy/rbac.yaml; with the Helm chart, set syncSecret.enabled=true)",
            s.message
        ),
        other => other.to_string(),
    }
}

async fn upsert(
    api: &Api<Secret>,
    obj: &SecretObject,
    data: &BTreeMap<String, SecretBytes>,
    owner_refs: &[OwnerReference],
) -> Result<Written, String> {
    let data: BTreeMap<String, ByteString> = data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    let mut labels = obj.labels.clone();
    labels.insert(MANAGED_LABEL.into(), "true".into());
    for _attempt in 0..3 {
        match api
            .get_opt(&obj.secret_name)
            .await
            .map_err(|e| explain(&e, "get", "secrets"))?
        {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(obj.secret_name.clone()),
                        labels: Some(labels.clone()),
                        annotations: (!obj.annotations.is_empty()).then(|| obj.annotations.clone()),
                        owner_references: Some(owner_refs.to_vec()),
                        ..Default::default()
                    },
                    type_: Some(obj.type_.clone()),
                    data: Some(data.clone()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => return Ok(Written::Created),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(explain(&e, "create", "secrets")),
                }
            }
            Some(existing) => {
                let existing_type = existing.type_.clone().unwrap_or_else(|| "Opaque".into());
                if existing_type != obj.type_ {
                    return Err(format!(
                        "exists with type {existing_type}, the class wants {}; a Secret's type cannot change, \
                         delete the Secret to let the driver recreate it",
                        obj.type_
                    ));
                }
                let mut want = existing.clone();
                let l = want.labels_mut();
                l.extend(labels.clone());
                if !obj.annotations.is_empty() {
                    want.annotations_mut().extend(obj.annotations.clone());
                }
                let refs = want.metadata.owner_references.get_or_insert_with(Vec::new);
                for r in owner_refs {
                    if !refs.iter().any(|e| e.uid == r.uid) {
                        refs.push(r.clone());
                    }
                }
                want.data = Some(data.clone());
                want.string_data = None;
                if want == existing {
                    return Ok(Written::Unchanged);
                }
                match api
                    .replace(&obj.secret_name, &PostParams::default(), &want)
                    .await
                {
                    Ok(_) => return Ok(Written::Updated),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(explain(&e, "update", "secrets")),
                }
            }
        }
    }
    Err("gave up after 3 conflicting writes".into())
}

#[cfg(test)]
mod tests {
    use secrets_store_api::v1::SecretObjectData;

    use super::*;

    fn obj(type_: &str, data: &[(&str, &str)]) -> SecretObject {
        SecretObject {
            secret_name: "s".into(),
            type_: type_.into(),
            data: data
                .iter()
                .map(|(o, k)| SecretObjectData {
                    object_name: (*o).into(),
                    key: (*k).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn opaque_data_and_missing_object() {
        let files = BTreeMap::from([("foo".to_string(), SecretBytes::new(b"bar".to_vec()))]);
        let d = secret_data(&obj("Opaque", &[("foo", "username")]), &files);
        assert_eq!(
            d.ok()
                .and_then(|d| d.get("username").map(|v| v.expose().to_vec())),
            Some(b"bar".to_vec())
        );
        let e = secret_data(&obj("Opaque", &[("nope", "k")]), &files).err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some("SecretObjectNotMounted"));
        assert!(e.is_some_and(|e| e.message.contains("\"nope\"") && !e.message.contains("bar")));
        let e = secret_data(&obj("", &[("foo", "k")]), &files).err();
        assert_eq!(e.map(|e| e.kind), Some("InvalidSecretObject"));
        let e = secret_data(&obj("kubernetes.io/tls", &[("foo", "ca.crt")]), &files).err();
        assert!(e.is_some_and(|e| e.message.contains("tls.crt or tls.key")));
    }
}
