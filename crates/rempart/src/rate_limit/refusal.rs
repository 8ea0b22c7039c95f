use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

/// A rate limiter's refusal, with what a client needs to come back at the
/// right time.
///
/// The HTTP helpers write `429 Too Many Requests` and these headers (all in
/// whole seconds, rounded up so a client that waits that long is admitted):
///
/// | header | value |
/// |---|---|
/// | `Retry-After` | [`retry_after`](Self::retry_after) |
/// | `X-RateLimit-Limit`, `RateLimit-Limit` | [`limit`](Self::limit) |
/// | `X-RateLimit-Remaining`, `RateLimit-Remaining` | [`remaining`](Self::remaining) |
/// | `RateLimit-Reset` | [`reset`](Self::reset) |
/// | `RateLimit-Policy` | `limit;w=window` |
///
/// The `RateLimit-*` fields are the separate-header form of the IETF draft
/// (draft-ietf-httpapi-ratelimit-headers up to -06), which clients and
/// proxies read today; the later combined `RateLimit:` form is not written.
///
/// ```
/// use rempart::clock::ManualClock;
/// use rempart::rate_limit::RateLimiter;
/// use std::time::Duration;
///
/// let limiter = RateLimiter::builder()
///     .rate(10, Duration::from_secs(1))
///     .burst(20)
///     .clock(ManualClock::new())
///     .build()
///     .unwrap();
/// for _ in 0..20 {
///     limiter.check().unwrap();
/// }
/// let refused = limiter.check().unwrap_err();
/// let response: http::Response<String> = refused.to_response();
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "1");
/// assert_eq!(response.headers()["ratelimit-limit"], "20");
/// assert_eq!(response.headers()["ratelimit-remaining"], "0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub(crate) limiter: Arc<str>,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) window: Duration,
    pub(crate) reset: Duration,
    pub(crate) retry_after: Duration,
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Whole seconds, rounded up: a client told "1" for 100 ms waits long enough.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RateLimited {
    /// The name of the limiter that refused.
    pub fn limiter(&self) -> &str {
        &self.limiter
    }

    /// The most requests the limiter admits at once: the token bucket's burst,
    /// or the sliding window's maximum per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Requests still admitted right now (0 for a token bucket's refusal; a
    /// sliding window can refuse a batch while a smaller one would pass).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The period over which [`limit`](Self::limit) applies: a full refill of
    /// the bucket, or the sliding window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Time until the full limit is available again (the bucket is full, or
    /// every counted request has left the window).
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// Time until one more request would be admitted, if no one else takes it first.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up (the `Retry-After` value).
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after)
    }

    /// [`reset`](Self::reset) in whole seconds, rounded up (the `RateLimit-Reset` value).
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }

    /// Writes `Retry-After`, `X-RateLimit-*` and `RateLimit-*` into `headers`,
    /// replacing any already there.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let n = |v: u64| HeaderValue::from(v);
        headers.insert(RETRY_AFTER, n(self.retry_after_secs()));
        headers.insert(X_RATELIMIT_LIMIT.clone(), n(self.limit));
        headers.insert(X_RATELIMIT_REMAINING.clone(), n(self.remaining));
        headers.insert(RATELIMIT_LIMIT.clone(), n(self.limit));
        headers.insert(RATELIMIT_REMAINING.clone(), n(self.remaining));
        headers.insert(RATELIMIT_RESET.clone(), n(self.reset_secs()));
        let policy = format!("{};w={}", self.limit, ceil_secs(self.window));
        if let Ok(v) = HeaderValue::from_str(&policy) {
            headers.insert(RATELIMIT_POLICY.clone(), v);
        }
    }

    /// Turns `response` into this refusal: status 429 and the headers of
    /// [`write_headers`](Self::write_headers); the body is left as it is.
    pub fn apply<B>(&self, response: &mut Response<B>) {
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        self.write_headers(response.headers_mut());
    }

    /// A `429 Too Many Requests` response with the headers and a short text body.
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        let body = format!(
            "Too Many Requests: retry in {} s\n",
            self.retry_after_secs()
        );
        let mut response = Response::new(B::from(body));
        self.apply(&mut response);
        response
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit `{}` reached ({} per {:?}): retry in {:?}",
            self.limiter, self.limit, self.window, self.retry_after
        )
    }
}

impl Error for RateLimited {}
