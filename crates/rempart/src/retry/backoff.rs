//! How long to wait before each retry, before jitter.

use std::time::Duration;

use crate::ConfigError;

/// The delay before each retry grows by one of these rules, never above its cap.
///
/// `delay(n)` is the delay before retry `n` (1 = the first retry, i.e. the
/// second attempt). It is pure: no clock, no randomness (see
/// [`Jitter`](super::Jitter) for that), and it saturates instead of overflowing
/// however large `n` gets.
///
/// ```
/// use rempart::retry::Backoff;
/// use std::time::Duration;
///
/// // Seed 003: 1 s doubling, capped at 30 s.
/// let b = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(30)).unwrap();
/// let delays: Vec<u64> = (1..=6).map(|n| b.delay(n).as_secs()).collect();
/// assert_eq!(delays, [1, 2, 4, 8, 16, 30]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay every time.
    Constant {
        /// The delay.
        delay: Duration,
    },
    /// `initial × n`, capped at `max`.
    Linear {
        /// The first delay, and the step.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// `initial × multiplier^(n-1)`, capped at `max`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The growth factor (at least 1).
        multiplier: f64,
        /// The cap.
        max: Duration,
    },
}

impl Backoff {
    /// The same `delay` before every retry.
    pub fn constant(delay: Duration) -> Backoff {
        Backoff::Constant { delay }
    }

    /// `initial`, `2 × initial`, `3 × initial`, ... capped at `max`.
    pub fn linear(initial: Duration, max: Duration) -> Result<Backoff, ConfigError> {
        check_cap(initial, max)?;
        Ok(Backoff::Linear { initial, max })
    }

    /// `initial`, `initial × multiplier`, ... capped at `max` (seed 002: 1 s
    /// doubling to 5 min; seed 003: 1 s doubling to 30 s).
    pub fn exponential(
        initial: Duration,
        multiplier: f64,
        max: Duration,
    ) -> Result<Backoff, ConfigError> {
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(ConfigError::new(
                super::POLICY,
                "multiplier",
                format!(
                    "{multiplier} would shrink or break the delays; use a finite number of at least 1.0 (2.0 doubles)"
                ),
            ));
        }
        check_cap(initial, max)?;
        Ok(Backoff::Exponential {
            initial,
            multiplier,
            max,
        })
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        match *self {
            Backoff::Constant { delay } => delay,
            Backoff::Linear { initial, .. } | Backoff::Exponential { initial, .. } => initial,
        }
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        match *self {
            Backoff::Constant { delay } => delay,
            Backoff::Linear { max, .. } | Backoff::Exponential { max, .. } => max,
        }
    }

    /// The delay before retry `n` (1-based; 0 is treated as 1).
    pub fn delay(&self, n: u32) -> Duration {
        let n = n.max(1);
        match *self {
            Backoff::Constant { delay } => delay,
            Backoff::Linear { initial, max } => initial.saturating_mul(n).min(max),
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                // powi on a capped exponent: 2^1023 is already infinite as a delay.
                let factor = multiplier.powi(i32::try_from(n - 1).unwrap_or(i32::MAX).min(1023));
                let nanos = initial.as_nanos() as f64 * factor;
                if !nanos.is_finite() || nanos >= max.as_nanos() as f64 {
                    max
                } else {
                    Duration::from_nanos(nanos as u64)
                }
            }
        }
    }
}

fn check_cap(initial: Duration, max: Duration) -> Result<(), ConfigError> {
    if max < initial {
        return Err(ConfigError::new(
            super::POLICY,
            "max",
            format!("the cap {max:?} is below the first delay {initial:?}; make it at least that"),
        ));
    }
    Ok(())
}
