//! The `v1alpha1.CSIDriverProvider` gRPC API spoken between a Secrets Store CSI driver and its
//! providers over a unix socket. Generated from `proto/service.proto`; nothing hand-written here
//! but the constants every side needs.

#![allow(unreachable_pub, clippy::all, clippy::pedantic, missing_docs)]

/// Generated messages, client and server of the v1alpha1 API.
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}

/// The API version both sides put in `VersionRequest.version` / `VersionResponse.version`.
pub const API_VERSION: &str = "v1alpha1";
