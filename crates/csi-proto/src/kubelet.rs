//! What kubelet sends a CSI driver for an inline ephemeral volume (`volumes[].csi` in a pod),
//! with `podInfoOnMount: true` and, when the CSIDriver asks for them, service-account tokens.
//! Used by the CLI's local mount and by tests, so both speak exactly kubelet's shape.

use std::collections::HashMap;
use std::path::Path;

use crate::v1 as csi;

/// The volume context of an inline volume: `volumeAttributes` (here `secretProviderClass`) plus
/// the pod information kubelet adds.
pub fn inline_volume_context(
    class: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
    service_account: &str,
    tokens: Option<&str>,
) -> HashMap<String, String> {
    let mut context: HashMap<String, String> = [
        ("secretProviderClass", class),
        ("csi.storage.k8s.io/pod.name", pod),
        ("csi.storage.k8s.io/pod.namespace", namespace),
        ("csi.storage.k8s.io/pod.uid", uid),
        ("csi.storage.k8s.io/serviceAccount.name", service_account),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(t) = tokens {
        context.insert("csi.storage.k8s.io/serviceAccount.tokens".into(), t.into());
    }
    context
}

/// NodePublishVolume for an inline volume: read-only, mount access type, single-node
/// reader-only, `secrets` from the volume's `nodePublishSecretRef`.
pub fn inline_publish_request(
    volume_id: &str,
    target: &Path,
    volume_context: HashMap<String, String>,
    secrets: HashMap<String, String>,
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
        secrets,
        volume_context,
    }
}
