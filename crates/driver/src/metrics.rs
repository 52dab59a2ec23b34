//! Prometheus metrics with upstream's names, served on `--metrics-addr` at `/metrics`.
//!
//! Labels are bounded: `provider` is a provider whose socket exists on this node (else
//! `unknown`), `error_type` is a `&'static str` from an error `kind()` (upstream puts the
//! provider-supplied error code there; we log that code instead), `os_type` is constant.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

const OS_TYPE: &str = std::env::consts::OS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
    os_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderErrorLabels {
    provider: String,
    error_type: &'static str,
    os_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OsLabels {
    os_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    provider: String,
    os_type: &'static str,
    rotated: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationErrorLabels {
    provider: String,
    error_type: &'static str,
    os_type: &'static str,
    rotated: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncErrorLabels {
    error_type: &'static str,
    os_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
    os_type: &'static str,
}

/// The driver's metrics.
pub struct Metrics {
    rollout_restart: Family<ResultLabels, Counter>,
    last_refresh: Family<ResultLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    registry: Registry,
    node_publish: Family<ProviderLabels, Counter>,
    node_publish_error: Family<ProviderErrorLabels, Counter>,
    node_unpublish: Family<OsLabels, Counter>,
    node_unpublish_error: Family<OsLabels, Counter>,
    rotation: Family<RotationLabels, Counter>,
    rotation_error: Family<RotationErrorLabels, Counter>,
    rotation_duration: Family<OsLabels, Histogram>,
    sync_secret: Family<ProviderLabels, Counter>,
    sync_secret_error: Family<SyncErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            node_publish: Family::default(),
            node_publish_error: Family::default(),
            node_unpublish: Family::default(),
            node_unpublish_error: Family::default(),
            rotation: Family::default(),
            rotation_error: Family::default(),
            rotation_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.1, 1.35, 11))
            }),
            sync_secret: Family::default(),
            sync_secret_error: Family::default(),
            rollout_restart: Family::default(),
            last_refresh: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "node_publish",
            "Successful NodePublishVolume calls",
            m.node_publish.clone(),
        );
        registry.register(
            "node_publish_error",
            "Failed NodePublishVolume calls",
            m.node_publish_error.clone(),
        );
        registry.register(
            "node_unpublish",
            "Successful NodeUnpublishVolume calls",
            m.node_unpublish.clone(),
        );
        registry.register(
            "node_unpublish_error",
            "Failed NodeUnpublishVolume calls",
            m.node_unpublish_error.clone(),
        );
        registry.register(
            "rotation_reconcile",
            "Rotation refreshes (republish past the poll interval)",
            m.rotation.clone(),
        );
        registry.register(
            "rotation_reconcile_error",
            "Failed rotation refreshes",
            m.rotation_error.clone(),
        );
        registry.register(
            "rotation_reconcile_duration_sec",
            "Duration of rotation refreshes in seconds",
            m.rotation_duration.clone(),
        );
        registry.register(
            "sync_k8s_secret",
            "Kubernetes Secrets created or updated",
            m.sync_secret.clone(),
        );
        registry.register(
            "sync_k8s_secret_error",
            "Failed Kubernetes Secret syncs",
            m.sync_secret_error.clone(),
        );
        registry.register(
            "rollout_restart",
            "Rollout-restart decisions for rotated volumes (result: restarted, already_applied, recorded, not_recorded, rate_limited, no_owner, error)",
            m.rollout_restart.clone(),
        );
        registry.register(
            "volume_refresh_last_timestamp_seconds",
            "Unix time of the last provider fetch of any volume on this node (result: ok, error); time() minus it is the age",
            m.last_refresh.clone(),
        );
        Self { registry, ..m }
    }

    /// A provider fetch for a volume (first mount or rotation refresh) ended now.
    pub fn volume_refreshed(&self, ok: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_refresh
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
                os_type: OS_TYPE,
            })
            .set(now);
    }

    /// One rollout-restart decision; `result` is one of a fixed set.
    pub fn rollout_restart(&self, result: &'static str) {
        self.rollout_restart
            .get_or_create(&ResultLabels {
                result,
                os_type: OS_TYPE,
            })
            .inc();
    }

    pub fn publish_ok(&self, provider: &str) {
        self.node_publish
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
                os_type: OS_TYPE,
            })
            .inc();
    }

    pub fn publish_error(&self, provider: &str, error_type: &'static str) {
        self.node_publish_error
            .get_or_create(&ProviderErrorLabels {
                provider: provider.into(),
                error_type,
                os_type: OS_TYPE,
            })
            .inc();
    }

    pub fn unpublish(&self, ok: bool) {
        let f = if ok {
            &self.node_unpublish
        } else {
            &self.node_unpublish_error
        };
        f.get_or_create(&OsLabels { os_type: OS_TYPE }).inc();
    }

    pub fn rotation(&self, provider: &str, rotated: bool, seconds: f64) {
        let rotated = if rotated { "true" } else { "false" };
        self.rotation
            .get_or_create(&RotationLabels {
                provider: provider.into(),
                os_type: OS_TYPE,
                rotated,
            })
            .inc();
        self.rotation_duration
            .get_or_create(&OsLabels { os_type: OS_TYPE })
            .observe(seconds);
    }

    pub fn rotation_error(&self, provider: &str, error_type: &'static str) {
        self.rotation_error
            .get_or_create(&RotationErrorLabels {
                provider: provider.into(),
                error_type,
                os_type: OS_TYPE,
                rotated: "false",
            })
            .inc();
    }

    pub fn secret_synced(&self, provider: &str) {
        self.sync_secret
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
                os_type: OS_TYPE,
            })
            .inc();
    }

    pub fn secret_sync_error(&self, error_type: &'static str) {
        self.sync_secret_error
            .get_or_create(&SyncErrorLabels {
                error_type,
                os_type: OS_TYPE,
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serve `/metrics` until `shutdown` resolves, then drain.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let router = daemon::http::metrics_router(move || metrics.encode());
    daemon::http::serve("metrics", listener, router, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_with_total_suffix() {
        let m = Metrics::new();
        m.publish_ok("azure");
        m.publish_error("azure", "GRPCProviderError");
        m.unpublish(true);
        m.rotation("azure", true, 0.2);
        let text = m.encode();
        for name in [
            "node_publish_total{",
            "node_publish_error_total{",
            "node_unpublish_total{",
            "rotation_reconcile_total{",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(text.contains(r#"error_type="GRPCProviderError""#));
    }
}
