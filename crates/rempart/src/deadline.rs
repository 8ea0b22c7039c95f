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
use std::pin::Pin;
use std::task::{Context, Poll};
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

/// Budgets are capped at this (about 30 years, as tokio's far future).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
/// Used only if even the far future does not fit the platform's clock.
const FAR_FUTURE_FALLBACK: Duration = Duration::from_secs(86_400);

/// A point in (tokio's) time by which the work must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// `budget` from now. A budget too large for the clock (a peer's
    /// `x-request-timeout-ms: 18446744073709551615`) is taken as about 30
    /// years, tokio's own "far future", rather than overflowing.
    pub fn after(budget: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            at: now
                .checked_add(budget.min(FAR_FUTURE))
                .unwrap_or(now + FAR_FUTURE_FALLBACK),
        }
    }

    /// The deadline `at`, an instant of tokio's clock (for a caller that
    /// has just read the clock and would otherwise read it again).
    pub fn at(at: Instant) -> Deadline {
        Deadline { at }
    }

    /// The instant it falls at, on tokio's clock: a caller that has read
    /// the clock can measure what is left without reading it again.
    ///
    /// ```
    /// use rempart::deadline::Deadline;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let now = Instant::now();
    /// let d = Deadline::at(now + Duration::from_secs(2));
    /// assert_eq!(d.instant().saturating_duration_since(now), Duration::from_secs(2));
    /// # });
    /// ```
    pub fn instant(&self) -> Instant {
        self.at
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

    /// Runs `fut` under this deadline, or under the current one if that is
    /// sooner (the current one as of the first poll). The deadline is in
    /// scope while `fut` is polled; a scope dropped unfinished drops `fut`
    /// outside it.
    //
    // A plain future rather than an `async fn`: an `async fn` holds `fut`
    // twice (its argument and the scope it awaits), so a caller with a large
    // future had to box it to keep the state small.
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        Scope {
            deadline: self,
            settled: false,
            fut,
        }
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
            .and_then(parse_timeout_ms);
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

pin_project_lite::pin_project! {
    /// The future of [`Deadline::scope`]: `fut`, polled with the deadline in
    /// the task-local scope (as tokio's `TaskLocalFuture` does, each poll).
    struct Scope<F> {
        deadline: Deadline,
        // Whether `deadline` is the effective one yet: the sooner of this
        // scope's and the enclosing one is taken at the first poll.
        settled: bool,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Scope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !*this.settled {
            if let Some(outer) = Deadline::current() {
                *this.deadline = outer.min(*this.deadline);
            }
            *this.settled = true;
        }
        let fut = this.fut;
        CURRENT.sync_scope(*this.deadline, || fut.poll(cx))
    }
}

/// The budget in an `x-request-timeout-ms` value: whole milliseconds, ASCII
/// digits only, surrounding spaces allowed. `None` for anything else (a sign,
/// a fraction, a unit, an empty value, a number past `u64`).
///
/// ```
/// use rempart::deadline::parse_timeout_ms;
/// use std::time::Duration;
///
/// assert_eq!(parse_timeout_ms(" 1500 "), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_timeout_ms("+15"), None);
/// assert_eq!(parse_timeout_ms("99999999999999999999"), None);
/// ```
pub fn parse_timeout_ms(v: &str) -> Option<Duration> {
    let v = v.trim();
    // `u64::from_str` alone would also take a leading `+`.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().map(Duration::from_millis)
}

/// gRPC's `TimeoutValue TimeoutUnit`: 1 to 8 ASCII digits, then one of
/// `H` (hours), `M` (minutes), `S`, `m` (ms), `u` (µs), `n` (ns). `None` for
/// anything else, whatever the bytes (it never panics).
///
/// ```
/// use rempart::deadline::parse_grpc_timeout;
/// use std::time::Duration;
///
/// assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
/// assert_eq!(parse_grpc_timeout("1µ"), None);
/// assert_eq!(parse_grpc_timeout("123456789S"), None, "9 digits");
/// ```
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    // Split on bytes: the unit is one ASCII byte, so anything else is refused
    // before a slice could land inside a multi-byte character.
    let (&unit, digits) = v.trim().as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: below 10^8, so no product below can overflow.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpc_timeout_with_a_non_ascii_unit_is_none_not_a_panic() {
        for v in ["1µ", "µ", "1é", "12€", "€", "1\u{10FFFF}", "\u{301}m"] {
            assert_eq!(parse_grpc_timeout(v), None, "{v:?}");
        }
    }

    #[test]
    fn grpc_timeout_refuses_empty_signed_long_and_unitless_values() {
        for v in [
            "",
            " ",
            "m",
            "S",
            "+1S",
            "-1S",
            "1.5S",
            "123456789m",
            "10",
            "1 S",
            "1s",
        ] {
            assert_eq!(parse_grpc_timeout(v), None, "{v:?}");
        }
    }

    #[test]
    fn grpc_timeout_reads_every_unit_at_its_largest() {
        let n = 99_999_999;
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(n * 3600))
        );
        assert_eq!(
            parse_grpc_timeout("99999999M"),
            Some(Duration::from_secs(n * 60))
        );
        assert_eq!(parse_grpc_timeout(" 2S "), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("00000009n"),
            Some(Duration::from_nanos(9))
        );
    }

    #[test]
    fn request_timeout_ms_refuses_what_is_not_plain_digits() {
        for v in [
            "",
            "  ",
            "+5",
            "-5",
            "1.5",
            "5ms",
            "1µ",
            "µ",
            "0x10",
            "18446744073709551616",
        ] {
            assert_eq!(parse_timeout_ms(v), None, "{v:?}");
        }
        assert_eq!(parse_timeout_ms("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_timeout_ms("18446744073709551615"),
            Some(Duration::from_millis(u64::MAX))
        );
    }

    #[test]
    fn a_deadline_from_the_largest_header_value_does_not_overflow_the_clock() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("18446744073709551615"));
        headers.insert(GRPC_HEADER, HeaderValue::from_static("99999999H"));
        let d = Deadline::from_headers(&headers).expect("both readable");
        assert!(d.remaining() >= FAR_FUTURE - Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn header_parsers_never_panic(v in any::<String>()) {
            let _ = parse_grpc_timeout(&v);
            let _ = parse_timeout_ms(&v);
        }

        #[test]
        fn header_parsers_never_panic_on_near_misses(v in "[ 0-9+\\-.]{0,12}[HMSmunµé€ ]?") {
            let _ = parse_grpc_timeout(&v);
            let _ = parse_timeout_ms(&v);
        }

        #[test]
        fn grpc_timeout_reads_what_it_is_given(n in 0u64..100_000_000, unit in 0usize..6) {
            let (suffix, expected) = [
                ("H", Duration::from_secs(n * 3600)),
                ("M", Duration::from_secs(n * 60)),
                ("S", Duration::from_secs(n)),
                ("m", Duration::from_millis(n)),
                ("u", Duration::from_micros(n)),
                ("n", Duration::from_nanos(n)),
            ][unit];
            prop_assert_eq!(parse_grpc_timeout(&format!("{n}{suffix}")), Some(expected));
        }
    }
}
