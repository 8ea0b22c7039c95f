//! The pause before the gateway's next attempt, decided by the library's
//! [`rempart::retry::http_retry_delay`] (the same code as the library's
//! `Retry`): an upstream's `Retry-After` on a 429 or 503 sets it, else the
//! backoff does; and no pause may outlast the request's deadline.

use std::time::Duration;

use rempart::retry::{HttpOutcome, http_retry_delay};

/// The pause before another attempt, for an outcome the service's
/// `retry.on` matched: `status` and `retry_after` are the upstream's answer
/// (`None` when it gave none), `backoff` the backoff's pause, `left` the time
/// until the request's deadline. `None`: no time for the pause and another
/// try, so the outcome stands.
///
/// The library caps a `Retry-After` at the cap it is given; here the cap is
/// the time left, so a `Retry-After` that does not fit ends the retries at
/// once rather than trying before the upstream said it is ready. A status
/// the library would not retry but the config lists takes the backoff.
pub(crate) fn pause(
    status: Option<u16>,
    retry_after: Option<Duration>,
    backoff: Duration,
    left: Duration,
) -> Option<Duration> {
    let pause = status
        .and_then(|code| {
            http_retry_delay(&HttpOutcome::Status { code, retry_after }, backoff, left)
        })
        .unwrap_or(backoff);
    (pause < left).then_some(pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_retry_after_on_429_or_503_replaces_the_backoff() {
        for code in [429, 503] {
            assert_eq!(
                pause(Some(code), Some(2 * S), 100 * MS, 10 * S),
                Some(2 * S)
            );
        }
    }

    #[test]
    fn a_retry_after_longer_than_the_time_left_ends_the_retries() {
        assert_eq!(pause(Some(503), Some(5 * S), 100 * MS, 3 * S), None);
    }

    #[test]
    fn other_answers_and_failures_pause_for_the_backoff() {
        // A Retry-After on a 502 is not the library's cue.
        assert_eq!(
            pause(Some(502), Some(5 * S), 100 * MS, 3 * S),
            Some(100 * MS)
        );
        assert_eq!(pause(Some(503), None, 100 * MS, 3 * S), Some(100 * MS));
        assert_eq!(pause(None, None, 100 * MS, 3 * S), Some(100 * MS));
        assert_eq!(pause(None, None, 3 * S, 3 * S), None);
    }

    proptest::proptest! {
        #[test]
        fn no_pause_outlasts_the_deadline(
            code in proptest::option::of(400u16..600),
            after in proptest::option::of(0u64..10_000),
            backoff in 0u64..10_000,
            left in 0u64..10_000,
        ) {
            let p = pause(code, after.map(Duration::from_millis), Duration::from_millis(backoff), Duration::from_millis(left));
            if let Some(p) = p {
                proptest::prop_assert!(p < Duration::from_millis(left));
            }
        }
    }
}
