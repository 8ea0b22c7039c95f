use std::sync::Arc;
use std::time::Duration;

use super::listener::CircuitListener;
use super::{CircuitBreaker, CircuitState};
use crate::ConfigError;
use crate::clock::{Clock, MonotonicClock};
use crate::rng::{Rng, SplitMix64};

/// The seed's four settings. Richer options go through [`CircuitBreaker::builder`].
///
/// ```
/// use rempart::{CircuitBreaker, CircuitBreakerConfig};
/// use std::time::Duration;
///
/// let cb = CircuitBreaker::new(CircuitBreakerConfig {
///     failure_threshold: 1,
///     success_threshold: 2,
///     open_timeout: Duration::from_millis(50),
///     half_open_max_calls: 3,
/// });
/// # let _ = cb;
/// ```
///
/// [`CircuitBreaker::new`] treats a zero threshold or a zero `half_open_max_calls`
/// as 1, the smallest value that means anything, and a `failure_threshold`
/// above [`MAX_FAILURE_THRESHOLD`](crate::circuit_breaker::MAX_FAILURE_THRESHOLD)
/// (65,535) as that maximum; [`CircuitBreaker::builder`] rejects them instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures in Closed that open the circuit (default 5; at
    /// most 65,535, see above).
    pub failure_threshold: u32,
    /// Successful trial calls in HalfOpen that close it again (default 3).
    pub success_threshold: u32,
    /// How long the circuit stays Open before it lets trial calls through (default 30 s).
    pub open_timeout: Duration,
    /// Trial calls allowed in flight at once while HalfOpen (default 3).
    pub half_open_max_calls: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            success_threshold: 3,
            open_timeout: Duration::from_secs(30),
            half_open_max_calls: 3,
        }
    }
}

/// The window over which failure and slow-call rates are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `calls` recorded calls (resilience4j's `COUNT_BASED`).
    Count {
        /// How many of the most recent calls count.
        calls: u32,
    },
    /// The calls of the last `period`, kept in `buckets` slices so that old calls
    /// leave the window a slice at a time (opossum's `rollingCountTimeout` and
    /// `rollingCountBuckets`; seed 001 case 4 uses 10 s in 10 buckets).
    Time {
        /// The window's length.
        period: Duration,
        /// How many slices the window is cut into.
        buckets: u32,
    },
}

/// Growth of the open period when the circuit opens again and again without closing
/// in between: `open_timeout × multiplier^(trips − 1)`, capped at `max`, then spread
/// by `± jitter × period` so that a fleet of breakers does not probe in lockstep.
///
/// ```
/// use rempart::circuit_breaker::OpenBackoff;
/// use std::time::Duration;
///
/// let b = OpenBackoff::new(2.0, Duration::from_secs(300)).unwrap().with_jitter(0.1).unwrap();
/// assert_eq!(b.max(), Duration::from_secs(300));
/// assert!(OpenBackoff::new(0.5, Duration::from_secs(1)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenBackoff {
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl OpenBackoff {
    /// Multiply the open period by `multiplier` (≥ 1) on each repeated trip, up to `max`.
    pub fn new(multiplier: f64, max: Duration) -> Result<Self, ConfigError> {
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(ConfigError::new(
                super::POLICY,
                "open_backoff.multiplier",
                format!(
                    "{multiplier} is not a finite number ≥ 1; use 2.0 to double the open period on each trip"
                ),
            ));
        }
        Ok(OpenBackoff {
            multiplier,
            max,
            jitter: 0.0,
        })
    }

    /// Spread each open period uniformly over `period × (1 ± fraction)`, `fraction` in `[0, 1]`.
    pub fn with_jitter(mut self, fraction: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ConfigError::new(
                super::POLICY,
                "open_backoff.jitter",
                format!("{fraction} is outside [0, 1]; use 0.1 for ±10 %"),
            ));
        }
        self.jitter = fraction;
        Ok(self)
    }

    /// The cap on the open period.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The open period after `trips` consecutive trips (1 for the first), before jitter.
    pub fn period(&self, base: Duration, trips: u32) -> Duration {
        let exp = trips.saturating_sub(1).min(1024) as i32;
        let secs = base.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max.max(base)
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    pub(crate) fn jittered(&self, period: Duration, rng: &mut dyn Rng) -> Duration {
        if self.jitter == 0.0 {
            return period;
        }
        let spread = (rng.next_f64() * 2.0 - 1.0) * self.jitter;
        Duration::from_secs_f64((period.as_secs_f64() * (1.0 + spread)).max(0.0))
    }
}

