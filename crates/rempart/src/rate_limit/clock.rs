//! governor reads time through its own `Clock` trait; [`GovernorClock`] puts
//! it on a [`rempart::clock::Clock`](crate::clock::Clock), so a `ManualClock`
//! or tokio's paused time drives governor's decisions in tests.

use std::ops::Add;
use std::sync::Arc;

use governor::nanos::Nanos;

use crate::clock::{Clock, Instant, MonotonicClock};

/// A [`Clock`] seen through governor's `Clock` trait.
///
/// ```
/// use governor::clock::Clock as _;
/// use rempart::clock::ManualClock;
/// use rempart::rate_limit::GovernorClock;
/// use std::time::Duration;
///
/// let manual = ManualClock::new();
/// let clock = GovernorClock::new(manual.clone());
/// manual.advance(Duration::from_secs(3));
/// assert_eq!(clock.now().as_nanos(), 3_000_000_000);
/// ```
#[derive(Debug, Clone)]
pub struct GovernorClock(Arc<dyn Clock>);

impl GovernorClock {
    /// governor's view of `clock`.
    pub fn new(clock: impl Clock) -> Self {
        GovernorClock(Arc::new(clock))
    }

    pub(crate) fn from_arc(clock: Arc<dyn Clock>) -> Self {
        GovernorClock(clock)
    }

    /// The time now, on the clock underneath.
    #[inline]
    pub fn now(&self) -> Instant {
        self.0.now()
    }

    /// The clock underneath.
    pub fn inner(&self) -> &Arc<dyn Clock> {
        &self.0
    }
}

impl Default for GovernorClock {
    fn default() -> Self {
        GovernorClock::new(MonotonicClock::new())
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = Instant;

    #[inline]
    fn now(&self) -> Instant {
        self.0.now()
    }
}

impl Add<Nanos> for Instant {
    type Output = Instant;

    #[inline]
    fn add(self, other: Nanos) -> Instant {
        Instant::from_nanos(self.as_nanos().saturating_add(other.as_u64()))
    }
}

impl governor::clock::Reference for Instant {
    #[inline]
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.as_nanos().saturating_sub(earlier.as_nanos()))
    }

    #[inline]
    fn saturating_sub(&self, duration: Nanos) -> Self {
        Instant::from_nanos(self.as_nanos().saturating_sub(duration.as_u64()))
    }
}
