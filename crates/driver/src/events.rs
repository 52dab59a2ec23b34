//! Warning Events on the pod (events.k8s.io/v1), so `kubectl describe pod` shows why a mount,
//! rotation or sync failed. Notes carry object names and error text, never secret values.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::volume_context::VolumeContext;

/// Reasons (bounded set).
pub mod reason {
    pub const FAILED_TO_MOUNT: &str = "FailedToMountSecretsStore";
    pub const MOUNT_ROTATION_FAILED: &str = "MountRotationFailed";
    pub const FAILED_TO_CREATE_SECRET: &str = "FailedToCreateSecret";
    pub const SECRET_OBJECT_MISSING: &str = "SecretObjectNotMounted";
    /// An optional object (issue 16) the store does not have; warned once per absence.
    pub const OPTIONAL_OBJECT_ABSENT: &str = "OptionalSecretObjectAbsent";
    /// A rollout restart asked by a class failed (or is not enabled on the driver).
    pub const ROLLOUT_RESTART_FAILED: &str = "RolloutRestartFailed";
    /// The provider served a last-known-good answer (`maxStaleness`) during an outage.
    pub const SERVED_STALE: &str = "ServedStale";
}

/// Publishes Events about pods.
#[derive(Clone)]
pub struct PodEvents {
    recorder: Recorder,
}

impl PodEvents {
    pub fn new(client: kube::Client, node_id: &str) -> Self {
        let reporter = Reporter {
            controller: "secrets-store-csi-driver".into(),
            instance: Some(node_id.to_string()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// The recorder, for Events on other objects than pods (a restarted workload).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Best effort: a failure to publish is logged, never returned.
    pub async fn warn(
        &self,
        vc: &VolumeContext,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(vc.pod_name.clone()),
            namespace: Some(vc.pod_namespace.clone()),
            uid: Some(vc.pod_uid.clone()),
            ..Default::default()
        };
        let mut note = note;
        truncate_note(&mut note);
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod).await {
            tracing::warn!(reason, error = %daemon::error::Chain(&e), "failed to publish event");
        }
    }
}

/// Event notes are cut to 1000 bytes (on a character boundary).
pub fn truncate_note(note: &mut String) {
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
}
