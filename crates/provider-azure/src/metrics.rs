//! Prometheus metrics with bounded labels only (operation, object type, result kind, gRPC method
//! and code) — never object names or error text (upstream puts both in labels).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Buckets (seconds), as upstream.
const BUCKETS: [f64; 14] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 15.0, 30.0,
];

/// Labels of `keyvault_request`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    /// `get` / `list`.
    pub operation: &'static str,
    /// `secret` / `key` / `cert`.
    pub object_type: &'static str,
    /// `ok` or an error kind.
    pub result: &'static str,
}

/// Labels of `grpc_request`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// e.g. `/v1alpha1.CSIDriverProvider/Mount`.
    pub grpc_method: &'static str,
    /// e.g. `OK`, `NotFound`.
    pub grpc_code: &'static str,
}

/// Labels of `mount_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MountLabels {
    /// `ok` or an error kind.
    pub result: &'static str,
    /// identity mode.
    pub identity: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The provider's metrics.
pub struct Metrics {
    registry: Registry,
    keyvault: Family<KvLabels, Histogram, fn() -> Histogram>,
    grpc: Family<GrpcLabels, Histogram, fn() -> Histogram>,
    mounts: Family<MountLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let keyvault = Family::<KvLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let grpc = Family::<GrpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let mounts = Family::<MountLabels, Counter>::default();
        registry.register(
            "keyvault_request",
            "Duration of Key Vault requests in seconds (fetch + transform per object, list per object)",
            keyvault.clone(),
        );
        registry.register(
            "grpc_request",
            "Duration of gRPC requests in seconds",
            grpc.clone(),
        );
        registry.register("mount", "Mount requests by result", mounts.clone());
        Self {
            registry,
            keyvault,
            grpc,
            mounts,
        }
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records one Key Vault operation.
    pub fn keyvault(
        &self,
        operation: &'static str,
        object_type: &'static str,
        result: &'static str,
        d: Duration,
    ) {
        self.keyvault
            .get_or_create(&KvLabels {
                operation,
                object_type,
                result,
            })
            .observe(d.as_secs_f64());
    }

    /// Records one RPC.
    pub fn grpc(&self, grpc_method: &'static str, grpc_code: &'static str, d: Duration) {
        self.grpc
            .get_or_create(&GrpcLabels {
                grpc_method,
                grpc_code,
            })
            .observe(d.as_secs_f64());
    }

    /// Counts one mount.
    pub fn mount(&self, result: &'static str, identity: &'static str) {
        self.mounts
            .get_or_create(&MountLabels { result, identity })
            .inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// gRPC code names as grpc-go prints them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
