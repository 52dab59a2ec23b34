//! `secret-sync.x-k8s.io/v1alpha1` `SecretSync`: the API of the Secrets Store Sync Controller
//! (kubernetes-sigs/secrets-store-sync-controller). One SecretSync names one Kubernetes Secret
//! (same name, same namespace) that the sync controller fills from a provider, without a pod.
//!
//! Field names, validation (lengths, patterns, CEL rules, list-map keys, the `Opaque` default)
//! and the status subresource follow the upstream CRD, so manifests written for the upstream
//! controller are accepted unchanged; `crds::all` checks the shape against the upstream schema
//! in its tests.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "secret-sync.x-k8s.io";

/// Label put on every Secret the sync controller writes (value empty), and the reserved prefix
/// of labels and annotations in `secretObject`.
pub const CONTROLLER_LABEL: &str = "secrets-store.sync.x-k8s.io";

/// Pattern of `sourcePath` and `targetKey`.
pub const KEY_PATTERN: &str =
    r"^[A-Za-z0-9.]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?(\/([0-9]+))*$";
/// Pattern of `secretProviderClassName` and `serviceAccountName` (a DNS subdomain).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern of `forceSynchronization`.
pub const FORCE_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?$";

/// Desired state of one synchronized Secret.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "secret-sync.x-k8s.io",
    version = "v1alpha1",
    kind = "SecretSync",
    namespaced,
    status = "SecretSyncStatus",
    doc = "SecretSync: the desired and observed state of one synchronized Secret. The Secret \
           has the SecretSync's name and namespace."
)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncSpec {
    /// Name of the sync controller meant to serve this object (empty: any).
    #[serde(default)]
    #[schemars(extend("default" = ""))]
    pub secret_sync_controller_name: String,
    /// Name of the SecretProviderClass (same namespace) that says how to reach the secret store.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub secret_provider_class_name: String,
    /// Service account (same namespace) whose token the provider uses to reach the secret
    /// store; the token audiences are the controller's `--token-request-audience`.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub service_account_name: String,
    /// The Secret to write.
    pub secret_object: SecretObject,
    /// Changing this value forces a new synchronization. It does not resolve server-side apply
    /// conflicts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253), regex(pattern = FORCE_PATTERN))]
    pub force_synchronization: String,
}

/// The synchronized Secret: type, data, labels and annotations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    /// Secret type, e.g. Opaque, kubernetes.io/tls, kubernetes.io/basic-auth. The controller
    /// must be allowed to write Secrets of this type.
    #[serde(rename = "type", default)]
    #[schemars(length(max = 253), extend("default" = "Opaque"))]
    pub type_: String,
    /// Which provider file (sourcePath) goes into which Secret key (targetKey).
    #[schemars(
        length(min = 1),
        extend("x-kubernetes-list-map-keys" = ["targetKey"], "x-kubernetes-list-type" = "map")
    )]
    pub data: Vec<SecretObjectData>,
    /// Labels of the Secret. Keys under secrets-store.sync.x-k8s.io are reserved for the
    /// controller.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "message": "Label keys must not exceed 317 characters (254 for prefix+separator, 63 for name), label values must not exceed 63 characters.",
            "rule": "(self.all(x, x.size() <= 317 && self[x].size() <= 63) == true)"
        },
        {
            "message": "Labels should not contain secrets-store.sync.x-k8s.io. This key is reserved for the controller.",
            "rule": "(self.all(x, x.startsWith('secrets-store.sync.x-k8s.io') == false))"
        }
    ]))]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the Secret. Keys under secrets-store.sync.x-k8s.io are reserved for the
    /// controller.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "message": "Annotations keys must not exceed 317 characters (254 for prefix+separator, 63 for name), annotation values must not exceed 256 kB.",
            "rule": "(self.all(x, x.size() < 317 && self[x].size() <= 262144) == true)"
        },
        {
            "message": "Annotations should not contain secrets-store.sync.x-k8s.io. This key is reserved for the controller.",
            "rule": "(self.all(x, x.startsWith('secrets-store.sync.x-k8s.io') == false))"
        }
    ]))]
    pub annotations: BTreeMap<String, String>,
}

/// One Secret key and the provider file it comes from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    /// Path of a file in the provider's Mount response (the object name or alias; `name/0` for
    /// one element of a split object).
    #[schemars(length(min = 1, max = 253), regex(pattern = KEY_PATTERN))]
    pub source_path: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = KEY_PATTERN))]
    pub target_key: String,
}

/// Observed state of the synchronization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncStatus {
    /// Keyed digest (PBKDF2-HMAC-SHA512, salted with the SecretSync's UID) of the Secret data,
    /// the class's UID and generation and the SecretSync's UID, generation and
    /// forceSynchronization; the Secret is rewritten when it changes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_hash: String,
    /// When the Secret was last fetched from the provider and written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub last_successful_sync_time: Option<Time>,
    /// `SecretCreated` and `SecretUpdated`, with the reason of the last attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-map-keys" = ["type"], "x-kubernetes-list-type" = "map")
    )]
    pub conditions: Vec<StatusCondition>,
}

/// `metav1.Condition`, with the schema the Kubernetes API conventions give it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
pub struct StatusCondition(pub Condition);

impl JsonSchema for StatusCondition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "When the condition last changed status.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "Human-readable details of the last transition; may be empty.",
                    "type": "string",
                    "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "The metadata.generation the condition was set for.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "CamelCase identifier of the reason for the last transition.",
                    "type": "string",
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {
                    "description": "True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "Condition type, CamelCase or foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        })
    }
}

fn date_time(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "When the Secret was last fetched from the provider and written.",
        "type": "string",
        "format": "date-time"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_sample_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        let yaml = r#"
apiVersion: secret-sync.x-k8s.io/v1alpha1
kind: SecretSync
metadata: {name: sse2esecret, namespace: default}
spec:
  serviceAccountName: default
  secretProviderClassName: e2e-providerspc
  secretObject:
    type: kubernetes.io/tls
    data:
    - {sourcePath: cert, targetKey: tls.crt}
    - {sourcePath: cert, targetKey: tls.key}
  forceSynchronization: "1"
"#;
        let ss: SecretSync = serde_saphyr::from_str(yaml)?;
        assert_eq!(ss.spec.secret_object.type_, "kubernetes.io/tls");
        assert_eq!(ss.spec.secret_object.data[1].target_key, "tls.key");
        assert_eq!(ss.spec.force_synchronization, "1");
        let json = serde_json::to_value(&ss)?;
        assert_eq!(
            json["spec"]["secretObject"]["data"][0]["sourcePath"],
            "cert"
        );
        assert_eq!(json["spec"]["secretSyncControllerName"], "");
        assert!(json.get("status").is_none(), "{json}");
        Ok(())
    }
}
