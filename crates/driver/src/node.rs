//! The CSI Identity and Node services: the NodePublishVolume pipeline and its cleanup.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use csi_proto::v1 as csi;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::class_source::ClassSource;
use crate::config::Config;
use crate::error::PublishError;
use crate::events::{PodEvents, reason};
use crate::metrics::Metrics;
use crate::mounter::Mounter;
use crate::provider::{MountCall, ProviderClient};
use crate::volume_context::{self, VolumeContext};
use crate::{pod_status, secret_sync, writer};
use sensitive::SecretBytes;

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
    /// When each mounted volume was last refreshed successfully (rotation gate). Entries go on
    /// unpublish and when a first mount fails.
    refreshed: Mutex<HashMap<PathBuf, Instant>>,
}

impl NodeService {
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
                    k.events
                        .warn(
                            &vc,
                            reason::FAILED_TO_MOUNT,
                            "NodePublishVolume",
                            e.render(),
                        )
                        .await;
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
        let mounter = self.inner.mounter.clone();
        let t = target.to_path_buf();
        let mounted = blocking(move || ensure_mount_point(mounter.as_ref(), &t)).await??;

        if mounted {
            let Some(interval) = rotation else {
                return Ok(Published::AlreadyMounted);
            };
            if self.refreshed_within(target, interval).await? {
                return Ok(Published::RotationSkipped);
            }
        }

        match self
            .refresh(req, vc, target, timeout, mounted, provider_out)
            .await
        {
            Ok(changed) => {
                self.mark_refreshed(target);
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
                        .warn(vc, reason::MOUNT_ROTATION_FAILED, "Rotate", e.render())
                        .await;
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
    async fn refresh(
        &self,
        req: &csi::NodePublishVolumeRequest,
        vc: &VolumeContext,
        target: &Path,
        timeout: Duration,
        mounted: bool,
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
            attributes: vc.provider_attributes(&class.spec.parameters)?,
            secrets: volume_context::provider_secrets(&req.secrets)?,
            target_path: req.target_path.clone(),
            permission: volume_context::PROVIDER_PERMISSION.into(),
            current_object_versions: Vec::new(),
            timeout,
        };
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
        self.fetch_and_record(vc, &class, call, target).await
    }

    /// Provider call, file write, pod status and Secret sync. Returns whether files changed.
    async fn fetch_and_record(
        &self,
        vc: &VolumeContext,
        class: &secrets_store_api::v1::SecretProviderClass,
        call: MountCall,
        target: &Path,
    ) -> Result<bool, PublishError> {
        let provider = call.provider.clone();
        let out = self.inner.provider.mount(call).await?;
        let files = Arc::new(out.files);
        let (t, f) = (target.to_path_buf(), files.clone());
        let changed = blocking(move || writer::write_payload(&t, &f))
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
        let (status, _) = pod_status::record(
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
                    .warn(vc, reason, "SyncSecret", failure.message.clone())
                    .await;
            }
        }
        Ok(changed)
    }

