use std::fmt;
use std::time::Duration;

use crate::ConfigError;

/// One finished call, as a limit algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How long the call took.
    pub rtt: Duration,
    /// Calls in flight when this one started (itself included).
    pub in_flight: u32,
    /// `true` when the call signalled overload (it timed out, or was shed downstream).
    pub dropped: bool,
}

/// A rule that moves a concurrency limit with what calls observe.
///
/// [`Aimd`], [`Gradient2`] and [`Vegas`] ship with the crate; each keeps its
/// limit within its own `min..=max`.
pub trait LimitAlgorithm: Send + fmt::Debug {
    /// The limit before any sample.
    fn initial_limit(&self) -> u32;
    /// Takes one sample into account and returns the new limit.
    fn update(&mut self, sample: Sample) -> u32;
}

fn bounds(min: u32, max: u32, initial: u32) -> Result<(), ConfigError> {
    if min == 0 {
        return Err(ConfigError::new(
            super::POLICY,
            "min_limit",
            "a minimum of 0 could stop every call for good; use at least 1",
        ));
    }
    if min > max {
        return Err(ConfigError::new(
            super::POLICY,
            "max_limit",
            format!("the maximum {max} is below the minimum {min}; raise it to at least {min}"),
        ));
    }
    if !(min..=max).contains(&initial) {
        return Err(ConfigError::new(
            super::POLICY,
            "initial_limit",
            format!("{initial} is outside min..=max ({min}..={max})"),
        ));
    }
    Ok(())
}

fn fraction(field: &'static str, v: f64, lo: f64, hi: f64, hint: &str) -> Result<(), ConfigError> {
    if v.is_finite() && v > lo && v <= hi {
        Ok(())
    } else {
        Err(ConfigError::new(
            super::POLICY,
            field,
            format!("{v} is outside ({lo}, {hi}]; {hint}"),
        ))
    }
}

/// Additive increase, multiplicative decrease (Netflix concurrency-limits'
/// `AIMDLimit`): a call that succeeds while the limit is in use (at least
/// half of it in flight) raises the limit by 1; a dropped call, or one slower
/// than `timeout`, multiplies it by `backoff` (0.9).
///
/// ```
/// use rempart::adaptive::{Aimd, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
/// let ok = Sample { rtt: Duration::from_millis(5), in_flight: 10, dropped: false };
/// assert_eq!(aimd.update(ok), 11);
/// assert_eq!(aimd.update(Sample { dropped: true, ..ok }), 9); // floor(11 × 0.9)
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: u32,
    min: u32,
    max: u32,
    backoff: f64,
    timeout: Duration,
}

/// Builds an [`Aimd`]; see [`Aimd::builder`].
#[derive(Debug, Clone)]
pub struct AimdBuilder {
    initial: u32,
    min: u32,
    max: u32,
    backoff: f64,
    timeout: Duration,
}

impl AimdBuilder {
    /// The starting limit (default 20).
    pub fn initial_limit(mut self, n: u32) -> Self {
        self.initial = n;
        self
    }
    /// The lowest the limit goes (default 1).
    pub fn min_limit(mut self, n: u32) -> Self {
        self.min = n;
        self
    }
    /// The highest the limit goes (default 200).
    pub fn max_limit(mut self, n: u32) -> Self {
        self.max = n;
        self
    }
    /// The factor applied on overload, in (0, 1) (default 0.9).
    pub fn backoff_ratio(mut self, r: f64) -> Self {
        self.backoff = r;
        self
    }
    /// A call slower than this counts as dropped (default 5 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// The algorithm, or the setting that cannot work.
    pub fn build(self) -> Result<Aimd, ConfigError> {
        bounds(self.min, self.max, self.initial)?;
        if !(self.backoff.is_finite() && self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(ConfigError::new(
                super::POLICY,
                "backoff_ratio",
                format!(
                    "{} is outside (0, 1); use 0.9 to cut the limit by 10 % on overload",
                    self.backoff
                ),
            ));
        }
        Ok(Aimd {
            limit: self.initial,
            min: self.min,
            max: self.max,
            backoff: self.backoff,
            timeout: self.timeout,
        })
    }
}

