use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::AdaptiveLimiter;

/// Exposes adaptive limiters, each labelled with its name as `service`, read at scrape time:
///
/// | metric | type | labels |
/// |---|---|---|
/// | `adaptive_concurrency_limit` | gauge: the current limit | `service` |
/// | `adaptive_concurrency_inflight` | gauge | `service` |
/// | `adaptive_concurrency_rejected_total` | counter | `service` |
///
/// ```
/// use prometheus_client::registry::Registry;
/// use rempart::adaptive::{AdaptiveCollector, AdaptiveLimiter, Aimd};
///
/// let orders = AdaptiveLimiter::builder(Aimd::builder().initial_limit(7).build().unwrap())
///     .name("orders")
///     .build();
/// let collector = AdaptiveCollector::new();
/// collector.add(&orders);
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(collector));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains(r#"adaptive_concurrency_limit{service="orders"} 7"#));
/// ```
#[derive(Debug, Clone, Default)]
pub struct AdaptiveCollector {
    limiters: Arc<RwLock<Vec<AdaptiveLimiter>>>,
}

impl AdaptiveCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes `limiter`, replacing any of the same name.
    pub fn add(&self, limiter: &AdaptiveLimiter) {
        let mut list = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|l| l.name() != limiter.name());
        list.push(limiter.clone());
    }
}

impl Collector for AdaptiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let list = self
            .limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let readings: Vec<_> = list.iter().map(|l| (l.name(), l.metrics())).collect();
        let mut family = encoder.encode_descriptor(
            "adaptive_concurrency_limit",
            "Current adaptive concurrency limit",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &readings {
            ConstGauge::new(i64::from(m.limit))
                .encode(family.encode_family(&[("service", *name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "adaptive_concurrency_inflight",
            "Calls in flight under the adaptive limit",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &readings {
            ConstGauge::new(i64::from(m.in_flight))
                .encode(family.encode_family(&[("service", *name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "adaptive_concurrency_rejected",
            "Calls refused by the adaptive limit",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &readings {
            ConstCounter::new(m.refused).encode(family.encode_family(&[("service", *name)])?)?;
        }
        Ok(())
    }
}
