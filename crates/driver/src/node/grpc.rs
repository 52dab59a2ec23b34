//! The tonic `Node`, `Controller` and `Identity` services over [`NodeService`], and kubelet's
//! deadline from `grpc-timeout`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use tonic::{Request, Response, Status};

use super::NodeService;
use crate::error::PublishError;

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
        // never stages inline ephemeral volumes; we do not (the RPCs still answer). We advertise
        // VOLUME_MOUNT_GROUP: kubelet then hands the pod's `fsGroup` to NodePublishVolume as
        // `volume_mount_group` (whatever the CSIDriver's fsGroupPolicy) and the files are
        // written group-owned by it (issue 16).
        let rpc = |t: csi::node_service_capability::rpc::Type| csi::NodeServiceCapability {
            r#type: Some(csi::node_service_capability::Type::Rpc(
                csi::node_service_capability::Rpc { r#type: t.into() },
            )),
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![rpc(
                csi::node_service_capability::rpc::Type::VolumeMountGroup,
            )],
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
