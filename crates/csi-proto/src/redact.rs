//! `Debug` and `Drop` for the generated requests that carry secrets.
//!
//! `secrets` holds nodePublishSecretRef values and `volume_context` the service-account tokens
//! kubelet mints (`csi.storage.k8s.io/serviceAccount.tokens`): `Debug` shows their keys only, and
//! dropping a request zeroes their values (prost gives plain `String` maps). The transport's own
//! buffers are outside our reach; what this covers is every copy our code holds.

use std::collections::HashMap;
use std::fmt;

use zeroize::Zeroize;

use crate::v1::{NodeExpandVolumeRequest, NodePublishVolumeRequest, NodeStageVolumeRequest};

/// A map printed as its keys only.
struct Keys<'a>(&'a HashMap<String, String>);

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = self.0.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_set().entries(keys).finish()
    }
}

fn zeroize_values(map: &mut HashMap<String, String>) {
    map.values_mut().for_each(Zeroize::zeroize);
}

impl fmt::Debug for NodePublishVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePublishVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("publish_context", &Keys(&self.publish_context))
            .field("staging_target_path", &self.staging_target_path)
            .field("target_path", &self.target_path)
            .field("volume_capability", &self.volume_capability)
            .field("readonly", &self.readonly)
            .field("secrets", &Keys(&self.secrets))
            .field("volume_context", &Keys(&self.volume_context))
            .finish()
    }
}

impl Drop for NodePublishVolumeRequest {
    fn drop(&mut self) {
        zeroize_values(&mut self.secrets);
        zeroize_values(&mut self.volume_context);
    }
}

impl fmt::Debug for NodeStageVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeStageVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("publish_context", &Keys(&self.publish_context))
            .field("staging_target_path", &self.staging_target_path)
            .field("volume_capability", &self.volume_capability)
            .field("secrets", &Keys(&self.secrets))
            .field("volume_context", &Keys(&self.volume_context))
            .finish()
    }
}

impl Drop for NodeStageVolumeRequest {
    fn drop(&mut self) {
        zeroize_values(&mut self.secrets);
        zeroize_values(&mut self.volume_context);
    }
}

impl fmt::Debug for NodeExpandVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeExpandVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("volume_path", &self.volume_path)
            .field("capacity_range", &self.capacity_range)
            .field("staging_target_path", &self.staging_target_path)
            .field("volume_capability", &self.volume_capability)
            .field("secrets", &Keys(&self.secrets))
            .finish()
    }
}

impl Drop for NodeExpandVolumeRequest {
    fn drop(&mut self) {
        zeroize_values(&mut self.secrets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_keys_not_values() {
        // (Drop types take no `..Default::default()`: fields are set one by one.)
        let mut req = NodePublishVolumeRequest::default();
        req.volume_id = "csi-abc".into();
        req.target_path = "/var/lib/kubelet/pods/x".into();
        req.secrets = HashMap::from([("clientsecret".into(), "hunter2".into())]);
        req.volume_context = HashMap::from([(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            r#"{"api://AzureADTokenExchange":{"token":"eyJtoken"}}"#.into(),
        )]);
        let out = format!("{req:?}");
        assert!(!out.contains("hunter2") && !out.contains("eyJ"), "{out}");
        assert!(
            out.contains("clientsecret") && out.contains("serviceAccount.tokens"),
            "{out}"
        );
        assert!(out.contains("csi-abc"), "{out}");
        let mut stage = NodeStageVolumeRequest::default();
        stage.secrets = HashMap::from([("k".into(), "hunter2".into())]);
        let mut expand = NodeExpandVolumeRequest::default();
        expand.secrets = HashMap::from([("k".into(), "hunter2".into())]);
        let out = format!("{stage:?} {expand:?}");
        assert!(!out.contains("hunter2"), "{out}");
    }
}
