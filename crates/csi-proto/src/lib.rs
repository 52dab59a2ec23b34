//! The `csi.v1` gRPC API (Container Storage Interface spec 1.x), reduced to what a node-only
//! ephemeral-volume plugin serves: the Identity and Node services, and ControllerGetCapabilities. Generated from
//! `proto/csi.proto`; message names, field numbers and types follow the spec so the wire format
//! matches kubelet, node-driver-registrar, livenessprobe and csi-sanity. The requests that carry
//! secrets get a redacting `Debug` and a zeroing `Drop` (`redact.rs`).

#![allow(unreachable_pub, clippy::all, clippy::pedantic, missing_docs)]

/// Generated messages, clients and servers of `csi.v1`.
pub mod v1 {
    tonic::include_proto!("csi.v1");
}

pub mod kubelet;
mod redact;

/// kubelet's plugin-registration API (`pluginregistration.Registration`), served by the driver so
/// that kubelet registers it without a node-driver-registrar sidecar.
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}
