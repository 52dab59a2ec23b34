//! The CSI Identity and Node services: the NodePublishVolume pipeline and its cleanup.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// When each volume was last refreshed successfully (rotation gate).
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

    fn lock_for(&self, target: &Path) -> Arc<tokio::sync::Mutex<()>> {
        match self.inner.locks.lock() {
            Ok(mut m) => m.entry(target.to_path_buf()).or_default().clone(),
            Err(_) => Arc::default(),
        }
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
        let _guard = lock.lock().await;
        let started = Instant::now();
        let mut provider = None;
        let outcome = self
            .publish_locked(&req, &vc, &target, timeout, &mut provider)
            .await;
        let provider_label = provider
            .and_then(|p| self.known_provider(&p))
            .unwrap_or_else(|| "unknown".into());
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

    /// A bounded provider label: the class's provider if its socket exists on this node.
    fn known_provider(&self, name: &str) -> Option<String> {
        (crate::provider::valid_provider_name(name)
            && !name.is_empty()
            && self
                .inner
                .config
                .provider_dirs
                .iter()
                .any(|d| d.join(format!("{name}.sock")).exists()))
        .then(|| name.to_string())
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
            if self.refreshed_within(target, interval) {
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
                let provider = provider_out
                    .as_deref()
                    .and_then(|p| self.known_provider(p))
                    .unwrap_or_else(|| "unknown".into());
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
            let label = self
                .known_provider(&provider)
                .unwrap_or_else(|| "unknown".into());
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

    fn refreshed_within(&self, target: &Path, interval: Duration) -> bool {
        let last = self
            .inner
            .refreshed
            .lock()
            .ok()
            .and_then(|m| m.get(target).copied());
        match last {
            Some(at) => at.elapsed() < interval,
            // After a driver restart: the target's mtime, as upstream.
            None => std::fs::metadata(target)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|mtime| SystemTime::now().duration_since(mtime).ok())
                .is_some_and(|age| age < interval),
        }
    }

    fn mark_refreshed(&self, target: &Path) {
        if let Ok(mut m) = self.inner.refreshed.lock() {
            m.insert(target.to_path_buf(), Instant::now());
        }
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
        let result = {
            let _guard = lock.lock().await;
            let mounter = self.inner.mounter.clone();
            let t = target.clone();
            blocking(move || cleanup_target(mounter.as_ref(), &t))
                .await
                .and_then(|r| r)
        };
        if let Ok(mut m) = self.inner.refreshed.lock() {
            m.remove(&target);
        }
        if let Ok(mut m) = self.inner.locks.lock() {
            m.remove(&target);
        }
        self.inner.metrics.unpublish(result.is_ok());
        if let Err(e) = &result {
            tracing::warn!(target = %target.display(), error = %e, "NodeUnpublishVolume failed");
        }
        result
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PublishError::internal("a blocking task failed", e))
}

/// Returns whether `target` is already mounted; creates it (0750) when missing. A mount point
/// that cannot be read (stale) is unmounted and reported as not mounted.
fn ensure_mount_point(mounter: &dyn Mounter, target: &Path) -> Result<bool, PublishError> {
    let err = |source: std::io::Error| PublishError::MountPoint {
        path: target.display().to_string(),
        source,
    };
    if mounter.is_mounted(target).map_err(err)? {
        if std::fs::read_dir(target).is_ok() {
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

/// kubelet's deadline from the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
pub fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
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
        let result = self.publish(request.into_inner(), timeout).await;
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
