//! `secrets-store.csi.x-k8s.io/v1alpha1`: served but deprecated; objects stored through it are
//! read by the driver through v1 (the schemas are the same, so the apiserver converts with
//! strategy None).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::v1::{
    SecretObject, SecretObjectData, SecretProviderClassObject, SecretProviderClassPodStatusStatus,
};

/// The warning the apiserver returns to clients of this version.
pub const DEPRECATION_WARNING: &str =
    "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1 instead.";

/// SecretProviderClassSpec defines the desired state of SecretProviderClass
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "secrets-store.csi.x-k8s.io",
    version = "v1alpha1",
    kind = "SecretProviderClass",
    namespaced,
    status = "SecretProviderClassStatus",
    deprecated = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1 instead.",
    doc = "SecretProviderClass is the Schema for the secretproviderclasses API"
)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassSpec {
    /// Configuration for provider name
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Configuration for specific provider
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_objects: Vec<SecretObject>,
}

/// SecretProviderClassStatus defines the observed state of SecretProviderClass (v1alpha1 only
/// kept the pods that used the class).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_pod: Vec<ByPodStatus>,
}

/// ByPodStatus defines the state of SecretProviderClass as seen by an individual controller
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ByPodStatus {
    /// id of the pod that wrote the status
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// namespace of the pod that wrote the status
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// The pod status has no spec; its fields live in `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "secrets-store.csi.x-k8s.io",
    version = "v1alpha1",
    kind = "SecretProviderClassPodStatus",
    namespaced,
    no_spec,
    status = "SecretProviderClassPodStatusStatus",
    deprecated = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1 instead.",
    doc = "SecretProviderClassPodStatus is the Schema for the secretproviderclassespodstatus API"
)]
pub struct SecretProviderClassPodStatusFields {}

impl From<SecretProviderClass> for crate::v1::SecretProviderClass {
    /// v1alpha1 and v1 share one schema; the v1alpha1 `status.byPod` has no v1 counterpart.
    fn from(old: SecretProviderClass) -> Self {
        crate::v1::SecretProviderClass {
            metadata: old.metadata,
            spec: crate::v1::SecretProviderClassSpec {
                provider: old.spec.provider,
                parameters: old.spec.parameters,
                secret_objects: old.spec.secret_objects,
            },
            status: None,
        }
    }
}
