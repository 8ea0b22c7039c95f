//! Attempts: sending a request upstream, and sending it again.
//!
//! The gateway applies the library's order of policies (`rempart::pipeline`),
//! outer to inner, to every attempt:
//!
//! 1. **retry** (idempotent requests, or routes that opt in; within the
//!    service's retry budget and the request's deadline): the pause comes
//!    from the backoff, or from the upstream's `Retry-After`
//!    ([`crate::retry_pause`]);
//! 2. **circuit breaker**: a permit per attempt, so the breaker sees every
//!    attempt's outcome, and an open circuit ends the retries at once (the
//!    last outcome stands, as the library's `StopWhenOpen`);
//! 3. **bulkhead**: a slot per attempt, waited for no longer than `max_wait`
//!    and the deadline; a retry's pause holds no slot;
//! 4. **per-try timeout**, within what is left of the total.
//!
//! The last attempt's permit and slot ride a good answer's body to its end
//! ([`crate::deadline_body`]): a body cut off mid-way is a failure, and a
//! slow body keeps its slot only until the deadline.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, Uri};
use rempart::bulkhead::OwnedBulkheadPermit;
use rempart::circuit_breaker::OwnedPermit;
use rempart::clock::Instant;
use rempart::retry::{Backoff, Jitter, parse_retry_after};
use rempart::rng::{Rng, SplitMix64};

use super::fallback::Refusal;
use super::{Gateway, Service};
use crate::client::{UpstreamBody, UpstreamRequest, is_idempotent};
use crate::config::{BackoffKind, JitterKind, RetryConfig, RetryOn};
use crate::metrics::Outcome;
use crate::router::{Route, Router};

/// How one attempt ended.
// Lives on the stack for one attempt; boxing the common variant would cost an
// allocation per request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
pub(super) enum Attempt {
    Answered(Response<UpstreamBody>),
    Connect,
    Reset,
    Timeout,
}

/// How the attempts ended.
// Returned once per request, by value, like `Attempt`.
#[allow(clippy::large_enum_variant)]
pub(super) enum Tried {
    /// At least one attempt was sent, and this is the last one's outcome. For
    /// an answer that is not a 5xx, its breaker permit (judged at the end of
    /// the body) and bulkhead slot ride along.
    Sent {
        outcome: Attempt,
        permit: Option<OwnedPermit>,
        slot: Option<OwnedBulkheadPermit>,
    },
    /// No attempt was sent.
    Refused(Refusal),
}

impl Attempt {
    fn matches(&self, on: &[RetryOn]) -> bool {
        on.iter().any(|o| match (o, self) {
            (RetryOn::Status(code), Attempt::Answered(r)) => r.status().as_u16() == *code,
            (RetryOn::Connect, Attempt::Connect)
            | (RetryOn::Reset, Attempt::Reset)
            | (RetryOn::Timeout, Attempt::Timeout) => true,
            _ => false,
        })
    }

    /// Records a failed attempt on its permit at once; hands back the permit
    /// of an answer that is not a 5xx, to be judged when its body ends.
    fn judge(&self, permit: OwnedPermit) -> Option<OwnedPermit> {
        match self {
            Attempt::Answered(r) if !r.status().is_server_error() => Some(permit),
            _ => {
                permit.failure();
                None
            }
        }
    }
}

impl Gateway {
    /// Sends the request until an attempt's outcome stands: retry → breaker
    /// → bulkhead → per-try timeout, every wait within `deadline` (on the
    /// gateway's clock) and `wall_deadline` (the same instant on tokio's).
    pub(super) async fn attempts(
        &self,
        service: &Service,
        route: &Route,
        parts: &mut http::request::Parts,
        body: &Bytes,
        deadline: Instant,
        wall_deadline: tokio::time::Instant,
    ) -> Tried {
        let s = &*self.shared;
        // The client's path and query as is (no copy) unless the route
        // strips its prefix or the upstream URL has a base path.
        let path_and_query: Option<String> = if route.strip_prefix {
            let path = Router::upstream_path(route, parts.uri.path());
            Some(match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            })
        } else {
            None
        };
        let retry = service
            .config
            .retry
            .as_ref()
            .filter(|_| route.retry_non_idempotent || is_idempotent(&parts.method));
        let attempts = retry.map_or(1, |r| r.attempts.max(1));
        let mut rng: Option<SplitMix64> = None; // seeded only if a retry needs jitter
        let mut prev_delay = retry.map_or(Duration::ZERO, |r| r.initial);
        if let Some(b) = &service.retry_budget {
            b.deposit();
        }

