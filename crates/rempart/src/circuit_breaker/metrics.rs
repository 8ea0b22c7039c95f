//! Call counters without contended writes.
//!
//! Every call bumps a counter, so a counter shared by all threads would bounce
//! its cache line between cores on every call. Instead each thread owns a row
//! of counters (`thread_local::ThreadLocal`), written only by that thread with a
//! plain load and store, and `snapshot` sums the rows. A row outlives its
//! thread and is handed, with its counts, to the next thread that takes that
//! thread's id, so no count is ever lost.

use std::sync::atomic::{AtomicU64, Ordering};
use thread_local::ThreadLocal;

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
#[repr(align(128))] // a row per cache-line pair, so neighbouring rows never share a line
pub(crate) struct Row {
    successes: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    ignored: AtomicU64,
    slow: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64) {
    // Only the owning thread writes its row, so load + store is exact and needs
    // no locked instruction.
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    rows: ThreadLocal<Row>,
    pub(crate) transitions: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Success,
    Failure,
    Rejected,
    Ignored,
}

impl Counters {
    #[inline]
    pub(crate) fn count(&self, what: Count, slow: bool) {
        let row = match self.rows.get() {
            Some(row) => row,
            None => self.first_row(),
        };
        bump(match what {
            Count::Success => &row.successes,
            Count::Failure => &row.failures,
            Count::Rejected => &row.rejected,
            Count::Ignored => &row.ignored,
        });
        if slow {
            bump(&row.slow);
        }
    }

    /// The calling thread's first count: make its row (once per thread and breaker).
    #[cold]
    #[inline(never)]
    fn first_row(&self) -> &Row {
        self.rows.get_or_default()
    }

    pub(crate) fn snapshot(&self) -> CircuitMetrics {
        let mut m = CircuitMetrics {
            state_transitions: self.transitions.load(Ordering::Relaxed),
            ..CircuitMetrics::default()
        };
        for row in self.rows.iter() {
            m.successful_calls += row.successes.load(Ordering::Relaxed);
            m.failed_calls += row.failures.load(Ordering::Relaxed);
            m.rejected_calls += row.rejected.load(Ordering::Relaxed);
            m.ignored_calls += row.ignored.load(Ordering::Relaxed);
            m.slow_calls += row.slow.load(Ordering::Relaxed);
        }
        m.total_calls = m.successful_calls + m.failed_calls + m.rejected_calls + m.ignored_calls;
        m
    }
}
