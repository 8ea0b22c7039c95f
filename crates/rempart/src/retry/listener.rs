//! Who hears of retries and give-ups: listeners, for logs and metrics.

use std::time::Duration;

/// A retry about to happen.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The retry's name.
    pub name: &'a str,
    /// The attempt that just failed (1 = the first).
    pub attempt: u32,
    /// The pause before the next attempt.
    pub delay: Duration,
    /// Whether the failed attempt timed out.
    pub after_timeout: bool,
    /// Whether the pause came from a `Retry-After`.
    pub retry_after: bool,
}

/// Why a call stopped retrying with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUp {
    /// The policy did not retry the last result.
    NotRetried,
    /// Every attempt was used.
    AttemptsSpent,
    /// No time was left for the pause and another attempt: the overall
    /// timeout, `max_elapsed`, or the [`Deadline`](crate::deadline::Deadline) in scope.
    OutOfTime,
}

/// Told of retries, for logging and metrics. Called on the retry path only.
pub trait RetryListener: Send + Sync + std::fmt::Debug + 'static {
    /// A retry is about to pause and try again.
    fn on_retry(&self, event: &RetryEvent<'_>) {
        let _ = event;
    }
    /// A call ended without success after `attempts` attempts.
    fn on_give_up(&self, name: &str, attempts: u32, why: GiveUp) {
        let _ = (name, attempts, why);
    }
}

/// Logs every retry and give-up through `tracing` (DEBUG and WARN).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingRetryListener;

impl RetryListener for TracingRetryListener {
    fn on_retry(&self, e: &RetryEvent<'_>) {
        tracing::debug!(
            retry = e.name,
            attempt = e.attempt,
            delay_ms = e.delay.as_millis() as u64,
            "retrying"
        );
    }
    fn on_give_up(&self, name: &str, attempts: u32, why: GiveUp) {
        tracing::warn!(retry = name, attempts, ?why, "giving up");
    }
}
