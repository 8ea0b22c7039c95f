//! The policies of one host (or one configured key): its breaker, its retry
//! loop with its budget, its fallback chain. Built on first use, then shared
//! by every call to that host.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rempart::CircuitBreaker;
use rempart::clock::TokioClock;
use rempart::fallback::FallbackChain;
use rempart::retry::{Backoff, Jitter, Retry, RetryBudget};

use crate::answer::{self, Failure, Stored};
use crate::config::ClientConfig;
use crate::observe::{CallObserver, RetryEvents};

/// The seed's `jitter = true`: each pause spread by ±10 %.
const SEED_JITTER: f64 = 0.1;

/// One host's policies.
#[derive(Debug)]
pub(crate) struct HostPolicies {
    pub(crate) key: Arc<str>,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) retry: Retry,
    pub(crate) fallback: Option<FallbackChain<Stored, Failure>>,
    pub(crate) attempt_timeout: Duration,
    /// `x-request-timeout-ms` for a whole `attempt_timeout`, the usual
    /// case, made once rather than formatted and allocated per attempt.
    pub(crate) attempt_header: HeaderValue,
    /// At most this many attempts per call (the last keeps no copy of the request).
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Duration,
}

/// Builds the policies for `key` from `config` (its override if it has one).
/// The settings were validated when the file was read, so the core's own
/// checks cannot refuse them; if one did, its default stands in.
pub(crate) fn build(
    key: &str,
    config: &ClientConfig,
    cache: Option<&answer::AnswerCache>,
    observer: Option<&Arc<dyn CallObserver>>,
) -> HostPolicies {
    let (retry, breaker) = config.for_key(key);
    let cb = CircuitBreaker::builder()
        .name(key)
        .failure_threshold(breaker.failure_threshold)
        .success_threshold(breaker.success_threshold)
        .open_timeout(breaker.timeout)
        .half_open_max_calls(breaker.half_open_max_calls)
        // tokio's clock, so that an open period passes under paused time in tests.
        .clock(TokioClock::new())
        .build()
        .unwrap_or_else(|_| {
            CircuitBreaker::builder()
                .name(key)
                .build()
                .unwrap_or_else(|_| CircuitBreaker::new(rempart::CircuitBreakerConfig::default()))
        });
    if !breaker.enabled {
        cb.disable();
    }
    let backoff = Backoff::exponential(retry.initial_delay, retry.multiplier, retry.max_delay)
        .unwrap_or_else(|_| Backoff::constant(retry.initial_delay));
    let max_attempts = if retry.enabled {
        retry.max_retries.saturating_add(1)
    } else {
        1
    };
    let mut builder = Retry::builder()
        .name(key)
        .max_attempts(max_attempts)
        .backoff(backoff)
        .jitter(if retry.jitter {
            Jitter::Proportional(SEED_JITTER)
        } else {
            Jitter::None
        });
    if let Some(b) = &config.budget
        && let Ok(budget) = RetryBudget::new(b.percent, b.reserve)
    {
        builder = builder.budget(Arc::new(budget));
    }
    if let Some(o) = observer {
        builder = builder.listener(RetryEvents(Arc::clone(o)));
    }
    let retry_loop = builder.build().unwrap_or_else(|_| {
        Retry::builder()
            .name(key)
            .max_attempts(1)
            .build()
            .expect("one attempt is valid")
    });
    HostPolicies {
        key: Arc::from(key),
        breaker: cb,
        retry: retry_loop,
        fallback: answer::chain(key, &config.fallback, cache),
        attempt_timeout: retry.attempt_timeout,
        attempt_header: HeaderValue::from(
            u64::try_from(retry.attempt_timeout.as_millis()).unwrap_or(u64::MAX),
        ),
        max_attempts,
        timeout: retry.timeout,
    }
}

/// The breaker key of a URL: its host, with the port when one is written
/// (two services on one machine are two dependencies).
pub(crate) fn key_of(url: &reqwest::Url) -> &str {
    // The serialization already writes the host, and the port only when it
    // is not the scheme's: slicing it costs no allocation and no formatting.
    &url[url::Position::BeforeHost..url::Position::AfterPort]
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn the_key_is_the_host_with_the_port_written() {
        let key = |u: &str| key_of(&reqwest::Url::parse(u).unwrap()).to_owned();
        assert_eq!(key("http://api.example.com/movies"), "api.example.com");
        assert_eq!(key("http://127.0.0.1:8080/x?y=1"), "127.0.0.1:8080");
        assert_eq!(
            key("http://127.0.0.1:80/"),
            "127.0.0.1",
            "the scheme's own port is not written"
        );
        assert_eq!(
            key("https://user:pw@[::1]:8443/x"),
            "[::1]:8443",
            "credentials are not part of it"
        );
        assert_eq!(key("https://api.example.com:443/"), "api.example.com");
    }
}
