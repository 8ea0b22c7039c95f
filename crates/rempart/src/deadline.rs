//! Deadlines that travel with the work (seed 002's `context.WithTimeout`).
//!
//! A [`Deadline`] is set for a piece of work with [`Deadline::scope`]; every
//! call made inside sees it through [`Deadline::current`], and every
//! [`timeout`](crate::timeout::timeout) inside is shortened to what remains.
//! Nested scopes take the shorter deadline, never a longer one: an inner
//! call cannot extend its caller's budget.
//!
//! Across HTTP the remaining budget travels in the `x-request-timeout-ms`
//! header (milliseconds left, written by [`Deadline::write_header`]); gRPC's
//! `grpc-timeout` (`"250m"`, `"2S"`, ...) is read too ([`Deadline::from_headers`]).
//!
//! ```
//! use rempart::deadline::Deadline;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! Deadline::after(Duration::from_secs(2)).scope(async {
//!     tokio::time::sleep(Duration::from_millis(500)).await;
//!     // An inner scope asking for 10 s still ends when the outer one does.
//!     Deadline::after(Duration::from_secs(10)).scope(async {
//!         assert_eq!(Deadline::current().unwrap().remaining(), Duration::from_millis(1500));
//!     }).await;
//! }).await;
//! # });
//! ```

use std::future::Future;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The header carrying the remaining budget in milliseconds.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");
/// gRPC's timeout header, read as well.
pub const GRPC_HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

/// A point in (tokio's) time by which the work must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
        }
    }

    /// The deadline of the work this task is doing, if one was set.
    pub fn current() -> Option<Deadline> {
        CURRENT.try_with(|d| *d).ok()
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn is_past(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Runs `fut` under this deadline, or under the current one if that is sooner.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        let effective = Deadline::current().map_or(self, |outer| outer.min(self));
        CURRENT.scope(effective, fut).await
    }

    /// Writes the remaining budget into `headers` for the next hop.
    pub fn write_header(&self, headers: &mut HeaderMap) {
        headers.insert(
            HEADER,
            HeaderValue::from(self.remaining().as_millis() as u64),
        );
    }

    /// The deadline a request carries: the sooner of `x-request-timeout-ms`
    /// and `grpc-timeout` if either is present and readable.
    pub fn from_headers(headers: &HeaderMap) -> Option<Deadline> {
        let ours = headers
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let grpc = headers
            .get(&GRPC_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        match (ours, grpc) {
            (Some(a), Some(b)) => Some(Deadline::after(a.min(b))),
            (a, b) => a.or(b).map(Deadline::after),
        }
    }
}

/// gRPC's `TimeoutValue TimeoutUnit`: at most 8 digits, then one of
/// `H` (hours), `M` (minutes), `S`, `m` (ms), `u` (µs), `n` (ns).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
