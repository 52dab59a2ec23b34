//! The CSI Identity and Node services: the NodePublishVolume pipeline and its cleanup.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use csi_proto::v1 as csi;
use tracing::Instrument;

use crate::class_source::ClassSource;
use crate::config::Config;
use crate::error::PublishError;
use crate::events::{PodEvents, reason};
use crate::metrics::Metrics;
use crate::mounter::Mounter;
use crate::notify::OnChange;
use crate::provider::{MountCall, ProviderClient};
use crate::volume_context::{self, VolumeContext};
use crate::{pod_status, secret_sync, writer};

mod grpc;
mod target;
#[cfg(test)]
pub(crate) mod tests;

pub use grpc::{grpc_timeout, parse_grpc_timeout};
use sensitive::SecretBytes;
use target::{cleanup_target, ensure_mount_point};

/// The API-server side effects of a publish: pod status, Secret sync, Events. Absent in the
/// demo / CLI (class from a file).
#[derive(Clone)]
pub struct KubeSinks {
    pub client: kube::Client,
    pub events: PodEvents,
}

impl KubeSinks {
    pub fn new(client: kube::Client, node_id: &str) -> Self {
        Self {
            events: PodEvents::new(client.clone(), node_id),
            client,
        }
    }
}

/// What a successful NodePublishVolume did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// First mount: tmpfs mounted, files written.
    Mounted,
    /// Already mounted and rotation is off: nothing to do.
    AlreadyMounted,
    /// Rotation on, but the volume was refreshed less than the poll interval ago.
    RotationSkipped,
    /// Rotation refresh; `changed` says whether files changed on disk.
    Refreshed { changed: bool },
    /// Rotation refresh failed; the previous files are kept (the error went to an Event and
    /// the rotation error metric, and is not returned to kubelet: kubernetes/kubernetes#121271).
    RefreshFailed,
}

/// The CSI node plugin. Cheap to clone; implements the tonic `Identity` and `Node` traits and
/// can be called in-process ([`NodeService::publish`], [`NodeService::unpublish`]).
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    classes: Arc<dyn ClassSource>,
    mounter: Arc<dyn Mounter>,
    provider: Arc<dyn ProviderClient>,
    kube: Option<KubeSinks>,
    metrics: Arc<Metrics>,
    /// One lock per target path: kubelet serialises calls per volume, but nothing else does.
    /// An entry lives only while some call holds or waits on it ([`NodeService::release_lock`]).
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// How old, at most, each mounted volume's contents are: the start of its last successful
    /// provider call less the max age that call asked for (rotation gate). Entries go on
    /// unpublish and when a first mount fails.
    refreshed: Mutex<HashMap<PathBuf, Instant>>,
    /// Per volume of an `on-change: rollout-restart` class: the object digest its workload is
    /// known to be in step with (recorded on, or restarted for, the owner). Entries go with
    /// the `refreshed` ones.
    restart_digests: Mutex<HashMap<PathBuf, String>>,
}

impl NodeService {
    /// Waits until the Events raised so far have been sent (they go out in the background; see
    /// [`PodEvents`]); at once without an API server.
    pub async fn flush_events(&self) {
        if let Some(k) = &self.inner.kube {
            k.events.flush().await;
        }
    }

    pub fn new(
        config: Config,
        classes: Arc<dyn ClassSource>,
        mounter: Arc<dyn Mounter>,
        provider: Arc<dyn ProviderClient>,
        kube: Option<KubeSinks>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                classes,
                mounter,
                provider,
                kube,
                metrics,
                locks: Mutex::default(),
                refreshed: Mutex::default(),
                restart_digests: Mutex::default(),
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    // Poisoned std mutexes, here and in every crate of the workspace: the guarded value is taken
    // back with `PoisonError::into_inner`. The maps below are only ever changed by single inserts
    // and removes, which leave them consistent even if a holder panicked; handing out a fresh
    // value instead would silently drop the per-target serialisation.

    /// The lock of `target`, shared with every other call on the same target.
    fn lock_for(&self, target: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.to_path_buf())
            .or_default()
            .clone()
    }