/// Everything a breaker runs on, validated.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) failure_threshold: Option<u32>,
    pub(crate) success_threshold: u32,
    pub(crate) open_timeout: Duration,
    pub(crate) half_open_max_calls: u32,
    pub(crate) window: Option<SlidingWindow>,
    pub(crate) failure_rate_threshold: Option<f64>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate_threshold: Option<f64>,
    pub(crate) minimum_calls: u32,
    pub(crate) open_backoff: Option<OpenBackoff>,
}

/// Builds a [`CircuitBreaker`] with options beyond the seed's four.
///
/// Every rule below is optional; the breaker opens when *any* configured rule says so.
///
/// ```
/// use rempart::CircuitBreaker;
/// use rempart::circuit_breaker::SlidingWindow;
/// use std::time::Duration;
///
/// // The gateway's reporting service in seed 001 case 4 (opossum settings):
/// let cb = CircuitBreaker::builder()
///     .name("reporting")
///     .failure_threshold(0) // no consecutive-failure rule: judge by rate only
///     .failure_rate(50.0)
///     .sliding_window(SlidingWindow::Time { period: Duration::from_secs(10), buckets: 10 })
///     .minimum_calls(10)
///     .open_timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(cb.name(), "reporting");
/// ```
#[derive(Debug)]
pub struct CircuitBreakerBuilder {
    name: Arc<str>,
    failure_threshold: u32,
    success_threshold: u32,
    open_timeout: Duration,
    half_open_max_calls: u32,
    window: Option<SlidingWindow>,
    failure_rate_threshold: Option<f64>,
    slow_call_duration: Option<Duration>,
    slow_call_rate_threshold: Option<f64>,
    minimum_calls: u32,
    open_backoff: Option<OpenBackoff>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Box<dyn Rng>>,
    listeners: Vec<Arc<dyn CircuitListener>>,
    initial_state: CircuitState,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self::from_config(CircuitBreakerConfig::default())
    }
}

impl CircuitBreakerBuilder {
    /// A builder starting from the seed's four settings.
    pub fn from_config(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerBuilder {
            name: Arc::from("default"),
            failure_threshold: config.failure_threshold,
            success_threshold: config.success_threshold,
            open_timeout: config.open_timeout,
            half_open_max_calls: config.half_open_max_calls,
            window: None,
            failure_rate_threshold: None,
            slow_call_duration: None,
            slow_call_rate_threshold: None,
            minimum_calls: 10,
            open_backoff: None,
            clock: None,
            rng: None,
            listeners: Vec::new(),
            initial_state: CircuitState::Closed,
        }
    }

