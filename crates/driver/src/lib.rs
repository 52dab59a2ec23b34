//! The Secrets Store CSI node plugin.
//!
//! Kubelet calls [`NodeService`] (CSI Identity + Node) for every pod volume of driver
//! `secrets-store.csi.k8s.io`. One NodePublishVolume runs this pipeline, each step behind a
//! trait at the real seam so the demo, the CLI and the tests can swap it:
//!
//! 1. [`VolumeContext`] parsed from kubelet's volume context;
//! 2. [`ClassSource`] → the SecretProviderClass (Kubernetes API, or a YAML file);
//! 3. [`Mounter`] → tmpfs at the target (or a plain directory without privileges);
//! 4. [`ProviderClient`] → files and object versions from `<dir>/<provider>.sock`;
//! 5. [`writer::write_payload`] → kubelet's atomic-writer layout, only when something changed;
//! 6. [`pod_status`] and [`secret_sync`] → read-compare-write against the API server, with
//!    [`events`] on the pod when something fails.

pub mod class_source;
pub mod config;
pub mod crds;
pub mod error;
pub mod events;
pub mod h2_authority;
pub mod health;
pub mod metrics;
pub mod mounter;
pub mod node;
pub mod notify;
pub mod pod_status;
pub mod provider;
pub mod registration;
pub mod restart;
pub mod secret_sync;
pub mod server;
pub mod tls;
pub mod volume_context;
pub mod writer;

pub use class_source::{ClassSource, FileClassSource, KubeClassSource};
pub use config::{Config, DriverArgs};
pub use error::PublishError;
pub use mounter::{DirMounter, Mounter, TmpfsMounter};
pub use node::{KubeSinks, NodeService};
pub use provider::{GrpcProviderClient, ProviderClient};
pub use volume_context::VolumeContext;

/// Build version reported by GetPluginInfo and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default driver name (`--drivername`).
pub const DEFAULT_DRIVER_NAME: &str = "secrets-store.csi.k8s.io";