    /// Gives back `lock` (from [`Self::lock_for`], its guard already dropped) and removes the
    /// map's entry when no other call holds or waits on it. Handles are only cloned under the
    /// map's mutex, so with that mutex held a count of two (the map's and `lock`) means nobody
    /// else has it; a later call then makes a fresh lock, as good as the idle one removed.
    fn release_lock(&self, target: &Path, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if locks.get(target).is_some_and(|l| Arc::ptr_eq(l, &lock)) && Arc::strong_count(&lock) == 2
        {
            locks.remove(target);
        }
    }

    /// Entries in the lock map and the refresh map.
    #[cfg(test)]
    pub(crate) fn map_sizes(&self) -> (usize, usize) {
        let locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let refreshed = self
            .inner
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (locks, refreshed)
    }

    /// NodePublishVolume. `timeout` bounds the provider call (kubelet's deadline).
    pub async fn publish(
        &self,
        req: csi::NodePublishVolumeRequest,
        timeout: Duration,
    ) -> Result<Published, PublishError> {
        if req.volume_capability.is_none() {
            return Err(PublishError::InvalidArgument(
                "Volume capability missing in request".into(),
            ));
        }
        if req.volume_id.is_empty() {
            return Err(PublishError::InvalidArgument(
                "Volume ID missing in request".into(),
            ));
        }
        if req.target_path.is_empty() {
            return Err(PublishError::InvalidArgument(
                "Target path missing in request".into(),
            ));
        }
        if req.volume_context.is_empty() {
            return Err(PublishError::InvalidArgument(
                "Volume attributes missing in request".into(),
            ));
        }
        // Validated here so a bad value fails before anything is mounted.
        volume_mount_group(&req)?;
        let vc = VolumeContext::parse(&req.volume_context, &req.secrets)?;
        // One span per publish: every line below carries the pod, namespace and class.
        let span = tracing::info_span!(
            "publish",
            pod = %vc.pod_name, namespace = %vc.pod_namespace, class = %vc.secret_provider_class
        );
        self.publish_parsed(req, vc, timeout).instrument(span).await
    }

    async fn publish_parsed(
        &self,
        req: csi::NodePublishVolumeRequest,
        vc: VolumeContext,
        timeout: Duration,
    ) -> Result<Published, PublishError> {
        let target = PathBuf::from(&req.target_path);
        let lock = self.lock_for(&target);
        let guard = lock.lock().await;
        let started = Instant::now();
        let mut provider = None;
        let outcome = self
            .publish_locked(&req, &vc, &target, timeout, &mut provider)
            .await;
        drop(guard);
        self.release_lock(&target, lock);
        let provider_label = self.known_provider(provider.as_deref()).await;
        match &outcome {
            Ok(Published::Refreshed { changed }) => {
                self.inner.metrics.publish_ok(&provider_label);
                self.inner.metrics.rotation(
                    &provider_label,
                    *changed,
                    started.elapsed().as_secs_f64(),
                );
            }
            Ok(_) => self.inner.metrics.publish_ok(&provider_label),
            Err(e) => {
                self.inner.metrics.publish_error(&provider_label, e.kind());
                tracing::warn!(
                    error_type = e.kind(), error = %e.render(), "NodePublishVolume failed"
                );
                if let Some(k) = &self.inner.kube {
                    k.events.warn(
                        &vc,
                        reason::FAILED_TO_MOUNT,
                        "NodePublishVolume",
                        e.render(),
                    );
                }
            }
        }
        outcome
    }

    /// A bounded provider label: the class's provider if its socket exists on this node, else
    /// `unknown`. The sockets are looked up on the blocking pool.
    async fn known_provider(&self, name: Option<&str>) -> String {
        let Some(name) = name.filter(|n| !n.is_empty() && crate::provider::valid_provider_name(n))
        else {
            return "unknown".into();
        };
        let socks: Vec<PathBuf> = self
            .inner
            .config
            .provider_dirs
            .iter()
            .map(|d| d.join(format!("{name}.sock")))
            .collect();
        let found = blocking(move || fs_probe(|| socks.iter().any(|s| s.exists())))
            .await
            .unwrap_or(false);
        if found {
            name.to_owned()
        } else {
            "unknown".into()
        }
    }