impl Aimd {
    /// A builder with Netflix's defaults (initial 20, max 200, backoff 0.9, timeout 5 s; min 1).
    pub fn builder() -> AimdBuilder {
        AimdBuilder {
            initial: 20,
            min: 1,
            max: 200,
            backoff: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> u32 {
        self.limit
    }

    fn update(&mut self, s: Sample) -> u32 {
        let next = if s.dropped || s.rtt > self.timeout {
            (f64::from(self.limit) * self.backoff).floor() as u32
        } else if s.in_flight.saturating_mul(2) >= self.limit {
            self.limit.saturating_add(1)
        } else {
            self.limit // not using the limit: no evidence it could be higher
        };
        self.limit = next.clamp(self.min, self.max);
        self.limit
    }
}

/// An exponential moving average that starts as a plain mean over its first
/// `warmup` samples (Netflix's `ExpAvgMeasurement`).
#[derive(Debug, Clone)]
struct ExpAvg {
    value: f64,
    sum: f64,
    count: u32,
    warmup: u32,
    factor: f64,
}

impl ExpAvg {
    fn new(window: u32, warmup: u32) -> Self {
        ExpAvg {
            value: 0.0,
            sum: 0.0,
            count: 0,
            warmup,
            factor: 2.0 / (f64::from(window) + 1.0),
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }
}

/// Netflix concurrency-limits' `Gradient2Limit`: compares a short-term RTT
/// (the last sample) with a long-term one (an exponential average over
/// `long_window` samples). While they agree the limit grows by `queue_size`
/// (smoothed); when the short RTT rises above `tolerance ×` the long one,
/// the limit shrinks in proportion, by at most half per sample.
///
/// ```text
/// gradient = clamp(tolerance × long_rtt / short_rtt, 0.5, 1.0)
/// target   = limit × gradient + queue_size
/// limit    = limit × (1 − smoothing) + target × smoothing, within min..=max
/// ```
///
/// Samples taken while fewer than half the limit were in flight leave the
/// limit alone (the caller, not the dependency, is the bottleneck).
///
/// ```
/// use rempart::adaptive::{Gradient2, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut g = Gradient2::builder().initial_limit(20).build().unwrap();
/// let s = Sample { rtt: Duration::from_millis(10), in_flight: 20, dropped: false };
/// g.update(s); // steady RTT: 20 × 0.8 + (20 + 4) × 0.2 = 20.8
/// assert!((g.estimated_limit() - 20.8).abs() < 1e-9);
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    estimated: f64,
    min: u32,
    max: u32,
    smoothing: f64,
    tolerance: f64,
    queue_size: f64,
    long_rtt: ExpAvg,
}

/// Builds a [`Gradient2`]; see [`Gradient2::builder`].
#[derive(Debug, Clone)]
pub struct Gradient2Builder {
    initial: u32,
    min: u32,
    max: u32,
    smoothing: f64,
    tolerance: f64,
    queue_size: u32,
    long_window: u32,
}

impl Gradient2Builder {
    /// The starting limit (default 20).
    pub fn initial_limit(mut self, n: u32) -> Self {
        self.initial = n;
        self
    }
    /// The lowest the limit goes (default 20, Netflix's).
    pub fn min_limit(mut self, n: u32) -> Self {
        self.min = n;
        self
    }
    /// The highest the limit goes (default 200).
    pub fn max_limit(mut self, n: u32) -> Self {
        self.max = n;
        self
    }
    /// Weight of each new target, in (0, 1] (default 0.2).
    pub fn smoothing(mut self, s: f64) -> Self {
        self.smoothing = s;
        self
    }
    /// How much slower than the long-term RTT a call may be before the limit shrinks, ≥ 1 (default 1.5).
    pub fn rtt_tolerance(mut self, t: f64) -> Self {
        self.tolerance = t;
        self
    }
    /// The growth allowed per sample while latency is steady (default 4).
    pub fn queue_size(mut self, n: u32) -> Self {
        self.queue_size = n;
        self
    }
    /// Samples in the long-term RTT average (default 600; the first 10 are a plain mean).
    pub fn long_window(mut self, n: u32) -> Self {
        self.long_window = n;
        self
    }
    /// The algorithm, or the setting that cannot work.
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        bounds(self.min, self.max, self.initial)?;
        fraction("smoothing", self.smoothing, 0.0, 1.0, "use 0.2")?;
        if !(self.tolerance.is_finite() && self.tolerance >= 1.0) {
            return Err(ConfigError::new(
                super::POLICY,
                "rtt_tolerance",
                format!("{} is not a finite number ≥ 1; use 1.5", self.tolerance),
            ));
        }
        if self.long_window == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "long_window",
                "0 samples; use 600",
            ));
        }
        Ok(Gradient2 {
            estimated: f64::from(self.initial),
            min: self.min,
            max: self.max,
            smoothing: self.smoothing,
            tolerance: self.tolerance,
            queue_size: f64::from(self.queue_size),
            long_rtt: ExpAvg::new(self.long_window, 10.min(self.long_window)),
        })
    }
}

