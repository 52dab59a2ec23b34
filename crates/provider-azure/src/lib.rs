#![doc = include_str!("../README.md")]

pub mod config;
pub mod error;
pub mod extract;
pub mod last_good;
pub mod metrics;
pub mod params;
pub mod provider;
pub mod render;
pub mod server;
pub mod template;
pub mod version;

pub use error::MountError;
pub use params::MountParams;
pub use provider::{Provider, ProviderConfig};
pub use provider_proto::v1alpha1::{MountRequest, MountResponse};
pub use server::{Server, ServerConfig};
