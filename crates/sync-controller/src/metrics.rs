//! Prometheus metrics on `--metrics-bind-address` (`/metrics`). Upstream's controller exports
//! only controller-runtime's reconcile metrics; these are the same names and labels, so its
//! dashboards and alerts keep working. Labels are constants: no object names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `controller` label value (controller-runtime names it after the kind).
const CONTROLLER: &str = "secretsync";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    reconcile: Family<ResultLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    time: Family<ControllerLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let time = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let m = Self {
            registry: Registry::default(),
            reconcile: Family::default(),
            errors: Family::default(),
            time,
        };
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            m.reconcile.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            m.errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            m.time.clone(),
        );
        Self { registry, ..m }
    }

    /// One reconcile and how long it took.
    pub fn reconciled(&self, ok: bool, seconds: f64) {
        self.reconcile
            .get_or_create(&ResultLabels {
                controller: CONTROLLER,
                result: if ok { "success" } else { "error" },
            })
            .inc();
        if !ok {
            self.errors
                .get_or_create(&ControllerLabels {
                    controller: CONTROLLER,
                })
                .inc();
        }
        self.time
            .get_or_create(&ControllerLabels {
                controller: CONTROLLER,
            })
            .observe(seconds);
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_and_errors_under_upstreams_names() {
        let m = Metrics::new();
        m.reconciled(true, 0.1);
        m.reconciled(false, 0.2);
        m.reconciled(false, 0.2);
        let text = m.encode();
        assert!(
            text.contains(
                "controller_runtime_reconcile_total{controller=\"secretsync\",result=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "controller_runtime_reconcile_total{controller=\"secretsync\",result=\"error\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("controller_runtime_reconcile_errors_total{controller=\"secretsync\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "controller_runtime_reconcile_time_seconds_count{controller=\"secretsync\"} 3"
            ),
            "{text}"
        );
    }
}
