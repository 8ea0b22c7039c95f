//! Prometheus exposition, with the metric names of seed 001 case 4.
//!
//! Nothing is recorded per call for Prometheus: a collector reads each
//! breaker's own counters (already kept per thread, without contended writes)
//! when the registry is scraped. Turning metrics on therefore costs the hot path
//! nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `circuit_breaker_state` | gauge: 0 closed, 1 open, 2 half-open | `service` |
//! | `circuit_breaker_calls_total` | counter | `service`, `outcome` = `success`, `failure`, `rejected`, `ignored` |
//! | `circuit_breaker_slow_calls_total` | counter | `service` |
//! | `circuit_breaker_state_transitions_total` | counter | `service` |
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use rempart::CircuitBreaker;
//! use rempart::prometheus::BreakerCollector;
//!
//! let reporting = CircuitBreaker::builder().name("reporting").build().unwrap();
//! let collector = BreakerCollector::new();
//! collector.add(reporting.clone());
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(collector.clone()));
//!
//! reporting.trip();
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains(r#"circuit_breaker_state{service="reporting"} 1"#));
//! ```

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::CircuitBreaker;

/// Exposes a set of circuit breakers, each labelled with its name as `service`.
/// Cheap to clone: clones share the set, so breakers can be added after the
/// collector is registered.
#[derive(Debug, Clone)]
pub struct BreakerCollector {
    breakers: Arc<RwLock<Vec<CircuitBreaker>>>,
    call_counts: bool,
}

impl BreakerCollector {
    /// An empty collector.
    pub fn new() -> Self {
        BreakerCollector {
            breakers: Arc::default(),
            call_counts: true,
        }
    }

    /// A collector that leaves `circuit_breaker_calls_total` out, for a caller
    /// that counts calls itself with outcomes the breaker cannot see (the
    /// gateway's `timeout` and `fallback`), so the family is not exposed twice.
    pub fn without_call_counts() -> Self {
        BreakerCollector {
            call_counts: false,
            ..Self::new()
        }
    }

    /// Exposes `breaker`, replacing any breaker of the same name (so a
    /// reconfigured service does not appear twice).
    pub fn add(&self, breaker: CircuitBreaker) {
        let mut list = self.breakers.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|b| b.name() != breaker.name());
        list.push(breaker);
    }

    /// Exposes exactly `breakers`, dropping every other one (a reloaded set).
    pub fn replace_all(&self, breakers: impl IntoIterator<Item = CircuitBreaker>) {
        let fresh: Vec<CircuitBreaker> = breakers.into_iter().collect();
        *self.breakers.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Stops exposing the breaker named `name`; `true` if there was one.
    pub fn remove(&self, name: &str) -> bool {
        let mut list = self.breakers.write().unwrap_or_else(|p| p.into_inner());
        let before = list.len();
        list.retain(|b| b.name() != name);
        list.len() != before
    }
}

impl Default for BreakerCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for BreakerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let breakers = self
            .breakers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let readings: Vec<_> = breakers
            .iter()
            .map(|b| (b.name().to_owned(), b.state(), b.metrics()))
            .collect();

        let mut family = encoder.encode_descriptor(
            "circuit_breaker_state",
            "Circuit breaker state (0=CLOSED, 1=OPEN, 2=HALF_OPEN)",
            None,
            MetricType::Gauge,
        )?;
        for (name, state, _) in &readings {
            let labels = [("service", name.as_str())];
            ConstGauge::new(state.as_gauge()).encode(family.encode_family(&labels)?)?;
        }

        if self.call_counts {
            let mut family = encoder.encode_descriptor(
                "circuit_breaker_calls",
                "Calls through the circuit breaker, by outcome",
                None,
                MetricType::Counter,
            )?;
            for (name, _, m) in &readings {
                for (outcome, n) in [
                    ("success", m.successful_calls),
                    ("failure", m.failed_calls),
                    ("rejected", m.rejected_calls),
                    ("ignored", m.ignored_calls),
                ] {
                    let labels = [("service", name.as_str()), ("outcome", outcome)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "circuit_breaker_slow_calls",
            "Calls at or over the slow-call duration",
            None,
            MetricType::Counter,
        )?;
        for (name, _, m) in &readings {
            ConstCounter::new(m.slow_calls)
                .encode(family.encode_family(&[("service", name.as_str())])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "circuit_breaker_state_transitions",
            "Changes of circuit breaker state",
            None,
            MetricType::Counter,
        )?;
        for (name, _, m) in &readings {
            ConstCounter::new(m.state_transitions)
                .encode(family.encode_family(&[("service", name.as_str())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use prometheus_client::registry::Registry;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn scrape_shows_each_breakers_state_and_calls_by_outcome() {
        let clock = ManualClock::new();
        let users = CircuitBreaker::builder()
            .name("users")
            .clock(clock.clone())
            .build()
            .unwrap();
        let reporting = CircuitBreaker::builder()
            .name("reporting")
            .failure_threshold(2)
            .clock(clock)
            .build()
            .unwrap();
        let collector = BreakerCollector::new();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector.clone()));
        collector.add(users.clone());
        collector.add(reporting.clone());

        users.try_acquire().unwrap().success();
        reporting.try_acquire().unwrap().failure();
        reporting.try_acquire().unwrap().failure();
        let _ = reporting.try_acquire();

        let text = scrape(&registry);
        for line in [
            "# TYPE circuit_breaker_state gauge",
            r#"circuit_breaker_state{service="users"} 0"#,
            r#"circuit_breaker_state{service="reporting"} 1"#,
            "# TYPE circuit_breaker_calls counter",
            r#"circuit_breaker_calls_total{service="users",outcome="success"} 1"#,
            r#"circuit_breaker_calls_total{service="reporting",outcome="failure"} 2"#,
            r#"circuit_breaker_calls_total{service="reporting",outcome="rejected"} 1"#,
            r#"circuit_breaker_state_transitions_total{service="reporting"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_breaker_added_again_under_its_name_replaces_the_old_one() {
        let collector = BreakerCollector::new();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector.clone()));
        collector.add(CircuitBreaker::builder().name("orders").build().unwrap());
        let fresh = CircuitBreaker::builder().name("orders").build().unwrap();
        fresh.trip();
        collector.add(fresh);
        let text = scrape(&registry);
        assert_eq!(text.matches("circuit_breaker_state{").count(), 1, "{text}");
        assert!(text.contains(r#"circuit_breaker_state{service="orders"} 1"#));
        assert!(collector.remove("orders"));
        assert!(!scrape(&registry).contains("service=\"orders\""));
    }
}
