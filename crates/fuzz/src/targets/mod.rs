//! The targets, one module each (see [`crate::TARGETS`]).

pub mod csi_publish;
pub mod emulator_http;
pub mod entra_json;
pub mod keyvault_json;
pub mod params;
pub mod pfx;
pub mod volume_context;
