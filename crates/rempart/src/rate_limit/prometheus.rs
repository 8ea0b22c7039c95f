//! Prometheus exposition of rate limiters, read at scrape time.

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::metrics::LimiterStats;
use super::{KeyedRateLimiter, RateLimiter, SlidingWindowLimiter};

/// Something a [`RateLimitCollector`] can expose: made from a reference to
/// any of the crate's rate limiters.
pub struct RateLimitSource {
    stats: Arc<LimiterStats>,
    keys: Option<Box<dyn Fn() -> usize + Send + Sync>>,
}

impl fmt::Debug for RateLimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitSource")
            .field("limiter", &self.stats.name)
            .field("keyed", &self.keys.is_some())
            .finish()
    }
}

impl From<&RateLimiter> for RateLimitSource {
    fn from(l: &RateLimiter) -> Self {
        RateLimitSource {
            stats: l.stats().clone(),
            keys: None,
        }
    }
}

impl From<&SlidingWindowLimiter> for RateLimitSource {
    fn from(l: &SlidingWindowLimiter) -> Self {
        RateLimitSource {
            stats: l.stats().clone(),
            keys: None,
        }
    }
}

impl<K> From<&KeyedRateLimiter<K>> for RateLimitSource
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    fn from(l: &KeyedRateLimiter<K>) -> Self {
        let weak = l.downgrade();
        RateLimitSource {
            stats: l.stats().clone(),
            keys: Some(Box::new(move || weak.upgrade().map_or(0, |l| l.len()))),
        }
    }
}

/// Exposes rate limiters, each labelled with its name as `limiter`:
///
/// | metric | type | labels |
/// |---|---|---|
/// | `rate_limit_rejected_total` | counter | `limiter` |
/// | `rate_limit_allowed_total` | counter | `limiter` |
/// | `rate_limit_keys` | gauge: keys tracked by a keyed limiter | `limiter` |
///
/// Cheap to clone: clones share the set, so limiters can be added after the
/// collector is registered.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use rempart::rate_limit::{RateLimitCollector, RateLimiter};
/// use std::time::Duration;
///
/// let api = RateLimiter::builder().name("api").rate(1, Duration::from_secs(60)).build().unwrap();
/// let collector = RateLimitCollector::new();
/// collector.add(&api);
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(collector));
/// api.check().unwrap();
/// api.check().unwrap_err();
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains(r#"rate_limit_rejected_total{limiter="api"} 1"#));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RateLimitCollector {
    sources: Arc<RwLock<Vec<Arc<RateLimitSource>>>>,
}

impl RateLimitCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes a limiter, replacing any of the same name.
    pub fn add(&self, limiter: impl Into<RateLimitSource>) {
        let source = limiter.into();
        let mut list = self.sources.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|s| s.stats.name != source.stats.name);
        list.push(Arc::new(source));
    }
}

impl Collector for RateLimitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let readings: Vec<_> = sources.iter().map(|s| (s, s.stats.snapshot())).collect();
        let mut family = encoder.encode_descriptor(
            "rate_limit_rejected",
            "Requests refused by the rate limiter",
            None,
            MetricType::Counter,
        )?;
        for (s, m) in &readings {
            ConstCounter::new(m.refused)
                .encode(family.encode_family(&[("limiter", &*s.stats.name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "rate_limit_allowed",
            "Requests admitted by the rate limiter",
            None,
            MetricType::Counter,
        )?;
        for (s, m) in &readings {
            ConstCounter::new(m.allowed)
                .encode(family.encode_family(&[("limiter", &*s.stats.name)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "rate_limit_keys",
            "Keys tracked by a keyed rate limiter",
            None,
            MetricType::Gauge,
        )?;
        for (s, _) in &readings {
            if let Some(keys) = &s.keys {
                let n = i64::try_from(keys()).unwrap_or(i64::MAX);
                ConstGauge::new(n).encode(family.encode_family(&[("limiter", &*s.stats.name)])?)?;
            }
        }
        Ok(())
    }
}
