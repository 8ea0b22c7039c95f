//! Time, as the policies see it.
//!
//! Every policy reads the time through a [`Clock`], never from the system
//! directly, so that tests can drive time by hand with a [`ManualClock`] and
//! assert exact behaviour without sleeping. Time is an [`Instant`]: nanoseconds
//! on a monotonic line that starts at the clock's own origin. Only differences
//! between two readings of the same clock mean anything.
//!
//! ```
//! use rempart::clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! clock.advance(Duration::from_millis(250));
//! assert_eq!(clock.now().saturating_duration_since(start), Duration::from_millis(250));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A reading of a [`Clock`]: nanoseconds since the clock's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the end of time instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_to_nanos(d)))
    }
}

/// A `Duration` as whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of monotonic time.
///
/// Implement it to put a policy on your own notion of time; the crate ships
/// [`MonotonicClock`] (the default) and [`ManualClock`] (for tests).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time. Must never go backwards.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// The machine's monotonic clock, with its origin at the moment this value
/// was created: the CPU's invariant time-stamp counter read through `quanta`
/// (calibrated against the OS clock; where the TSC is not trustworthy,
/// `quanta` reads the OS monotonic clock instead).
///
/// The TSC because a policy may read the clock on every call (rate limits,
/// open-circuit rejections), and `clock_gettime` costs about 23 ns on a
/// virtual machine against about 8 ns for a TSC read (BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    origin: u64,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        MonotonicClock { clock, origin }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant(self.clock.delta_as_nanos(self.origin, self.clock.raw()))
    }
}

/// A clock that only moves when told to. Clones share the same time, so a test
/// keeps one clone and hands another to the policy.
///
/// ```
/// use rempart::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let policy_clock = clock.clone();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(policy_clock.now().as_nanos(), 30_000_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let d = duration_to_nanos(d);
        // fetch_update so that concurrent advances add up and saturate instead of wrapping.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(d))
            });
    }

    /// Sets the time to `t` if `t` is later than the current time; a clock
    /// never goes backwards, so an earlier `t` is ignored.
    pub fn set(&self, t: Instant) {
        self.nanos.fetch_max(t.0, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant(self.nanos.load(Ordering::Acquire))
    }
}

/// tokio's clock (`tokio::time::Instant`), with its origin at the moment this
/// value was created.
///
/// Use it when a policy's timers sleep on tokio: under
/// `#[tokio::test(start_paused = true)]` (or `tokio::time::pause`) the policy's
/// time then moves with tokio's paused time, so timeouts, backoffs and open
/// periods can be tested exactly and instantly.
///
/// ```
/// use rempart::clock::{Clock, TokioClock};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let clock = TokioClock::new();
/// tokio::time::sleep(Duration::from_secs(30)).await; // instant: time is paused
/// assert_eq!(clock.now().as_nanos(), 30_000_000_000);
/// # });
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is tokio's now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The tokio instant that `t` (a reading of this clock) stands for, to
    /// sleep until it.
    pub fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(t.as_nanos())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant(duration_to_nanos(
            tokio::time::Instant::now().saturating_duration_since(self.origin),
        ))
    }
}

/// Wall-clock time: nanoseconds since the Unix epoch, never going backwards
/// within one value (a step back of the system clock holds it still).
///
/// For state shared between processes, where every instance must cut time
/// into the same windows (a rate-limit window kept in Redis by several
/// gateways): their monotonic clocks have different origins, the epoch is
/// the same everywhere.
///
/// ```
/// use rempart::clock::{Clock, UnixClock};
///
/// let t = UnixClock::new().now();
/// assert!(t.as_nanos() > 1_700_000_000 * 1_000_000_000); // after November 2023
/// ```
#[derive(Debug, Clone, Default)]
pub struct UnixClock {
    latest: Arc<AtomicU64>,
}

impl UnixClock {
    /// A wall clock.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for UnixClock {
    #[allow(clippy::disallowed_methods)] // the wall clock is this clock's whole point
    fn now(&self) -> Instant {
        let read = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, duration_to_nanos);
        let before = self.latest.fetch_max(read, Ordering::AcqRel);
        Instant(before.max(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_never_goes_backwards() {
        let c = ManualClock::new();
        c.advance(Duration::from_secs(5));
        c.set(Instant::from_nanos(1));
        assert_eq!(c.now(), Instant::from_nanos(5_000_000_000));
    }

    #[test]
    fn manual_clock_saturates_instead_of_wrapping() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now().as_nanos(), u64::MAX);
    }

    #[test]
    fn monotonic_clock_does_not_go_backwards() {
        let c = MonotonicClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