    async fn publish_locked(
        &self,
        req: &csi::NodePublishVolumeRequest,
        vc: &VolumeContext,
        target: &Path,
        timeout: Duration,
        provider_out: &mut Option<String>,
    ) -> Result<Published, PublishError> {
        let rotation = self.inner.config.rotation;
        let max_age = rotation.map(rotation_max_age);
        let mounter = self.inner.mounter.clone();
        let t = target.to_path_buf();
        let mounted = blocking(move || ensure_mount_point(mounter.as_ref(), &t)).await??;

        if mounted {
            let Some(interval) = rotation else {
                return Ok(Published::AlreadyMounted);
            };
            if self
                .refreshed_within(target, interval, max_age.unwrap_or_default())
                .await?
            {
                return Ok(Published::RotationSkipped);
            }
        }

        let asked = Instant::now();
        let result = self
            .refresh(req, vc, target, timeout, mounted, max_age, provider_out)
            .await;
        self.inner.metrics.volume_refreshed(result.is_ok());
        match result {
            Ok(changed) => {
                let as_of = max_age.map_or(asked, |m| asked.checked_sub(m).unwrap_or(asked));
                self.mark_refreshed(target, as_of);
                Ok(if mounted {
                    Published::Refreshed { changed }
                } else {
                    Published::Mounted
                })
            }
            Err(e) if mounted => {
                // Rotation: keep the last good files; report through an Event and the metric.
                let provider = self.known_provider(provider_out.as_deref()).await;
                self.inner.metrics.rotation_error(&provider, e.kind());
                tracing::warn!(
                    error_type = e.kind(), error = %e.render(), "rotation refresh failed; keeping the mounted contents"
                );
                if let Some(k) = &self.inner.kube {
                    k.events
                        .warn(vc, reason::MOUNT_ROTATION_FAILED, "Rotate", e.render());
                }
                Ok(Published::RefreshFailed)
            }
            Err(e) => {
                // First mount failed: unmount and remove the target, so nothing is left behind
                // and kubelet's retry starts clean.
                let mounter = self.inner.mounter.clone();
                let t = target.to_path_buf();
                if let Ok(Err(cleanup)) =
                    blocking(move || cleanup_target(mounter.as_ref(), &t)).await
                {
                    tracing::warn!(error = %cleanup.render(), "cleanup after failed publish");
                }
                // A stale mount point of an earlier publish may have left an entry.
                self.forget_refreshed(target);
                Err(e)
            }
        }
    }

    /// Class lookup, tmpfs mount (unless `mounted`), provider call and recording.
    #[allow(clippy::too_many_arguments)]
    async fn refresh(
        &self,
        req: &csi::NodePublishVolumeRequest,
        vc: &VolumeContext,
        target: &Path,
        timeout: Duration,
        mounted: bool,
        max_age: Option<Duration>,
        provider_out: &mut Option<String>,
    ) -> Result<bool, PublishError> {
        let class = self
            .inner
            .classes
            .get(&vc.pod_namespace, &vc.secret_provider_class)
            .await?;
        let (ns, name) = (vc.pod_namespace.clone(), vc.secret_provider_class.clone());
        *provider_out = Some(class.spec.provider.clone());
        if class.spec.provider.is_empty() {
            return Err(PublishError::ClassInvalid {
                namespace: ns,
                name,
                reason: "spec.provider is not set: name the provider (e.g. azure)".into(),
                source: None,
            });
        }
        if class.spec.parameters.is_empty() {
            return Err(PublishError::ClassInvalid {
                namespace: ns,
                name,
                reason: "spec.parameters is empty: a provider needs at least one parameter".into(),
                source: None,
            });
        }
        if !req.readonly {
            return Err(PublishError::InvalidArgument(
                "Readonly is not true in request: set `readOnly: true` on the pod's csi volume"
                    .into(),
            ));
        }
        let call = MountCall {
            provider: class.spec.provider.clone(),
            attributes: vc.provider_attributes(&class.spec.parameters, max_age)?,
            secrets: volume_context::provider_secrets(&req.secrets)?,
            target_path: req.target_path.clone(),
            permission: volume_context::PROVIDER_PERMISSION.into(),
            current_object_versions: Vec::new(),
            timeout,
        };
        let on_change =
            OnChange::from_annotations(class.metadata.annotations.as_ref()).map_err(|reason| {
                PublishError::ClassInvalid {
                    namespace: vc.pod_namespace.clone(),
                    name: vc.secret_provider_class.clone(),
                    reason,
                    source: None,
                }
            })?;
        if !mounted {
            let mounter = self.inner.mounter.clone();
            let t = target.to_path_buf();
            blocking(move || mounter.mount(&t))
                .await?
                .map_err(|source| PublishError::Mount {
                    path: target.display().to_string(),
                    source,
                })?;
        }
        let group = volume_mount_group(req)?;
        let changed = self
            .fetch_and_record(vc, &class, call, target, group, on_change, mounted)
            .await?;
        Ok(changed)
    }

