//! SecretProviderClassPodStatus: what this node mounted for one pod and class.
//!
//! Read-compare-write: the object is created when missing, updated (with its resourceVersion,
//! so concurrent writers conflict instead of overwriting) only when the node label, owner or
//! status differ, and left alone otherwise. Upstream v1.6 updates it on every publish (#2058).

use std::collections::BTreeMap;

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
const ATTEMPTS: u32 = 3;

/// Create or update the pod status; returns the object as stored (its uid is an owner of
/// synced Secrets for pods without owners).
pub async fn record(
    client: &kube::Client,
    node_id: &str,
    vc: &VolumeContext,
    target_path: &str,
    versions: &[(String, String)],
) -> Result<(SecretProviderClassPodStatus, Written), PodStatusError> {
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

    for _attempt in 0..ATTEMPTS {
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
                    Ok(created) => return Ok((created, Written::Created)),
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
                let status_ok = existing.status.as_ref() == Some(&status);
                if label_ok && owner_ok && status_ok {
                    return Ok((existing, Written::Unchanged));
                }
                // The object may carry another node's label (a StatefulSet pod that moved).
                existing
                    .labels_mut()
                    .insert(INTERNAL_NODE_LABEL.to_string(), node_id.to_string());
                existing.metadata.owner_references = Some(vec![owner.clone()]);
                existing.status = Some(status.clone());
                match api.replace(&name, &PostParams::default(), &existing).await {
                    Ok(updated) => return Ok((updated, Written::Updated)),
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