impl Gradient2 {
    /// A builder with Netflix's defaults.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder {
            initial: 20,
            min: 20,
            max: 200,
            smoothing: 0.2,
            tolerance: 1.5,
            queue_size: 4,
            long_window: 600,
        }
    }

    /// The limit before rounding down to whole calls.
    pub fn estimated_limit(&self) -> f64 {
        self.estimated
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial_limit(&self) -> u32 {
        self.estimated as u32
    }

    fn update(&mut self, s: Sample) -> u32 {
        let short = s.rtt.as_nanos() as f64;
        if short <= 0.0 {
            return self.estimated as u32; // no information in a zero RTT
        }
        let long = self.long_rtt.add(short);
        // After a long overload the average lags; pull it down faster.
        if long / short > 2.0 {
            self.long_rtt.value *= 0.95;
        }
        if f64::from(s.in_flight) < self.estimated / 2.0 {
            return self.estimated as u32;
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let target = self.estimated * gradient + self.queue_size;
        let next = self.estimated * (1.0 - self.smoothing) + target * self.smoothing;
        self.estimated = next.clamp(f64::from(self.min), f64::from(self.max));
        self.estimated as u32
    }
}

/// Netflix concurrency-limits' `VegasLimit` (after TCP Vegas): estimates the
/// queue at the dependency as `limit × (1 − rtt_noload / rtt)` and grows the
/// limit while that queue is short, shrinks it when it is long.
///
/// With `l = log10(limit)`: queue ≤ `l` → `+ 6l`; queue < `3l` → `+ l`;
/// queue > `6l` → `− l`; a dropped call → `− l`. `rtt_noload` is the lowest
/// RTT seen, measured afresh every `probe_every × limit` samples (Netflix
/// adds random jitter to that period; here it is fixed, so runs repeat).
///
/// ```
/// use rempart::adaptive::{LimitAlgorithm, Sample, Vegas};
/// use std::time::Duration;
///
/// let mut v = Vegas::builder().initial_limit(10).build().unwrap();
/// let s = |ms| Sample { rtt: Duration::from_millis(ms), in_flight: 10, dropped: false };
/// assert_eq!(v.update(s(10)), 10); // first sample: sets rtt_noload
/// assert_eq!(v.update(s(10)), 16); // no queue: 10 + 6 × log10(10)
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    estimated: f64,
    min: u32,
    max: u32,
    smoothing: f64,
    probe_every: u32,
    probe_count: u64,
    rtt_noload: u64,
}

/// Builds a [`Vegas`]; see [`Vegas::builder`].
#[derive(Debug, Clone)]
pub struct VegasBuilder {
    initial: u32,
    min: u32,
    max: u32,
    smoothing: f64,
    probe_every: u32,
}

impl VegasBuilder {
    /// The starting limit (default 20).
    pub fn initial_limit(mut self, n: u32) -> Self {
        self.initial = n;
        self
    }
    /// The lowest the limit goes (default 1).
    pub fn min_limit(mut self, n: u32) -> Self {
        self.min = n;
        self
    }
    /// The highest the limit goes (default 1000, Netflix's).
    pub fn max_limit(mut self, n: u32) -> Self {
        self.max = n;
        self
    }
    /// Weight of each new target, in (0, 1] (default 1: no smoothing).
    pub fn smoothing(mut self, s: f64) -> Self {
        self.smoothing = s;
        self
    }
    /// Re-measure `rtt_noload` every `n × limit` samples (default 30).
    pub fn probe_every(mut self, n: u32) -> Self {
        self.probe_every = n;
        self
    }
    /// The algorithm, or the setting that cannot work.
    pub fn build(self) -> Result<Vegas, ConfigError> {
        bounds(self.min, self.max, self.initial)?;
        fraction("smoothing", self.smoothing, 0.0, 1.0, "use 1.0")?;
        if self.probe_every == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "probe_every",
                "0 would probe on every sample; use 30",
            ));
        }
        Ok(Vegas {
            estimated: f64::from(self.initial),
            min: self.min,
            max: self.max,
            smoothing: self.smoothing,
            probe_every: self.probe_every,
            probe_count: 0,
            rtt_noload: 0,
        })
    }
}

impl Vegas {
    /// A builder with Netflix's defaults.
    pub fn builder() -> VegasBuilder {
        VegasBuilder {
            initial: 20,
            min: 1,
            max: 1000,
            smoothing: 1.0,
            probe_every: 30,
        }
    }

    /// The lowest RTT seen since the last probe.
    pub fn rtt_noload(&self) -> Duration {
        Duration::from_nanos(self.rtt_noload)
    }
}

impl LimitAlgorithm for Vegas {
    fn initial_limit(&self) -> u32 {
        self.estimated as u32
    }

    fn update(&mut self, s: Sample) -> u32 {
        let rtt = u64::try_from(s.rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.probe_count += 1;
        let limit = self.estimated;
        if self.probe_count as f64 > f64::from(self.probe_every) * limit {
            // Probe: forget the old no-load RTT, it may no longer hold.
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return limit as u32;
        }
        if self.rtt_noload == 0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return limit as u32;
        }
        let l = limit.log10().max(1.0);
        let target = if s.dropped {
            limit - l
        } else if f64::from(s.in_flight) * 2.0 < limit {
            return limit as u32; // app-limited
        } else {
            let queue = (limit * (1.0 - self.rtt_noload as f64 / rtt as f64)).ceil();
            if queue <= l {
                limit + 6.0 * l
            } else if queue < 3.0 * l {
                limit + l
            } else if queue > 6.0 * l {
                limit - l
            } else {
                return limit as u32;
            }
        };
        let target = target.clamp(f64::from(self.min), f64::from(self.max));
        self.estimated = (1.0 - self.smoothing) * limit + self.smoothing * target;
        self.estimated as u32
    }
}