    /// A name for logs, metrics labels and events (default `"default"`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Open after this many consecutive failures in Closed; `0` turns the rule off
    /// (then a failure-rate or slow-call rule must be set). At most
    /// [`MAX_FAILURE_THRESHOLD`](super::MAX_FAILURE_THRESHOLD) (65,535): `build`
    /// refuses more.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Close after this many successful trial calls in HalfOpen (≥ 1).
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// Stay Open this long before letting trial calls through.
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.open_timeout = d;
        self
    }

    /// Trial calls allowed in flight at once while HalfOpen (≥ 1).
    pub fn half_open_max_calls(mut self, n: u32) -> Self {
        self.half_open_max_calls = n;
        self
    }

    /// The window that failure and slow-call rates are measured over
    /// (default: the last 100 calls, when a rate rule is set).
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.window = Some(window);
        self
    }

    /// Open when at least this percentage (0–100] of the calls in the window failed.
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.failure_rate_threshold = Some(percent);
        self
    }

    /// Count a call taking `duration` or longer as slow, and open when at least
    /// `percent` (0–100] of the window's calls were slow. Timing calls costs two
    /// clock readings per call, paid only when this rule is set.
    pub fn slow_calls(mut self, duration: Duration, percent: f64) -> Self {
        self.slow_call_duration = Some(duration);
        self.slow_call_rate_threshold = Some(percent);
        self
    }

    /// Rates are not judged until the window holds this many calls (opossum's
    /// `volumeThreshold`; default 10).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// Grow the open period on repeated trips (see [`OpenBackoff`]).
    pub fn open_backoff(mut self, backoff: OpenBackoff) -> Self {
        self.open_backoff = Some(backoff);
        self
    }

    /// The clock the breaker reads (default [`MonotonicClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The random source for open-period jitter (default seeded from entropy).
    pub fn rng(mut self, rng: impl Rng) -> Self {
        self.rng = Some(Box::new(rng));
        self
    }

    /// Tell `listener` about every state change and call outcome.
    pub fn listener(mut self, listener: impl CircuitListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Start in this state instead of Closed (Open starts its timer at build time).
    pub fn initial_state(mut self, state: CircuitState) -> Self {
        self.initial_state = state;
        self
    }

    /// Checks the settings and builds the breaker.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let percent = |field, v: Option<f64>| match v {
            Some(p) if !(p > 0.0 && p <= 100.0) => Err(ConfigError::new(
                super::POLICY,
                field,
                format!("{p} is not a percentage in (0, 100]; use 50.0 for half of the calls"),
            )),
            _ => Ok(()),
        };
        percent("failure_rate", self.failure_rate_threshold)?;
        percent("slow_calls.percent", self.slow_call_rate_threshold)?;
        if self.success_threshold == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "success_threshold",
                "0 would close the circuit without any trial call; use 1 or more",
            ));
        }
        if self.half_open_max_calls == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "half_open_max_calls",
                "0 would keep the circuit half-open forever; use 1 or more",
            ));
        }
        if self.failure_threshold > super::MAX_FAILURE_THRESHOLD {
            return Err(ConfigError::new(
                super::POLICY,
                "failure_threshold",
                format!(
                    "{} is above the longest failure run the breaker counts ({}); use at most {}, or a failure_rate rule over a sliding window to judge that many calls",
                    self.failure_threshold,
                    super::MAX_FAILURE_THRESHOLD,
                    super::MAX_FAILURE_THRESHOLD
                ),
            ));
        }
        let has_rate =
            self.failure_rate_threshold.is_some() || self.slow_call_rate_threshold.is_some();
        if self.failure_threshold == 0 && !has_rate {
            return Err(ConfigError::new(
                super::POLICY,
                "failure_threshold",
                "0 turns off the consecutive-failure rule, and no failure-rate or slow-call rule is set, so the circuit could never open; set failure_threshold ≥ 1 or a rate rule",
            ));
        }
        match self.window {
            Some(SlidingWindow::Count { calls: 0 }) => {
                return Err(ConfigError::new(
                    super::POLICY,
                    "sliding_window",
                    "a count window of 0 calls holds nothing; use 1 or more (100 is common)",
                ));
            }
            Some(SlidingWindow::Time { period, buckets })
                if buckets == 0
                    || period.is_zero()
                    || period < Duration::from_nanos(u64::from(buckets)) =>
            {
                return Err(ConfigError::new(
                    super::POLICY,
                    "sliding_window",
                    format!(
                        "a time window needs a non-zero period and 1 or more buckets of at least 1 ns (got {period:?} in {buckets} buckets); use 10 s in 10 buckets"
                    ),
                ));
            }
            Some(_) if !has_rate => {
                return Err(ConfigError::new(
                    super::POLICY,
                    "sliding_window",
                    "a window is set but no rate rule uses it; add .failure_rate(..) or .slow_calls(..)",
                ));
            }
            _ => {}
        }
        if let Some(d) = self.slow_call_duration
            && d.is_zero()
        {
            return Err(ConfigError::new(
                super::POLICY,
                "slow_calls.duration",
                "0 would make every call slow; use the latency your callers can bear",
            ));
        }
        let window = if has_rate {
            Some(self.window.unwrap_or(SlidingWindow::Count { calls: 100 }))
        } else {
            None
        };
        let settings = Settings {
            name: self.name,
            failure_threshold: (self.failure_threshold > 0).then_some(self.failure_threshold),
            success_threshold: self.success_threshold,
            open_timeout: self.open_timeout,
            half_open_max_calls: self.half_open_max_calls,
            window,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_duration: self.slow_call_duration,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            minimum_calls: self.minimum_calls.max(1),
            open_backoff: self.open_backoff,
        };
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        let rng = self
            .rng
            .unwrap_or_else(|| Box::new(SplitMix64::from_entropy()));
        Ok(CircuitBreaker::from_parts(
            settings,
            clock,
            rng,
            self.listeners,
            self.initial_state,
        ))
    }
}
