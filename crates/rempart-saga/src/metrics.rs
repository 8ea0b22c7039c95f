//! The saga metrics, for a prometheus-client registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// `saga_started_total{type}`, `saga_finished_total{type,status}`,
/// `saga_step_duration_seconds{type,step}`, and the gauges
/// `saga_in_progress{type}` (sagas this engine is driving) and
/// `saga_compensation_failed{type}` (sagas this engine flagged).
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    pub(crate) started: Family<Labels, Counter>,
    pub(crate) finished: Family<Labels, Counter>,
    pub(crate) step_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub(crate) in_progress: Family<Labels, Gauge>,
    pub(crate) compensation_failed: Family<Labels, Gauge>,
}

fn step_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for SagaMetrics {
    fn default() -> Self {
        SagaMetrics {
            started: Family::default(),
            finished: Family::default(),
            step_duration: Family::new_with_constructor(step_histogram),
            in_progress: Family::default(),
            compensation_failed: Family::default(),
        }
    }
}

impl SagaMetrics {
    /// Adds the metrics to `registry` (handles share their values).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("saga_started", "Sagas started", self.started.clone());
        registry.register(
            "saga_finished",
            "Sagas that reached a final status",
            self.finished.clone(),
        );
        registry.register(
            "saga_step_duration_seconds",
            "Duration of one step call",
            self.step_duration.clone(),
        );
        registry.register(
            "saga_in_progress",
            "Sagas this engine is driving",
            self.in_progress.clone(),
        );
        registry.register(
            "saga_compensation_failed",
            "Sagas this engine left COMPENSATION_FAILED",
            self.compensation_failed.clone(),
        );
    }

    pub(crate) fn of(saga_type: &str) -> Labels {
        vec![("type", saga_type.to_owned())]
    }
}
