//! The custom resources of the Secrets Store CSI Driver, group `secrets-store.csi.x-k8s.io`:
//!
//! - [`v1::SecretProviderClass`] (storage version) and the deprecated [`v1alpha1::SecretProviderClass`];
//! - [`v1::SecretProviderClassPodStatus`] and [`v1alpha1::SecretProviderClassPodStatus`];
//! - [`secretsync::SecretSync`] (`secret-sync.x-k8s.io/v1alpha1`, the sync controller's API).
//!
//! Field names, JSON tags and schema shape follow the upstream CRDs so existing objects and
//! manifests keep working: every field is optional (Go `omitempty`), there is no status
//! subresource and no conversion webhook. [`crds`] builds the two multi-version
//! `CustomResourceDefinition`s that `crdgen` writes to `deploy/crds/`.

pub mod crds;
pub mod secretsync;
pub mod v1;
pub mod v1alpha1;

/// The API group of every resource in this crate.
pub const GROUP: &str = "secrets-store.csi.x-k8s.io";

/// Label put on every SecretProviderClassPodStatus: the node that mounted the volume.
pub const INTERNAL_NODE_LABEL: &str = "internal.secrets-store.csi.k8s.io/node-name";

/// Label put on every Kubernetes Secret the driver syncs.
pub const MANAGED_LABEL: &str = "secrets-store.csi.k8s.io/managed";

/// The name of the SecretProviderClassPodStatus recording one pod's mount of one class:
/// `<pod>-<namespace>-<class>`, exactly as upstream (not truncated).
pub fn pod_status_name(pod: &str, namespace: &str, class: &str) -> String {
    format!("{pod}-{namespace}-{class}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_name_is_pod_namespace_class() {
        assert_eq!(pod_status_name("web-0", "prod", "kv"), "web-0-prod-kv");
    }
}