    /// Provider call, file write, pod status, Secret sync and the rollout restart. Returns
    /// whether files changed.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_and_record(
        &self,
        vc: &VolumeContext,
        class: &secrets_store_api::v1::SecretProviderClass,
        call: MountCall,
        target: &Path,
        group: Option<u32>,
        on_change: OnChange,
        mounted: bool,
    ) -> Result<bool, PublishError> {
        let provider = call.provider.clone();
        let out = self.inner.provider.mount(call).await?;
        if let Some(age) = out.stale_for {
            tracing::warn!(provider = %provider, age_secs = age.as_secs(), "the provider served last-known-good contents (maxStaleness): Key Vault or Entra ID is unreachable");
            if let Some(k) = &self.inner.kube {
                k.events
                    .warn(
                        vc,
                        reason::SERVED_STALE,
                        "Mount",
                        format!(
                            "provider {provider} could not reach Key Vault or Entra ID and served this node's last good contents for the same identity and objects, fetched {}s ago (maxStaleness of SecretProviderClass {})",
                            age.as_secs(),
                            vc.secret_provider_class
                        ),
                    );
            }
        }
        let files = Arc::new(out.files);
        let (t, f) = (target.to_path_buf(), files.clone());
        let notice = (on_change == OnChange::File).then(|| out.object_versions.clone());
        let changed =
            blocking(move || writer::write_payload_with(&t, &f, group, notice.as_deref()))
                .await?
                .map_err(|source| PublishError::FileWrite {
                    path: target.display().to_string(),
                    source,
                })?;
        tracing::info!(
            provider = %provider, objects = out.object_versions.len(), changed, "volume contents written"
        );

        let Some(kube) = &self.inner.kube else {
            return Ok(changed);
        };
        let target_str = target.display().to_string();
        let (status, _, previous) = pod_status::record(
            &kube.client,
            &self.inner.config.node_id,
            vc,
            &target_str,
            &out.object_versions,
        )
        .await
        .map_err(|e| PublishError::PodStatus {
            namespace: vc.pod_namespace.clone(),
            name: secrets_store_api::pod_status_name(
                &vc.pod_name,
                &vc.pod_namespace,
                &vc.secret_provider_class,
            ),
            source: e,
        })?;

        for id in pod_status::newly_absent(&previous, &out.object_versions) {
            tracing::warn!(object = %id, "optional object absent from the store; its file is left out");
            kube.events
                .warn(
                    vc,
                    reason::OPTIONAL_OBJECT_ABSENT,
                    "Mount",
                    format!(
                        "optional object {id} of SecretProviderClass {} is not in the store (missing or disabled): its file is left out until it appears (a later rotation writes it)",
                        vc.secret_provider_class
                    ),
                );
        }

        if on_change == OnChange::RolloutRestart {
            self.rollout_restart(kube, vc, target, &out.object_versions, mounted, changed)
                .await;
        }

        if !class.spec.secret_objects.is_empty() {
            let mounted: BTreeMap<String, SecretBytes> = if files.is_empty() {
                let t = target.to_path_buf();
                blocking(move || writer::read_mounted_files(&t))
                    .await?
                    .map_err(|source| PublishError::FileWrite {
                        path: target.display().to_string(),
                        source,
                    })?
            } else {
                files
                    .iter()
                    .map(|f| (f.path.clone(), f.contents.clone()))
                    .collect()
            };
            let report = secret_sync::sync(
                &kube.client,
                vc,
                &class.spec.secret_objects,
                &mounted,
                &status,
            )
            .await;
            let label = self.known_provider(Some(&provider)).await;
            for (name, written) in &report.written {
                if *written != pod_status::Written::Unchanged {
                    self.inner.metrics.secret_synced(&label);
                    tracing::info!(secret = %name, ?written, "secret synced");
                }
            }
            for failure in &report.failures {
                self.inner.metrics.secret_sync_error(failure.kind);
                tracing::warn!(secret = %failure.secret_name, error_type = failure.kind, error = %failure.message, "secret sync failed");
                let reason = if failure.kind == "SecretObjectNotMounted" {
                    reason::SECRET_OBJECT_MISSING
                } else {
                    reason::FAILED_TO_CREATE_SECRET
                };
                kube.events
                    .warn(vc, reason, "SyncSecret", failure.message.clone());
            }
        }
        Ok(changed)
    }

    /// `on-change: rollout-restart`: brings the pod's owner in step with the volume's object
    /// versions (`crate::restart`). Never fails the publish: a failure is a Warning Event on
    /// the pod and is retried at the next refresh.
    async fn rollout_restart(
        &self,
        kube: &KubeSinks,
        vc: &VolumeContext,
        target: &Path,
        versions: &[(String, String)],
        mounted: bool,
        changed: bool,
    ) {
        let Some(min_interval) = self.inner.config.restart_owners else {
            if !mounted {
                kube.events
                    .warn(
                        vc,
                        reason::ROLLOUT_RESTART_FAILED,
                        "RolloutRestart",
                        format!(
                            "SecretProviderClass {} asks for {}=rollout-restart, but the driver runs without --rotation-restart-owners (chart value rotation.restartOwners): the workload will not be restarted on rotation",
                            vc.secret_provider_class,
                            crate::notify::ON_CHANGE_ANNOTATION
                        ),
                    );
            }
            return;
        };
        let digest = crate::restart::digest(versions);
        let known = self
            .inner
            .restart_digests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target)
            .cloned();
        if known.as_deref() == Some(digest.as_str()) {
            return;
        }
        let change = crate::restart::Change {
            namespace: &vc.pod_namespace,
            pod: &vc.pod_name,
            class: &vc.secret_provider_class,
            node: &self.inner.config.node_id,
            digest: &digest,
            objects: versions.iter().map(|(id, _)| id.as_str()).collect(),
            rotated: known.is_some() || (mounted && changed),
        };
        let outcome =
            crate::restart::reconcile(&kube.client, &kube.events, &change, min_interval).await;
        use crate::restart::Outcome;
        let result = match &outcome {
            Ok(Outcome::Restarted { kind, name }) => {
                tracing::info!(owner_kind = %kind, owner = %name, "rotation restarted the pod's owner");
                "restarted"
            }
            Ok(Outcome::AlreadyApplied) => "already_applied",
            Ok(Outcome::Recorded) => "recorded",
            Ok(Outcome::NotRecorded) => "not_recorded",
            Ok(Outcome::NoOwner) => "no_owner",
            Ok(Outcome::RateLimited { wait }) => {
                tracing::info!(
                    wait_secs = wait.as_secs(),
                    "owner restarted recently; the restart waits for a later refresh"
                );
                "rate_limited"
            }
            Err(e) => {
                let msg = daemon::error::render(e);
                tracing::warn!(error = %msg, "rollout restart failed");
                kube.events
                    .warn(vc, reason::ROLLOUT_RESTART_FAILED, "RolloutRestart", msg);
                "error"
            }
        };
        self.inner.metrics.rollout_restart(result);
        if matches!(outcome, Ok(o) if !matches!(o, Outcome::RateLimited { .. })) {
            self.inner
                .restart_digests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(target.to_path_buf(), digest);
        }
    }

    /// Whether the contents of `target` are younger than `interval` (no refresh due). After a
    /// driver restart the target's mtime, less `max_age`, stands for their age.
    async fn refreshed_within(
        &self,
        target: &Path,
        interval: Duration,
        max_age: Duration,
    ) -> Result<bool, PublishError> {
        let last = self
            .inner
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target)
            .copied();
        if let Some(at) = last {
            return Ok(at.elapsed() < interval);
        }
        // After a driver restart: the target's mtime, as upstream (read on the blocking pool).
        let t = target.to_path_buf();
        blocking(move || {
            fs_probe(|| {
                std::fs::metadata(&t)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|mtime| SystemTime::now().duration_since(mtime).ok())
                    .is_some_and(|age| age.saturating_add(max_age) < interval)
            })
        })
        .await
    }

    fn mark_refreshed(&self, target: &Path, as_of: Instant) {
        self.inner
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.to_path_buf(), as_of);
    }

    fn forget_refreshed(&self, target: &Path) {
        self.inner
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target);
        self.inner
            .restart_digests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target);
    }

    /// NodeUnpublishVolume: unmount and remove the target; success when already gone.
    pub async fn unpublish(&self, volume_id: &str, target_path: &str) -> Result<(), PublishError> {
        if volume_id.is_empty() {
            return Err(PublishError::InvalidArgument(
                "Volume ID missing in request".into(),
            ));
        }
        if target_path.is_empty() {
            return Err(PublishError::InvalidArgument(
                "Target path missing in request".into(),
            ));
        }
        let target = PathBuf::from(target_path);
        let lock = self.lock_for(&target);
        let guard = lock.lock().await;
        let mounter = self.inner.mounter.clone();
        let t = target.clone();
        let result = blocking(move || cleanup_target(mounter.as_ref(), &t))
            .await
            .and_then(|r| r);
        // Under the target's lock, so a publish that follows cannot have its entry removed.
        self.forget_refreshed(&target);
        drop(guard);
        self.release_lock(&target, lock);
        self.inner.metrics.unpublish(result.is_ok());
        if let Err(e) = &result {
            tracing::warn!(target = %target.display(), error = %e, "NodeUnpublishVolume failed");
        }
        result
    }
}

