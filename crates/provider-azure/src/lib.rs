//! Azure Key Vault provider for the Secrets Store CSI Driver (work in progress: parameters and
//! rendering are complete; the gRPC service follows).

pub mod params;
pub mod render;
