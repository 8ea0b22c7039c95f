//! A limiter's decision counters: per-thread rows (see `crate::per_thread`),
//! so counting a decision never writes a cache line another core is using.

use std::sync::Arc;

use crate::per_thread::PerThreadCounters;

/// A limiter's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitMetrics {
    /// Requests admitted.
    pub allowed: u64,
    /// Requests refused.
    pub refused: u64,
}

#[derive(Debug)]
pub(crate) struct LimiterStats {
    pub(crate) name: Arc<str>,
    counters: PerThreadCounters<2>,
}

impl LimiterStats {
    pub(crate) fn new(name: Arc<str>) -> Self {
        LimiterStats {
            name,
            counters: PerThreadCounters::default(),
        }
    }

    #[inline]
    pub(crate) fn allowed(&self) {
        self.counters.bump(0);
    }

    #[inline]
    pub(crate) fn refused(&self) {
        self.counters.bump(1);
    }

    pub(crate) fn snapshot(&self) -> RateLimitMetrics {
        let [allowed, refused] = self.counters.sum();
        RateLimitMetrics { allowed, refused }
    }
}