    async fn refreshed_within(
        &self,
        target: &Path,
        interval: Duration,
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
                    .is_some_and(|age| age < interval)
            })
        })
        .await
    }

    fn mark_refreshed(&self, target: &Path) {
        self.inner
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.to_path_buf(), Instant::now());
    }

    fn forget_refreshed(&self, target: &Path) {
        self.inner
            .refreshed
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

/// Returns whether `target` is already mounted; creates it (0750) when missing. A mount point
/// that cannot be read (stale) is unmounted and reported as not mounted.
fn ensure_mount_point(mounter: &dyn Mounter, target: &Path) -> Result<bool, PublishError> {
    let err = |source: std::io::Error| PublishError::MountPoint {
        path: target.display().to_string(),
        source,
    };
    if mounter.is_mounted(target).map_err(err)? {
        // Without `..data` the first write never finished (the driver was killed in it): redo it.
        if std::fs::read_dir(target).is_ok() && target.join("..data").symlink_metadata().is_ok() {
            return Ok(true);
        }
        mounter.unmount(target).map_err(err)?;
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(target)
        .map_err(err)?;
    Ok(false)
}

fn cleanup_target(mounter: &dyn Mounter, target: &Path) -> Result<(), PublishError> {
    let err = |source: std::io::Error| PublishError::Cleanup {
        path: target.display().to_string(),
        source,
    };
    if mounter.is_mounted(target).map_err(err)? {
        mounter.unmount(target).map_err(err)?;
    }
    match std::fs::remove_dir_all(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// kubelet's deadline from the `grpc-timeout` header, or `None` when absent or invalid (then
/// the default applies, as tonic does for its own deadline).
pub fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?;
    let parsed = parse_grpc_timeout(v.as_bytes());
    if parsed.is_none() {
        tracing::debug!(value = ?v, "ignoring an invalid grpc-timeout header");
    }
    parsed
}

/// `TimeoutValue TimeoutUnit` of the gRPC HTTP/2 protocol: 1 to 8 ASCII digits, then one of
/// `H M S m u n`. Anything else is refused, so the largest value is 99,999,999 hours (which a
/// `Duration` holds exactly; the provider call caps it further before computing a deadline).
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

// === impl Node ===

#[tonic::async_trait]
impl csi::node_server::Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("Volume ID missing in request"));
        }
        if r.staging_target_path.is_empty() {
            return Err(Status::invalid_argument(
                "Staging target path missing in request",
            ));
        }
        if r.volume_capability.is_none() {
            return Err(Status::invalid_argument(
                "Volume capability missing in request",
            ));
        }
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("Volume ID missing in request"));
        }
        if r.staging_target_path.is_empty() {
            return Err(Status::invalid_argument(
                "Staging target path missing in request",
            ));
        }
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let timeout = grpc_timeout(&request).unwrap_or(self.inner.config.default_timeout);
        let started = Instant::now();
        // tonic drops this future at kubelet's deadline; the publish runs on, to finish or undo.
        let (svc, req) = (self.clone(), request.into_inner());
        let result = tokio::spawn(async move { svc.publish(req, timeout).await })
            .await
            .unwrap_or_else(|e| Err(PublishError::internal("the publish task failed", e)));
        tracing::debug!(
            method = "NodePublishVolume",
            ok = result.is_ok(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "grpc"
        );
        result
            .map(|_| Response::new(csi::NodePublishVolumeResponse {}))
            .map_err(Status::from)
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        self.unpublish(&r.volume_id, &r.target_path)
            .await
            .map(|()| Response::new(csi::NodeUnpublishVolumeResponse {}))
            .map_err(Status::from)
    }

    async fn node_get_volume_stats(
        &self,
        _request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented(
            "NodeGetVolumeStats is not implemented",
        ))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume is not implemented"))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        // Upstream advertises STAGE_UNSTAGE_VOLUME although staging is a no-op and kubelet
        // never stages inline ephemeral volumes; we advertise nothing (the RPCs still answer).
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.inner.config.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

// === impl Controller ===

#[tonic::async_trait]
impl csi::controller_server::Controller for NodeService {
    async fn controller_get_capabilities(
        &self,
        _request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        // One UNKNOWN capability, as upstream: csi-sanity's node suite requires a non-empty
        // list from every plugin, and UNKNOWN claims nothing.
        let unknown = csi::ControllerServiceCapability {
            r#type: Some(csi::controller_service_capability::Type::Rpc(
                csi::controller_service_capability::Rpc {
                    r#type: csi::controller_service_capability::rpc::Type::Unknown as i32,
                },
            )),
        };
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: vec![unknown],
        }))
    }
}

// === impl Identity ===

#[tonic::async_trait]
impl csi::identity_server::Identity for NodeService {
    async fn get_plugin_info(
        &self,
        _request: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        if self.inner.config.driver_name.is_empty() {
            return Err(Status::unavailable("driver name not configured"));
        }
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.inner.config.driver_name.clone(),
            vendor_version: crate::VERSION.into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        // No CONTROLLER_SERVICE: this is a node-only plugin (upstream advertises it and serves
        // a controller that answers Unimplemented).
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn probe(
        &self,
        _request: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use test_support::kubelet_request::{kubelet_context, publish_request};

    use super::*;
    use crate::mounter::DirMounter;
    use crate::provider::MountOutput;
    use crate::writer::PayloadFile;
    use crate::{FileClassSource, ProviderClient};

    /// Threads that ran an [`fs_probe`].
    pub(crate) static FS_PROBE_THREADS: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());

    pub(crate) fn fs_probes() -> usize {
        FS_PROBE_THREADS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn fs_probes_on_this_thread() -> usize {
        let me = std::thread::current().id();
        FS_PROBE_THREADS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|t| **t == me)
            .count()
    }

    const CLASS: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: kv, namespace: default}
spec:
  provider: fake
  parameters: {keyvaultName: kv1}
"#;

