//! What a caller can watch of each call, attempt by attempt (the CLI prints it).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rempart::CircuitState;
use rempart::fallback::FallbackKind;
use rempart::retry::{GiveUp, RetryEvent, RetryListener};

use crate::classify::ErrorKind;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The server answered with this status.
    Status(u16),
    /// A transport failure of this kind; the error's text.
    Failed(ErrorKind, String),
    /// No answer within this limit (the attempt's, or what the call had left).
    TimedOut(Duration),
    /// The breaker refused the attempt: it was not sent.
    Refused(CircuitState),
    /// A failure of no known kind (not retried); its text.
    Other(String),
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptOutcome::Status(code) => write!(f, "HTTP {code}"),
            AttemptOutcome::Failed(kind, text) => write!(f, "{kind}: {text}"),
            AttemptOutcome::TimedOut(limit) => write!(f, "timeout after {limit:?}"),
            AttemptOutcome::Refused(state) => {
                write!(f, "not sent: the circuit breaker is {state}")
            }
            AttemptOutcome::Other(text) => write!(f, "error: {text}"),
        }
    }
}

/// One attempt, as [`CallObserver::on_attempt`] hears of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttemptReport<'a> {
    /// The breaker's key (the host, or the key the request set).
    pub key: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// How long it took.
    pub elapsed: Duration,
    /// The breaker's state once the attempt was recorded.
    pub breaker: CircuitState,
}

/// Told of every attempt, every pause and every fallback. Methods default
/// to doing nothing; calls come from the request's own task, in order.
pub trait CallObserver: Send + Sync + fmt::Debug + 'static {
    /// An attempt ended.
    fn on_attempt(&self, report: &AttemptReport<'_>) {
        let _ = report;
    }
    /// Another attempt follows after `delay` (`retry_after`: the server asked for it).
    fn on_retry(&self, key: &str, attempt: u32, delay: Duration, retry_after: bool) {
        let _ = (key, attempt, delay, retry_after);
    }
    /// The call stopped retrying after `attempts`, without success.
    fn on_give_up(&self, key: &str, attempts: u32, why: GiveUp) {
        let _ = (key, attempts, why);
    }
    /// A fallback answered for a failed call.
    fn on_fallback(&self, key: &str, kind: FallbackKind) {
        let _ = (key, kind);
    }
}

/// Hands rempart's retry events to the observer.
#[derive(Debug)]
pub(crate) struct RetryEvents(pub(crate) Arc<dyn CallObserver>);

impl RetryListener for RetryEvents {
    fn on_retry(&self, e: &RetryEvent<'_>) {
        self.0.on_retry(e.name, e.attempt, e.delay, e.retry_after);
    }
    fn on_give_up(&self, name: &str, attempts: u32, why: GiveUp) {
        self.0.on_give_up(name, attempts, why);
    }
}
