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

/// `ObjectVersion.version` of an object the provider left out because the class marks it optional
/// and the store does not have it (missing or disabled; issue 16). No file carries it; the entry
/// tells the driver, which warns on the pod once. No store's version id looks like this (Key
/// Vault's are 32 hex digits), and a driver that does not know it merely records it in the pod
/// status, so upstream's driver keeps working.
pub const ABSENT_OBJECT_VERSION: &str = "secrets-store.csi.k8s.io/absent";
