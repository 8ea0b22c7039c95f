//! Retry counters (seed 003's retry metrics), kept per thread.

use std::time::Duration;

use crate::per_thread::PerThreadCounters;

/// Upper bounds of the delay histogram's buckets, in seconds (the last is +∞).
pub const DELAY_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, f64::INFINITY];

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    SuccessFirst = 0,
    SuccessAfterRetry = 1,
    Exhausted = 2,
    NotRetried = 3,
    MaxRetriesReached = 4,
    BudgetRefusals = 5,
    TimedOut = 6,
    Retries = 7,
    DelayMicros = 8,
}

const DELAY0: usize = 9;
const N: usize = DELAY0 + DELAY_BUCKETS.len();

#[derive(Debug, Default)]
pub(crate) struct Stats(PerThreadCounters<N>);

impl Stats {
    #[inline]
    pub(crate) fn bump(&self, c: Counter) {
        self.0.bump(c as usize);
    }

    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.0.add(c as usize, n);
    }

    pub(crate) fn record_delay(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DELAY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DELAY_BUCKETS.len() - 1);
        self.0.bump(DELAY0 + i);
        self.0.add(
            Counter::DelayMicros as usize,
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        );
    }

    pub(crate) fn snapshot(&self) -> RetryMetrics {
        let c = self.0.sum();
        let mut delays = [0u64; DELAY_BUCKETS.len()];
        delays.copy_from_slice(&c[DELAY0..]);
        let calls = c[0] + c[1] + c[2] + c[3] + c[6];
        RetryMetrics {
            calls,
            attempts: calls + c[Counter::Retries as usize],
            successful_first_attempt: c[0],
            successful_after_retry: c[1],
            failed_after_retries: c[2] + c[6],
            not_retried: c[3],
            max_retries_reached: c[4],
            budget_refusals: c[5],
            timed_out: c[6],
            delays,
            delay_total: Duration::from_micros(c[Counter::DelayMicros as usize]),
        }
    }
}

/// A [`Retry`](super::Retry)'s counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryMetrics {
    /// Calls finished.
    pub calls: u64,
    /// Attempts made (first attempts plus retries).
    pub attempts: u64,
    /// Calls that succeeded at once.
    pub successful_first_attempt: u64,
    /// Calls that succeeded after at least one retry.
    pub successful_after_retry: u64,
    /// Calls that failed with attempts, time or budget spent.
    pub failed_after_retries: u64,
    /// Calls whose error the policy did not retry.
    pub not_retried: u64,
    /// Calls that used every attempt.
    pub max_retries_reached: u64,
    /// Retries refused by the budget.
    pub budget_refusals: u64,
    /// Calls whose last attempt timed out.
    pub timed_out: u64,
    /// Pauses taken, per bucket of [`DELAY_BUCKETS`] (not cumulative).
    pub delays: [u64; DELAY_BUCKETS.len()],
    /// Time spent pausing, in all.
    pub delay_total: Duration,
}
