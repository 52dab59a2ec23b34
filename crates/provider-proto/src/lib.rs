//! The `v1alpha1.CSIDriverProvider` gRPC API spoken between a Secrets Store CSI driver and its
//! providers over a unix socket. Generated from `proto/service.proto`; hand-written here: the
//! constants every side needs, a redacting `Debug` (and zeroing `Drop`) for the messages that
//! carry secrets ([`redact`]).

#![allow(unreachable_pub, clippy::all, clippy::pedantic, missing_docs)]

/// Generated messages, client and server of the v1alpha1 API.
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}

mod redact;

/// The API version both sides put in `VersionRequest.version` / `VersionResponse.version`.
pub const API_VERSION: &str = "v1alpha1";
