//! The breaker's call counters: per-thread rows (see `crate::per_thread`), so
//! counting a call never writes a cache line another core is using.

use crate::per_thread::PerThreadCounters;
use std::sync::atomic::{AtomicU64, Ordering};

/// The breaker's counters at one moment.
///
/// `total_calls = successful_calls + failed_calls + rejected_calls + ignored_calls`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitMetrics {
    /// Every call: run, refused, or abandoned.
    pub total_calls: u64,
    /// Calls that ran and counted as successes.
    pub successful_calls: u64,
    /// Calls that ran and counted as failures.
    pub failed_calls: u64,
    /// Calls refused because the circuit was open or half-open at capacity.
    pub rejected_calls: u64,
    /// State changes since the breaker was built.
    pub state_transitions: u64,
    /// Calls whose result the classifier ignored, or whose permit was dropped unrecorded.
    pub ignored_calls: u64,
    /// Calls (successful or not) slower than the slow-call duration.
    pub slow_calls: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    rows: PerThreadCounters<5>,
    pub(crate) transitions: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Success = 0,
    Failure = 1,
    Rejected = 2,
    Ignored = 3,
}

/// The row index of the slow-call counter, after the four [`Count`]s.
const SLOW: usize = 4;

impl Counters {
    #[inline]
    pub(crate) fn count(&self, what: Count, slow: bool) {
        self.rows.bump(what as usize);
        if slow {
            self.rows.bump(SLOW);
        }
    }

    pub(crate) fn snapshot(&self) -> CircuitMetrics {
        let [
            successful_calls,
            failed_calls,
            rejected_calls,
            ignored_calls,
            slow_calls,
        ] = self.rows.sum();
        CircuitMetrics {
            total_calls: successful_calls + failed_calls + rejected_calls + ignored_calls,
            successful_calls,
            failed_calls,
            rejected_calls,
            state_transitions: self.transitions.load(Ordering::Relaxed),
            ignored_calls,
            slow_calls,
        }
    }
}
