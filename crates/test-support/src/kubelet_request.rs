//! Requests shaped like the ones kubelet sends a CSI driver for an inline ephemeral volume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use csi_proto::v1 as csi;

/// The volume context kubelet sends for an inline volume with podInfoOnMount and
/// tokenRequests (upstream-driver.md §2.5).
pub fn kubelet_context(
    class: &str,
    pod: &str,
    ns: &str,
    uid: &str,
    sa: &str,
    tokens: Option<&str>,
) -> HashMap<String, String> {
    csi_proto::kubelet::inline_volume_context(class, pod, ns, uid, sa, tokens)
}

/// A NodePublishVolumeRequest shaped like kubelet's for an inline ephemeral volume.
pub fn publish_request(
    volume_id: &str,
    target: &Path,
    context: HashMap<String, String>,
) -> csi::NodePublishVolumeRequest {
    csi_proto::kubelet::inline_publish_request(volume_id, target, context, HashMap::new())
}

/// Kubelet's target path layout.
pub fn kubelet_target(root: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    root.join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~csi")
        .join(volume)
        .join("mount")
}
