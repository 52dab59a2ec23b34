//! Prometheus metrics with bounded labels only (operation, object type, result kind, gRPC method
//! and code) — never object names or error text (upstream puts both in labels).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use entra_auth::TokenCacheStats;
use keyvault_client::{CacheStats, RequestObserver};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
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

/// Labels of `keyvault_http_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `get_secret` / `get_key` / `get_certificate` / `list_versions` / `list_objects`.
    pub operation: &'static str,
    /// An HTTP status (`200`, `429`, `4xx`, …), `timeout` or `transport`.
    pub status: &'static str,
}

/// Reads the token and object cache counters at scrape time (`None` while caching is off).
pub type CacheStatsSource = Box<dyn Fn() -> Option<(TokenCacheStats, CacheStats)> + Send + Sync>;

/// Encodes the cache counters on each scrape, from the source the provider sets.
#[derive(Default)]
struct CacheCollector {
    source: OnceLock<CacheStatsSource>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheCollector")
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some((tokens, objects)) = self.source.get().and_then(|f| f()) else {
            return Ok(());
        };
        // (name, help, [(cache label, value)])
        type Series<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);
        let series: [Series<'_>; 4] = [
            (
                "cache_hits",
                "Answers served from the token and object caches (including coalesced waits)",
                &[("token", tokens.hits), ("object", objects.hits)],
            ),
            (
                "cache_misses",
                "Requests the caches passed on to Entra ID or Key Vault",
                &[("token", tokens.misses), ("object", objects.misses)],
            ),
            (
                "cache_coalesced_waits",
                "Callers that waited for an identical request already in flight",
                &[("object", objects.coalesced)],
            ),
            (
                "cache_evictions",
                "Entries dropped because they expired or to stay within bounds",
                &[("object", objects.evictions)],
            ),
        ];
        for (name, help, values) in series {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cache, value) in values {
                let labels = [("cache", *cache)];
                ConstCounter::new(*value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
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
    http: Family<HttpLabels, Counter>,
    throttle_waits: Counter,
    throttle_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    served_stale: Histogram,
    caches: Arc<CacheCollector>,
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
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "keyvault_http_requests",
            "Key Vault HTTP exchanges by operation and status (each retry and challenge counts)",
            http.clone(),
        );
        let throttle_waits = Counter::default();
        registry.register(
            "keyvault_throttle_waits",
            "Key Vault requests that waited for their vault's pacer or Retry-After gate",
            throttle_waits.clone(),
        );
        let throttle_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "keyvault_throttle_wait_seconds",
            "Time Key Vault requests spent waiting for their vault's pacer or Retry-After gate",
            throttle_wait_seconds.clone(),
        );
        let served_stale = Histogram::new([60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0]);
        registry.register(
            "served_stale_age_seconds",
            "Mounts served from last-known-good (maxStaleness) during a Key Vault or Entra outage, by the age of the answer",
            served_stale.clone(),
        );
        let caches = Arc::new(CacheCollector::default());
        registry.register_collector(Box::new(caches.clone()));
        Self {
            registry,
            keyvault,
            grpc,
            mounts,
            http,
            throttle_waits,
            throttle_wait_seconds,
            served_stale,
            caches,
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

    /// One mount served from last-known-good, `age` old.
    pub fn served_stale(&self, age: Duration) {
        self.served_stale.observe(age.as_secs_f64());
    }

    /// Where the cache counters come from; the first call wins.
    pub fn set_cache_source(&self, source: CacheStatsSource) {
        let _ = self.caches.source.set(source);
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl RequestObserver for Metrics {
    fn response(&self, operation: &'static str, status: &'static str) {
        self.http
            .get_or_create(&HttpLabels { operation, status })
            .inc();
    }

    fn throttle_wait(&self, waited: Duration) {
        self.throttle_waits.inc();
        self.throttle_wait_seconds.inc_by(waited.as_secs_f64());
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