        // The previous attempt's outcome: it stands if the next is refused.
        let mut last: Option<Attempt> = None;
        let stands = |last: Option<Attempt>, why: Refusal| match last {
            Some(outcome) => Tried::Sent {
                outcome,
                permit: None,
                slot: None,
            },
            None => Tried::Refused(why),
        };
        let mut attempt = 1;
        loop {
            // Circuit breaker: a permit, or a refusal at once.
            let Ok(permit) = service.breaker.try_acquire_owned() else {
                if last.is_none() {
                    service.counters.count(Outcome::Rejected);
                }
                return stands(last, Refusal::Open);
            };
            // Bulkhead: a slot within `max_wait`, and never past the deadline.
            let slot = match &service.bulkhead {
                None => None,
                Some(b) => match tokio::time::timeout_at(wall_deadline, b.acquire_owned()).await {
                    Ok(Ok(slot)) => Some(slot),
                    Ok(Err(_)) | Err(_) => {
                        permit.ignore();
                        if last.is_none() {
                            service.counters.count(Outcome::BulkheadFull);
                        }
                        return stands(last, Refusal::BulkheadFull);
                    }
                },
            };
            let host = service.upstreams.pick();
            let base = host.map(|h| &service.upstreams.hosts()[h].url);
            let (Some(host), Some(authority)) = (host, base.and_then(|b| b.authority())) else {
                // No host to send to: the service is failing, as far as the breaker knows.
                permit.failure();
                return stands(last, Refusal::Unreachable);
            };
            let base = &service.upstreams.hosts()[host].url;
            let left = remaining(deadline, s.clock.now());
            let try_limit = service.config.per_try_timeout.map_or(left, |t| t.min(left));
            let target = upstream_target(base, path_and_query.as_deref(), &parts.uri);
            // The upstream learns how long this attempt may take (any value the
            // client sent is replaced: it was honoured when the deadline was set).
            parts.headers.insert(
                rempart::deadline::HEADER,
                HeaderValue::from(u64::try_from(try_limit.as_millis()).unwrap_or(u64::MAX)),
            );
            let req = UpstreamRequest {
                method: &parts.method,
                target: &target,
                headers: &parts.headers,
                body,
            };
            let outcome = match tokio::time::timeout(try_limit, s.client.send(authority, req)).await
            {
                Ok(Ok(resp)) => {
                    if resp.status().is_server_error() {
                        service.upstreams.failure(host);
                    } else {
                        service.upstreams.success(host);
                    }
                    Attempt::Answered(resp)
                }
                Ok(Err(e)) => {
                    service.upstreams.failure(host);
                    if e.is_connect() {
                        Attempt::Connect
                    } else {
                        Attempt::Reset
                    }
                }
                Err(_) => {
                    service.upstreams.failure(host);
                    Attempt::Timeout
                }
            };
            drop(last.take());

            let Some(r) = retry.filter(|r| attempt < attempts && outcome.matches(&r.on)) else {
                let permit = outcome.judge(permit);
                return Tried::Sent {
                    outcome,
                    permit,
                    slot,
                };
            };
            // The budget refuses: this outcome stands rather than add load.
            if service.retry_budget.as_ref().is_some_and(|b| !b.withdraw()) {
                service.counters.count(Outcome::BudgetExhausted);
                let permit = outcome.judge(permit);
                return Tried::Sent {
                    outcome,
                    permit,
                    slot,
                };
            }
            let backoff = backoff_delay(
                r,
                attempt,
                prev_delay,
                rng.get_or_insert_with(SplitMix64::from_entropy),
            );
            let (status, retry_after) = match &outcome {
                Attempt::Answered(resp) => (Some(resp.status().as_u16()), retry_after(resp)),
                _ => (None, None),
            };
            let left = remaining(deadline, s.clock.now());
            // No time left for the pause and another try: this outcome stands.
            let Some(delay) = crate::retry_pause::pause(status, retry_after, backoff, left) else {
                let permit = outcome.judge(permit);
                return Tried::Sent {
                    outcome,
                    permit,
                    slot,
                };
            };
            // This attempt is over: the breaker hears of it now, and the pause
            // holds no slot.
            if let Some(p) = outcome.judge(permit) {
                p.success();
            }
            drop(slot);
            last = Some(outcome);
            prev_delay = delay;
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

fn remaining(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

/// The upstream's `Retry-After`, read only where the library heeds one.
fn retry_after(resp: &Response<UpstreamBody>) -> Option<Duration> {
    if !matches!(resp.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    // An HTTP-date is wall-clock time; delay-seconds (the usual form) is not.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    parse_retry_after(value, now)
}

/// The library's backoff and jitter for a service's `retry` settings.
fn retry_schedule(r: &RetryConfig) -> (Backoff, Jitter) {
    // The config checked `max >= initial`, so the constructors cannot refuse.
    let backoff = match r.backoff {
        BackoffKind::Constant => Backoff::constant(r.initial),
        BackoffKind::Linear => {
            Backoff::linear(r.initial, r.max).unwrap_or(Backoff::constant(r.initial))
        }
        BackoffKind::Exponential => {
            Backoff::exponential(r.initial, 2.0, r.max).unwrap_or(Backoff::constant(r.initial))
        }
    };
    let jitter = match r.jitter {
        JitterKind::None => Jitter::None,
        JitterKind::Full => Jitter::Full,
        JitterKind::Equal => Jitter::Equal,
        JitterKind::Decorrelated => Jitter::Decorrelated,
    };
    (backoff, jitter)
}

/// The pause before retry `attempt` (1-based), given the previous pause.
fn backoff_delay(r: &RetryConfig, attempt: u32, prev: Duration, rng: &mut impl Rng) -> Duration {
    let (backoff, jitter) = retry_schedule(r);
    jitter.apply(
        backoff.delay(attempt),
        prev,
        backoff.initial(),
        backoff.max(),
        rng,
    )
}

/// The request target upstream: `base`'s path as a prefix, then `rewritten`
/// (a stripped path) or else the client's own path and query. Borrowed from
/// the client's request in the common case of neither.
fn upstream_target<'a>(base: &Uri, rewritten: Option<&'a str>, client: &'a Uri) -> Cow<'a, str> {
    let prefix = base.path().trim_end_matches('/');
    let tail = rewritten.unwrap_or_else(|| client.path_and_query().map_or("/", |pq| pq.as_str()));
    if prefix.is_empty() {
        Cow::Borrowed(tail)
    } else {
        Cow::Owned(format!("{prefix}{tail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(backoff: BackoffKind, jitter: JitterKind) -> RetryConfig {
        RetryConfig {
            attempts: 5,
            backoff,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter,
            on: vec![],
            budget_percent: 20,
        }
    }

    #[test]
    fn exponential_delays_double_up_to_the_cap() {
        let r = retry(BackoffKind::Exponential, JitterKind::None);
        let mut rng = SplitMix64::seeded(1);
        let d: Vec<u64> = (1..=6)
            .map(|a| backoff_delay(&r, a, Duration::ZERO, &mut rng).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_stays_within_the_delay() {
        let r = retry(BackoffKind::Constant, JitterKind::Full);
        let mut rng = SplitMix64::seeded(2);
        for _ in 0..1000 {
            assert!(backoff_delay(&r, 1, Duration::ZERO, &mut rng) <= Duration::from_millis(100));
        }
    }

    #[test]
    fn upstream_targets_keep_the_base_path() {
        let base: Uri = "http://127.0.0.1:7003/api/".parse().unwrap();
        let client: Uri = "/reports?x=1".parse().unwrap();
        assert_eq!(upstream_target(&base, None, &client), "/api/reports?x=1");
        let bare: Uri = "http://127.0.0.1:7003".parse().unwrap();
        assert_eq!(upstream_target(&bare, None, &client), "/reports?x=1");
        assert_eq!(upstream_target(&bare, Some("/7"), &client), "/7");
        assert_eq!(upstream_target(&base, Some("/7"), &client), "/api/7");
    }
}
