//! Prometheus exposition of retries, read at scrape time.

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::Retry;
use super::metrics::DELAY_BUCKETS;

/// Exposes `retry_attempts_total{service}`, `retry_calls_total{service,outcome}`
/// and `retry_delay_seconds{service}` (a histogram of the pauses) for a set of
/// [`Retry`]s, labelled with their names.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use rempart::retry::{Retry, RetryCollector};
///
/// let retry = Retry::builder().name("orders").build().unwrap();
/// let collector = RetryCollector::new();
/// collector.add(&retry);
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(collector));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains(r#"retry_attempts_total{service="orders"} 0"#));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RetryCollector {
    retries: Arc<RwLock<Vec<Retry>>>,
}

impl RetryCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes `retry`, replacing any of the same name.
    pub fn add(&self, retry: &Retry) {
        let mut list = self.retries.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|r| r.name() != retry.name());
        list.push(retry.clone());
    }
}

impl Collector for RetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let list = self
            .retries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let readings: Vec<_> = list
            .iter()
            .map(|r| (r.name().to_owned(), r.metrics()))
            .collect();
        let mut family = encoder.encode_descriptor(
            "retry_attempts",
            "Attempts made, first attempts and retries",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &readings {
            ConstCounter::new(m.attempts)
                .encode(family.encode_family(&[("service", name.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "retry_calls",
            "Calls finished, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &readings {
            for (outcome, n) in [
                ("success_first_attempt", m.successful_first_attempt),
                ("success_after_retry", m.successful_after_retry),
                ("failed_after_retries", m.failed_after_retries),
                ("not_retried", m.not_retried),
                ("budget_refused", m.budget_refusals),
            ] {
                ConstCounter::new(n).encode(
                    family.encode_family(&[("service", name.as_str()), ("outcome", outcome)])?,
                )?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "retry_delay_seconds",
            "Pauses before retries",
            None,
            MetricType::Histogram,
        )?;
        for (name, m) in &readings {
            let buckets: Vec<(f64, u64)> = DELAY_BUCKETS.iter().copied().zip(m.delays).collect();
            let count = m.delays.iter().sum();
            family
                .encode_family(&[("service", name.as_str())])?
                .encode_histogram::<NoLabelSet>(
                    m.delay_total.as_secs_f64(),
                    count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}