/// The max age the driver asks of cached answers while rotation polls every `interval`: half of
/// it. Contents fetched at `t` then show the vault as of `t - interval/2` or later, and a volume
/// is refreshed at the first republish once they may be `interval` old, so a change made at `T`
/// is in the files by `T + interval + one kubelet republish period`; meanwhile a provider cache
/// shared by every pod fetches each object about twice per interval, however many pods there are
/// (issue 15).
pub(crate) fn rotation_max_age(interval: Duration) -> Duration {
    interval / 2
}

/// Runs `f` on the blocking pool: every file-system call of the publish path goes through here
/// (or `tokio::fs`), never on an async worker thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PublishError::internal("a blocking task failed", e))
}

/// Marks a file-system probe of the publish path (socket lookups, mtimes); tests record the
/// thread it ran on to check it was not an async worker.
pub(crate) fn fs_probe<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(test)]
    tests::FS_PROBE_THREADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(std::thread::current().id());
    f()
}

/// The pod's `fsGroup` as kubelet passes it (`volume_capability.mount.volume_mount_group`, sent
/// because the node advertises VOLUME_MOUNT_GROUP): the files are written group-owned by it.
/// Empty: no fsGroup. Anything but a decimal group ID is refused.
fn volume_mount_group(req: &csi::NodePublishVolumeRequest) -> Result<Option<u32>, PublishError> {
    let group = match req
        .volume_capability
        .as_ref()
        .and_then(|c| c.access_type.as_ref())
    {
        Some(csi::volume_capability::AccessType::Mount(m)) => m.volume_mount_group.as_str(),
        _ => "",
    };
    if group.is_empty() {
        return Ok(None);
    }
    group.parse::<u32>().map(Some).map_err(|_| {
        PublishError::InvalidArgument(format!(
            "volume_capability.mount.volume_mount_group {group:?} is not a group ID: kubelet sends the pod's securityContext.fsGroup, a number"
        ))
    })
}
