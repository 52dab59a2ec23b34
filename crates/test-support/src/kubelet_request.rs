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
    let mut m: HashMap<String, String> = [
        ("secretProviderClass", class),
        ("csi.storage.k8s.io/pod.name", pod),
        ("csi.storage.k8s.io/pod.namespace", ns),
        ("csi.storage.k8s.io/pod.uid", uid),
        ("csi.storage.k8s.io/serviceAccount.name", sa),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(t) = tokens {
        m.insert("csi.storage.k8s.io/serviceAccount.tokens".into(), t.into());
    }
    m
}

/// A NodePublishVolumeRequest shaped like kubelet's for an inline ephemeral volume.
pub fn publish_request(
    volume_id: &str,
    target: &Path,
    context: HashMap<String, String>,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        publish_context: HashMap::new(),
        staging_target_path: String::new(),
        target_path: target.display().to_string(),
        volume_capability: Some(csi::VolumeCapability {
            access_type: Some(csi::volume_capability::AccessType::Mount(
                csi::volume_capability::MountVolume {
                    fs_type: String::new(),
                    mount_flags: vec![],
                    volume_mount_group: String::new(),
                },
            )),
            access_mode: Some(csi::volume_capability::AccessMode {
                mode: csi::volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32,
            }),
        }),
        readonly: true,
        secrets: HashMap::new(),
        volume_context: context,
    }
}

/// Kubelet's target path layout.
pub fn kubelet_target(root: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    root.join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~csi")
        .join(volume)
        .join("mount")
}
