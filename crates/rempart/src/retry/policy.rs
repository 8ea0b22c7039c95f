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
    /// No answer within the attempt's time limit (the request may have been
    /// processed).
    Timeout,
}

/// Seed 003's classification of HTTP failures.
///
/// Retried: 429, 500, 502, 503, 504, connect timeout, DNS failure, connection
/// refused or reset, an attempt that timed out; a `Retry-After` on a 429 or
/// 503 sets the delay. Not
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
        | HttpOutcome::ConnectionReset
        | HttpOutcome::Timeout => Decision::Retry,
    }
}

/// The pause before the next attempt that `decision` asks for, or `None`
/// when the result stands (`Accept`, `Stop`): `backoff_delay` (the backoff's
/// delay for this attempt, jittered or not) for a plain `Retry`, the server's
/// `Retry-After` bounded by `cap` for `RetryAfter`. Pure: [`Retry`](super::Retry)'s
/// loop decides its pauses with it.
///
/// ```
/// use rempart::retry::{retry_delay, Decision};
/// use std::time::Duration;
///
/// let (backoff, cap) = (Duration::from_millis(200), Duration::from_secs(10));
/// assert_eq!(retry_delay(Decision::Retry, backoff, cap), Some(backoff));
/// assert_eq!(retry_delay(Decision::RetryAfter(Duration::from_secs(120)), backoff, cap), Some(cap));
/// assert_eq!(retry_delay(Decision::Stop, backoff, cap), None);
/// ```
pub fn retry_delay(decision: Decision, backoff_delay: Duration, cap: Duration) -> Option<Duration> {
    match decision {
        Decision::Accept | Decision::Stop => None,
        Decision::Retry => Some(backoff_delay),
        Decision::RetryAfter(asked) => Some(asked.min(cap)),
    }
}

/// One HTTP attempt's retry decision, for a caller that runs its own attempt
/// loop (a proxy): retry after the returned pause, or `None` to stop and pass
/// the answer (or error) on. The same rules and the same code as [`Retry`](super::Retry)
/// with [`http_decision`]: [`http_decision`] classifies the outcome, and
/// [`retry_delay`] picks the pause, the server's `Retry-After` (capped) before
/// the backoff's delay. Pure: the caller still counts attempts, spends its
/// retry budget, and checks that the pause ends before its deadline; only
/// idempotent requests should be retried at all (see [`http_not_sent`]).
///
/// ```
/// use rempart::retry::{http_retry_delay, parse_retry_after, Backoff, HttpOutcome};
/// use std::time::{Duration, SystemTime};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(5)).unwrap();
/// let attempt = 2; // the second retry
///
/// // A 503 whose `Retry-After: 3` the proxy read from the upstream's answer.
/// let retry_after = parse_retry_after("3", SystemTime::now());
/// let busy = HttpOutcome::Status { code: 503, retry_after };
/// assert_eq!(http_retry_delay(&busy, backoff.delay(attempt), backoff.max()), Some(Duration::from_secs(3)));
///
/// // A reset connection: the backoff's delay.
/// let reset = HttpOutcome::ConnectionReset;
/// assert_eq!(http_retry_delay(&reset, backoff.delay(attempt), backoff.max()), Some(Duration::from_millis(200)));
///
/// // A Retry-After beyond the cap is cut to it; a 404 is passed on at once.
/// let later = HttpOutcome::Status { code: 429, retry_after: Some(Duration::from_secs(600)) };
/// assert_eq!(http_retry_delay(&later, backoff.delay(attempt), backoff.max()), Some(Duration::from_secs(5)));
/// let missing = HttpOutcome::Status { code: 404, retry_after: None };
/// assert_eq!(http_retry_delay(&missing, backoff.delay(attempt), backoff.max()), None);
/// ```
pub fn http_retry_delay(
    outcome: &HttpOutcome,
    backoff_delay: Duration,
    cap: Duration,
) -> Option<Duration> {
    retry_delay(http_decision(outcome), backoff_delay, cap)
}

/// Whether the request surely never reached the server, so that even a
/// non-idempotent request (a payment) may be sent again.
pub fn http_not_sent(outcome: &HttpOutcome) -> bool {
    matches!(
        outcome,
        HttpOutcome::ConnectTimeout | HttpOutcome::Dns | HttpOutcome::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn status(code: u16, retry_after: Option<Duration>) -> HttpOutcome {
        HttpOutcome::Status { code, retry_after }
    }

    #[test]
    fn retry_after_on_429_and_503_sets_the_pause_within_the_cap() {
        for code in [429, 503] {
            assert_eq!(
                http_retry_delay(&status(code, Some(3 * S)), S, 10 * S),
                Some(3 * S)
            );
            assert_eq!(
                http_retry_delay(&status(code, Some(60 * S)), S, 10 * S),
                Some(10 * S)
            );
            assert_eq!(http_retry_delay(&status(code, None), S, 10 * S), Some(S));
            assert_eq!(
                http_retry_delay(&status(code, Some(Duration::ZERO)), S, 10 * S),
                Some(Duration::ZERO),
                "Retry-After: 0 or a past date means now"
            );
        }
    }

    #[test]
    fn other_5xx_and_transport_errors_take_the_backoff_and_ignore_retry_after() {
        for code in [500, 502, 504] {
            assert_eq!(
                http_retry_delay(&status(code, Some(9 * S)), S, 10 * S),
                Some(S)
            );
        }
        for outcome in [
            HttpOutcome::ConnectTimeout,
            HttpOutcome::Dns,
            HttpOutcome::ConnectionRefused,
            HttpOutcome::ConnectionReset,
            HttpOutcome::Timeout,
        ] {
            assert_eq!(
                http_retry_delay(&outcome, 2 * S, 10 * S),
                Some(2 * S),
                "{outcome:?}"
            );
        }
        assert!(
            !http_not_sent(&HttpOutcome::Timeout),
            "a timed-out request may have run"
        );
    }

    #[test]
    fn successes_and_client_errors_stop() {
        for code in [200, 204, 301, 400, 401, 403, 404, 409, 422, 501] {
            assert_eq!(
                http_retry_delay(&status(code, Some(S)), S, 10 * S),
                None,
                "{code}"
            );
        }
    }

    proptest! {
        #[test]
        fn the_pause_never_exceeds_the_larger_of_backoff_and_cap(
            code in 100u16..600,
            retry_after in proptest::option::of(0u64..100_000),
            backoff_ms in 0u64..100_000,
            cap_ms in 0u64..100_000,
        ) {
            let (backoff, cap) = (Duration::from_millis(backoff_ms), Duration::from_millis(cap_ms));
            let outcome = status(code, retry_after.map(Duration::from_millis));
            if let Some(pause) = http_retry_delay(&outcome, backoff, cap) {
                prop_assert!(pause == backoff || pause <= cap);
                prop_assert_eq!(http_decision(&outcome) == Decision::Accept, false);
            } else {
                prop_assert_eq!(http_decision(&outcome), Decision::Accept);
            }
        }
    }
}
