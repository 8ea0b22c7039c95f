use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Bulkhead;

/// Exposes bulkheads, each labelled with its name as `service`, read at scrape time:
///
/// | metric | type | labels |
/// |---|---|---|
/// | `bulkhead_inflight` | gauge: slots taken now | `service` |
/// | `bulkhead_max_concurrent` | gauge: slots | `service` |
/// | `bulkhead_admitted_total` | counter | `service` |
/// | `bulkhead_rejected_total` | counter | `service` |
///
/// ```
/// use prometheus_client::registry::Registry;
/// use rempart::bulkhead::{BulkheadCollector, Bulkheads};
/// use std::time::Duration;
///
/// let bulkheads = Bulkheads::parse("reporting: 1, users: 30", Duration::ZERO).unwrap();
/// let collector = BulkheadCollector::new();
/// collector.add_all(&bulkheads);
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(collector));
/// let _slot = bulkheads["reporting"].try_acquire().unwrap();
/// let _ = bulkheads["reporting"].try_acquire();
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains(r#"bulkhead_inflight{service="reporting"} 1"#));
/// assert!(text.contains(r#"bulkhead_rejected_total{service="reporting"} 1"#));
/// ```
#[derive(Debug, Clone, Default)]
pub struct BulkheadCollector {
    bulkheads: Arc<RwLock<Vec<Bulkhead>>>,
}

impl BulkheadCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes `bulkhead`, replacing any of the same name.
    pub fn add(&self, bulkhead: &Bulkhead) {
        let mut list = self.bulkheads.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|b| b.name() != bulkhead.name());
        list.push(bulkhead.clone());
    }

    /// Exposes exactly `bulkheads`, dropping every other one (a reloaded set).
    pub fn replace_all<'a>(&self, bulkheads: impl IntoIterator<Item = &'a Bulkhead>) {
        let fresh: Vec<Bulkhead> = bulkheads.into_iter().cloned().collect();
        *self.bulkheads.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Exposes every bulkhead of `bulkheads`.
    pub fn add_all(&self, bulkheads: &super::Bulkheads) {
        for b in bulkheads.iter() {
            self.add(b);
        }
    }
}

impl Collector for BulkheadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let list = self
            .bulkheads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let readings: Vec<_> = list.iter().map(|b| (b.name(), b.metrics())).collect();
        let mut family = encoder.encode_descriptor(
            "bulkhead_inflight",
            "Calls holding a bulkhead slot",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &readings {
            ConstGauge::new(i64::from(m.in_flight))
                .encode(family.encode_family(&[("service", *name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "bulkhead_max_concurrent",
            "Bulkhead slots",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &readings {
            ConstGauge::new(i64::from(m.max_concurrent))
                .encode(family.encode_family(&[("service", *name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "bulkhead_admitted",
            "Calls given a bulkhead slot",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &readings {
            ConstCounter::new(m.admitted).encode(family.encode_family(&[("service", *name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "bulkhead_rejected",
            "Calls refused because the bulkhead stayed full",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &readings {
            ConstCounter::new(m.refused).encode(family.encode_family(&[("service", *name)])?)?;
        }
        Ok(())
    }
}
