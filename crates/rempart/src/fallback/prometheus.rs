//! `fallback_activations_total{service,kind}`, read from each chain at scrape time.

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::FallbackMetrics;

type Reader = Arc<dyn Fn() -> FallbackMetrics + Send + Sync>;

/// Exposes `fallback_activations_total{service,kind}` (`kind`: `cache`,
/// `default`, `degraded`) for every chain added.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use rempart::fallback::{FallbackChain, FallbackCollector};
///
/// let chain = FallbackChain::<u32, std::io::Error>::new("users").default_value(0);
/// let collector = FallbackCollector::new();
/// collector.add(&chain);
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(collector));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("fallback_activations_total{service=\"users\",kind=\"default\"} 0"));
/// ```
#[derive(Clone, Default)]
pub struct FallbackCollector {
    chains: Arc<RwLock<Vec<(String, Reader)>>>,
}

impl fmt::Debug for FallbackCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.chains.read().map_or(0, |c| c.len());
        f.debug_struct("FallbackCollector")
            .field("chains", &n)
            .finish()
    }
}

impl FallbackCollector {
    /// A collector with no chains.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes `chain`'s activations under its name.
    pub fn add<T, E>(&self, chain: &super::FallbackChain<T, E>)
    where
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let c = chain.clone();
        let reader: Reader = Arc::new(move || c.metrics());
        if let Ok(mut chains) = self.chains.write() {
            chains.push((chain.name().to_owned(), reader));
        }
    }
}

impl Collector for FallbackCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let chains = match self.chains.read() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let mut family = encoder.encode_descriptor(
            "fallback_activations",
            "Answers served by a fallback instead of the dependency",
            None,
            MetricType::Counter,
        )?;
        for (name, read) in chains.iter() {
            let m = read();
            for (kind, n) in [
                ("cache", m.cache),
                ("default", m.default),
                ("degraded", m.degraded),
            ] {
                let labels = [("service", name.as_str()), ("kind", kind)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
