//! Warning Events on the pod (events.k8s.io/v1), so `kubectl describe pod` shows why a mount,
//! rotation or sync failed. Notes carry object names and error text, never secret values. Sent
//! off the request path and retried through short API outages ([`PodEvents`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

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

/// Events waiting to be sent, at most: beyond, new ones are dropped (and logged).
const QUEUE: usize = 1024;
/// Tries per Event while the API server is unreachable or overloaded (client-go's recorder: 12).
const ATTEMPTS: u32 = 12;
/// Longest wait between two tries of one Event.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Publishes Events about pods and their owners off the request path: [`PodEvents::warn`] and
/// [`PodEvents::publish`] queue the Event and return at once, so a slow or unreachable API
/// server never holds up a NodePublishVolume answer; one task sends them in order and retries
/// one that fails on a transport error, 429 or 5xx (up to 12 tries, waits doubling from
/// `retry_base` to 30 s: about 3.5 minutes of outage with the default 1 s), so Events raised
/// during a short API outage still arrive. Cheap to clone; the task ends when the last clone
/// is dropped.
#[derive(Clone)]
pub struct PodEvents {
    queue: mpsc::Sender<Item>,
}

enum Item {
    Event(Box<(ObjectReference, Event)>),
    /// Answered once every Event queued before it has been sent (or given up on).
    Flush(oneshot::Sender<()>),
}

impl PodEvents {
    /// Must be called within a tokio runtime (it spawns the sending task).
    pub fn new(client: kube::Client, node_id: &str) -> Self {
        Self::with_retry_base(client, node_id, Duration::from_secs(1))
    }

    /// As [`Self::new`], with the first wait before a retry.
    pub fn with_retry_base(client: kube::Client, node_id: &str, retry_base: Duration) -> Self {
        let reporter = Reporter {
            controller: "secrets-store-csi-driver".into(),
            instance: Some(node_id.to_string()),
        };
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(Recorder::new(client, reporter), rx, retry_base));
        Self { queue }
    }

    /// Queues `event` about `reference`. Best effort: a full queue drops it, logged.
    pub fn publish(&self, reference: ObjectReference, event: Event) {
        if let Err(e) = self
            .queue
            .try_send(Item::Event(Box::new((reference, event))))
        {
            let (TrySendError::Full(Item::Event(dropped))
            | TrySendError::Closed(Item::Event(dropped))) = e
            else {
                return;
            };
            let (reference, event) = *dropped;
            tracing::warn!(
                reason = %event.reason,
                object = reference.name.as_deref().unwrap_or_default(),
                "event queue full; event dropped"
            );
        }
    }

    /// Waits until every Event queued so far has been sent or given up on (a shutdown bounds
    /// this with a timeout: through an API outage it can take minutes).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Item::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues a Warning Event on the volume's pod.
    pub fn warn(
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
        self.publish(
            pod,
            Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note),
                action: action.into(),
                secondary: None,
            },
        );
    }
}

/// Sends the queued Events in order until every sender is gone.
async fn send_all(recorder: Recorder, mut rx: mpsc::Receiver<Item>, retry_base: Duration) {
    while let Some(item) = rx.recv().await {
        let (reference, event) = match item {
            Item::Event(queued) => *queued,
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut delay = retry_base;
        for attempt in 1..=ATTEMPTS {
            match recorder.publish(&event, &reference).await {
                Ok(()) => break,
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(reason = %event.reason, attempt, error = %daemon::error::Chain(&e), "event not published yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
                Err(e) => {
                    tracing::warn!(reason = %event.reason, attempts = attempt, error = %daemon::error::Chain(&e), "failed to publish event");
                    break;
                }
            }
        }
    }
}

/// Whether another try may succeed: the API server was unreachable, overloaded or failing; not
/// when it refused the Event (403, 422, ...).
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
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
