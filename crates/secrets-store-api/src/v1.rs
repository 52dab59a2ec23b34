//! `secrets-store.csi.x-k8s.io/v1`, the storage version.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// SecretProviderClassSpec defines the desired state of SecretProviderClass
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "secrets-store.csi.x-k8s.io",
    version = "v1",
    kind = "SecretProviderClass",
    namespaced,
    status = "SecretProviderClassStatus",
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

/// SecretObject defines the desired state of synced K8s secret objects
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    /// name of the K8s secret object
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_name: String,
    /// type of K8s secret object
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// labels of K8s secret object
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// annotations of k8s secret object
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<SecretObjectData>,
}

/// SecretObjectData defines the desired state of synced K8s secret object data
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    /// name of the object to sync
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object_name: String,
    /// data field to populate
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// SecretProviderClassStatus defines the observed state of SecretProviderClass
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretProviderClassStatus {}

/// The pod status has no spec; its fields live in `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "secrets-store.csi.x-k8s.io",
    version = "v1",
    kind = "SecretProviderClassPodStatus",
    namespaced,
    no_spec,
    status = "SecretProviderClassPodStatusStatus",
    doc = "SecretProviderClassPodStatus is the Schema for the secretproviderclassespodstatus API"
)]
pub struct SecretProviderClassPodStatusFields {}

/// SecretProviderClassPodStatusStatus defines the observed state of SecretProviderClassPodStatus
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassPodStatusStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_provider_class_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mounted: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<SecretProviderClassObject>,
}

/// SecretProviderClassObject defines the object fetched from external secrets store
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub struct SecretProviderClassObject {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_round_trips_upstream_yaml() -> anyhow::Result<()> {
        let yaml = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: kv, namespace: default}
spec:
  provider: azure
  parameters: {keyvaultName: kv1, objects: "array: []"}
  secretObjects:
  - secretName: tls
    type: kubernetes.io/tls
    labels: {environment: test}
    data:
    - {objectName: cert, key: tls.crt}
"#;
        let spc: SecretProviderClass = serde_saphyr::from_str(yaml)?;
        assert_eq!(spc.spec.provider, "azure");
        assert_eq!(spc.spec.secret_objects[0].type_, "kubernetes.io/tls");
        assert_eq!(spc.spec.secret_objects[0].data[0].key, "tls.crt");
        let json = serde_json::to_value(&spc)?;
        assert_eq!(
            json["spec"]["secretObjects"][0]["type"],
            "kubernetes.io/tls"
        );
        Ok(())
    }

    #[test]
    fn pod_status_has_no_spec_on_the_wire() -> anyhow::Result<()> {
        let mut s =
            SecretProviderClassPodStatus::new("p-ns-c", SecretProviderClassPodStatusFields {});
        s.status = Some(SecretProviderClassPodStatusStatus {
            pod_name: "p".into(),
            mounted: true,
            ..Default::default()
        });
        let json = serde_json::to_value(&s)?;
        assert!(json.get("spec").is_none(), "{json}");
        assert_eq!(json["status"]["podName"], "p");
        assert_eq!(json["status"]["mounted"], true);
        Ok(())
    }
}