    /// Answers one file, or fails with a deadline when `fail` is set.
    #[derive(Default)]
    struct FakeProvider {
        fail: AtomicBool,
    }

    #[tonic::async_trait]
    impl ProviderClient for FakeProvider {
        async fn mount(
            &self,
            call: MountCall,
        ) -> Result<crate::provider::MountOutput, PublishError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(PublishError::Deadline(call.provider));
            }
            Ok(MountOutput {
                files: vec![PayloadFile {
                    path: "foo".into(),
                    mode: 0o644,
                    contents: SecretBytes::new(b"value".to_vec()),
                }],
                object_versions: vec![("secret/foo".into(), "v1".into())],
            })
        }
    }

    struct Env {
        dir: tempfile::TempDir,
        svc: NodeService,
        provider: Arc<FakeProvider>,
    }

    fn env(rotation: Option<Duration>) -> Env {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let class_file = dir.path().join("classes.yaml");
        std::fs::write(&class_file, CLASS).unwrap_or_else(|e| panic!("{e}"));
        let providers = dir.path().join("providers");
        std::fs::create_dir_all(&providers).unwrap_or_else(|e| panic!("{e}"));
        // A socket file name is all the metrics label looks for.
        std::fs::write(providers.join("fake.sock"), b"").unwrap_or_else(|e| panic!("{e}"));
        let mut config = Config::new("node-1", vec![providers]);
        config.rotation = rotation;
        let provider = Arc::new(FakeProvider::default());
        let svc = NodeService::new(
            config,
            Arc::new(FileClassSource::new(class_file)),
            Arc::new(DirMounter::default()),
            provider.clone(),
            None,
            Arc::new(Metrics::new()),
        );
        Env { dir, svc, provider }
    }

    impl Env {
        fn target(&self, i: usize) -> PathBuf {
            self.dir.path().join(format!("pods/uid-{i}/mount"))
        }

        async fn publish(&self, i: usize) -> Result<Published, PublishError> {
            let ctx = kubelet_context("kv", "web", "default", &format!("uid-{i}"), "sa", None);
            let req = publish_request(&format!("csi-{i}"), &self.target(i), ctx);
            self.svc.publish(req, Duration::from_secs(5)).await
        }

        async fn unpublish(&self, i: usize) -> Result<(), PublishError> {
            let target = self.target(i).display().to_string();
            self.svc.unpublish(&format!("csi-{i}"), &target).await
        }
    }

    /// gRPC's `TimeoutValue` has at most 8 digits; the parser used to take any number (and
    /// signs, through `u64::from_str`) and saturate, handing a near-infinite deadline on.
    #[test]
    fn grpc_timeout_has_at_most_eight_digits() {
        let t = |v: &str| {
            let mut req = Request::new(());
            let value = v.parse().unwrap_or_else(|e| panic!("{v}: {e}"));
            req.metadata_mut().insert("grpc-timeout", value);
            grpc_timeout(&req)
        };
        assert_eq!(t("120S"), Some(Duration::from_secs(120)));
        assert_eq!(t("119999m"), Some(Duration::from_millis(119_999)));
        assert_eq!(t("5M"), Some(Duration::from_secs(300)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(t("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        for bad in [
            "100000000H",
            "18446744073709551615H",
            "999999999999999999999999S",
            "+5S",
            "-5S",
            "5",
            "S",
            "5s",
            "5 S",
            "",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&Request::new(())), None);
    }

    /// Failed first mounts and unpublishes of distinct targets used to leave their lock (and
    /// refresh) entries behind forever.
    #[tokio::test]
    async fn no_entry_is_left_after_failed_publishes_and_unpublishes() {
        let e = env(Some(Duration::from_secs(60)));
        e.provider.fail.store(true, Ordering::SeqCst);
        for i in 0..20 {
            assert!(e.publish(i).await.is_err());
            assert!(!e.target(i).exists(), "the failed target is cleaned up");
        }
        assert_eq!(e.svc.map_sizes(), (0, 0), "after failed first mounts");
        for i in 20..40 {
            assert!(
                e.unpublish(i).await.is_ok(),
                "never published: already gone"
            );
        }
        assert_eq!(e.svc.map_sizes(), (0, 0), "after unpublishes");

        // Mounted volumes keep their refresh time (rotation gate) until unpublished.
        e.provider.fail.store(false, Ordering::SeqCst);
        for i in 40..50 {
            assert_eq!(e.publish(i).await.ok(), Some(Published::Mounted));
        }
        assert_eq!(e.svc.map_sizes(), (0, 10));
        for i in 40..50 {
            assert_eq!(
                e.publish(i).await.ok(),
                Some(Published::RotationSkipped),
                "refreshed just now"
            );
        }
        for i in 40..50 {
            assert!(e.unpublish(i).await.is_ok());
        }
        assert_eq!(
            e.svc.map_sizes(),
            (0, 0),
            "after unpublishing mounted volumes"
        );
    }

    /// A lock some call holds or waits on is never removed from the map (that would let the
    /// next call on the same target run beside it).
    #[tokio::test]
    async fn a_lock_in_use_stays_in_the_map() {
        let e = env(None);
        let target = e.target(1);
        let held = e.svc.lock_for(&target);
        let guard = held.lock().await;
        let mine = e.svc.lock_for(&target);
        e.svc.release_lock(&target, mine);
        assert_eq!(e.svc.map_sizes().0, 1, "still held by another call");
        assert!(Arc::ptr_eq(&e.svc.lock_for(&target), &held));

        // A publish waits on the held lock, and the unpublish that holds it does not remove it.
        let svc = e.svc.clone();
        let ctx = kubelet_context("kv", "web", "default", "uid-1", "sa", None);
        let req = publish_request("csi-1", &target, ctx);
        let waiting = tokio::spawn(async move { svc.publish(req, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the publish waits for the lock");
        drop(guard);
        e.svc.release_lock(&target, held);
        let published = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(published.ok(), Some(Published::Mounted));
        assert_eq!(e.svc.map_sizes().0, 0, "the last user removed it");
    }

    /// A poisoned lock map used to hand out a fresh lock per call, so two calls on one target
    /// no longer excluded each other. The map is recovered instead.
    #[tokio::test]
    async fn a_poisoned_lock_map_still_serialises() {
        let e = env(None);
        let target = e.target(1);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = e.svc.inner.locks.lock();
            panic!("poisoning the lock map on purpose");
        }));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = e.svc.inner.refreshed.lock();
            panic!("poisoning the refresh map on purpose");
        }));
        assert!(e.svc.inner.locks.is_poisoned() && e.svc.inner.refreshed.is_poisoned());
        let a = e.svc.lock_for(&target);
        let b = e.svc.lock_for(&target);
        assert!(Arc::ptr_eq(&a, &b), "one lock per target, poisoned or not");
        drop((a, b));
        e.svc.inner.locks.clear_poison();
        e.svc
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        assert_eq!(e.publish(1).await.ok(), Some(Published::Mounted));
        assert_eq!(
            e.svc.map_sizes(),
            (0, 1),
            "the poisoned refresh map still records"
        );
        assert!(e.unpublish(1).await.is_ok());
        assert_eq!(e.svc.map_sizes(), (0, 0));
    }

    /// The publish path's file-system probes (provider socket lookups for the metrics label,
    /// the target's mtime after a restart) run on the blocking pool: on a current-thread
    /// runtime none of them may run on the test's own thread.
    #[tokio::test(flavor = "current_thread")]
    async fn publish_fs_probes_run_on_the_blocking_pool() {
        let e = env(Some(Duration::from_secs(60)));
        let before = fs_probes_on_this_thread();
        assert_eq!(e.publish(1).await.ok(), Some(Published::Mounted));
        assert!(
            e.svc.metrics().encode().contains(r#"provider="fake""#),
            "the socket lookup found the provider"
        );
        // As after a driver restart: no refresh time in memory, so the target's mtime decides.
        e.svc
            .inner
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        assert_eq!(e.publish(1).await.ok(), Some(Published::RotationSkipped));
        assert_eq!(fs_probes_on_this_thread(), before);
        assert!(fs_probes() >= 3);
        assert!(e.unpublish(1).await.is_ok());
    }
}
