//! What is retried: a decision on each attempt's result.

use std::time::Duration;

use crate::CircuitError;

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The result stands (a success, or an answer that must not be retried).
    Accept,
    /// Try again after the backoff's delay.
    Retry,
    /// Try again after this delay (a `Retry-After`), still capped by the backoff's max.
    RetryAfter(Duration),
    /// Stop at once, even with attempts left (a circuit that is open).
    Stop,
}

/// Judges each attempt's result, by reference (`result.as_ref()`). Any
/// `Fn(Result<&T, &E>) -> Decision` is one.
pub trait RetryPolicy<T, E>: Send + Sync {
    /// The decision for `result`.
    fn decide(&self, result: Result<&T, &E>) -> Decision;
}

impl<T, E, F> RetryPolicy<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Decision + Send + Sync,
{
    fn decide(&self, result: Result<&T, &E>) -> Decision {
        self(result)
    }
}

/// Retries every error; accepts every success.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryErrors;

impl<T, E> RetryPolicy<T, E> for RetryErrors {
    fn decide(&self, result: Result<&T, &E>) -> Decision {
        match result {
            Ok(_) => Decision::Accept,
            Err(_) => Decision::Retry,
        }
    }
}

/// Wraps a policy for calls through a [`CircuitBreaker`](crate::CircuitBreaker):
/// a refusal because the circuit is open (or HalfOpen and full) ends the
/// retry loop at once, since every further attempt would be refused too and
/// only burn attempts and time; other errors go to the inner policy.
///
/// Put the retry *outside* the breaker (retry → breaker → call): each attempt
/// is then one call the breaker judges, and an open circuit stops the retries.
///
/// ```
/// use rempart::retry::{Decision, RetryErrors, RetryPolicy, StopWhenOpen};
/// use rempart::CircuitError;
///
/// let p = StopWhenOpen(RetryErrors);
/// assert_eq!(p.decide(Err::<&(), _>(&CircuitError::<()>::Open)), Decision::Stop);
/// assert_eq!(p.decide(Err::<&(), _>(&CircuitError::OperationFailed(()))), Decision::Retry);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StopWhenOpen<P>(pub P);

impl<T, E, P> RetryPolicy<T, CircuitError<E>> for StopWhenOpen<P>
where
    P: RetryPolicy<T, E>,
{
    fn decide(&self, result: Result<&T, &CircuitError<E>>) -> Decision {
        match result {
            Ok(v) => self.0.decide(Ok(v)),
            Err(CircuitError::Open | CircuitError::HalfOpenRejected) => Decision::Stop,
            Err(CircuitError::OperationFailed(e)) => self.0.decide(Err(e)),
        }
    }
}

/// What went wrong with an HTTP call, for [`http_decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// The server answered with this status; `retry_after` is its
    /// `Retry-After`, already parsed (see [`parse_retry_after`](super::parse_retry_after)).
    Status {
        /// The status code.
        code: u16,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No connection within the connect timeout (the request was not sent).
    ConnectTimeout,
    /// The host name did not resolve (the request was not sent).
    Dns,
    /// The connection was refused (the request was not sent).
    ConnectionRefused,
    /// The connection broke mid-request (the request may have been processed).
    ConnectionReset,
}

/// Seed 003's classification of HTTP failures.
///
/// Retried: 429, 500, 502, 503, 504, connect timeout, DNS failure, connection
/// refused or reset; a `Retry-After` on a 429 or 503 sets the delay. Not
/// retried: every other status, among them 400, 401, 403 and 404 (the same
/// request will fail the same way), and every success.
///
/// ```
/// use rempart::retry::{http_decision, Decision, HttpOutcome};
/// use std::time::Duration;
///
/// let busy = HttpOutcome::Status { code: 503, retry_after: Some(Duration::from_secs(7)) };
/// assert_eq!(http_decision(&busy), Decision::RetryAfter(Duration::from_secs(7)));
/// assert_eq!(http_decision(&HttpOutcome::Status { code: 404, retry_after: None }), Decision::Accept);
/// assert_eq!(http_decision(&HttpOutcome::Dns), Decision::Retry);
/// ```
pub fn http_decision(outcome: &HttpOutcome) -> Decision {
    match *outcome {
        HttpOutcome::Status { code, retry_after } => match code {
            429 | 503 => retry_after.map_or(Decision::Retry, Decision::RetryAfter),
            500 | 502 | 504 => Decision::Retry,
            _ => Decision::Accept,
        },
        HttpOutcome::ConnectTimeout
        | HttpOutcome::Dns
        | HttpOutcome::ConnectionRefused
        | HttpOutcome::ConnectionReset => Decision::Retry,
    }
}

/// Whether the request surely never reached the server, so that even a
/// non-idempotent request (a payment) may be sent again.
pub fn http_not_sent(outcome: &HttpOutcome) -> bool {
    matches!(
        outcome,
        HttpOutcome::ConnectTimeout | HttpOutcome::Dns | HttpOutcome::ConnectionRefused
    )
}
