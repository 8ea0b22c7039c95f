//! Randomising delays so that clients retrying after one outage do not all
//! come back in the same millisecond.

use std::time::Duration;

use crate::ConfigError;
use crate::rng::Rng;

/// How a computed delay `d` is randomised. `U(a, b)` is uniform on `[a, b]`.
///
/// | jitter | delay |
/// |---|---|
/// | `None` | `d` |
/// | `Full` | `U(0, d)` (AWS "full jitter": the best spread, sometimes no wait) |
/// | `Equal` | `d/2 + U(0, d/2)` (never less than half the backoff) |
/// | `Decorrelated` | `min(max, U(initial, 3 × previous))`, ignoring `d` (AWS "decorrelated jitter") |
/// | `Proportional(p)` | `d × (1 + U(-p, p))`, capped at `max` (seed 003: ±10 %) |
///
/// ```
/// use rempart::retry::Jitter;
/// use rempart::rng::SplitMix64;
/// use std::time::Duration;
///
/// let mut rng = SplitMix64::seeded(7);
/// let d = Duration::from_secs(1);
/// let j = Jitter::Equal.apply(d, d, d, Duration::from_secs(30), &mut rng);
/// assert!(j >= d / 2 && j <= d);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// No randomness.
    None,
    /// Uniform in `[0, d]`.
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
    /// Uniform in `[initial, 3 × previous delay]`, capped.
    Decorrelated,
    /// `d` plus or minus up to this fraction of it (0.1 = ±10 %).
    Proportional(f64),
}

impl Jitter {
    /// `±fraction` around the delay, validated (0 to 1).
    pub fn proportional(fraction: f64) -> Result<Jitter, ConfigError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ConfigError::new(
                super::POLICY,
                "jitter",
                format!(
                    "a proportional jitter of {fraction} is outside 0.0 to 1.0 (0.1 means ±10 %)"
                ),
            ));
        }
        Ok(Jitter::Proportional(fraction))
    }

    /// The randomised delay for a backoff delay `d`, given the previous actual
    /// delay, the backoff's first delay and its cap.
    pub fn apply(
        &self,
        d: Duration,
        previous: Duration,
        initial: Duration,
        max: Duration,
        rng: &mut dyn Rng,
    ) -> Duration {
        match *self {
            Jitter::None => d,
            Jitter::Full => uniform_up_to(d, rng),
            Jitter::Equal => d / 2 + uniform_up_to(d / 2, rng),
            Jitter::Decorrelated => {
                let hi = previous.saturating_mul(3).max(initial);
                (initial + uniform_up_to(hi - initial, rng)).min(max)
            }
            Jitter::Proportional(p) => {
                let factor = 1.0 + p * (2.0 * rng.next_f64() - 1.0);
                d.mul_f64(factor.max(0.0)).min(max)
            }
        }
    }
}

/// Uniform in `[0, d]`, in integer nanoseconds: `Duration::mul_f64` checks and
/// converts through floating point, several times slower for the same result.
#[inline]
fn uniform_up_to(d: Duration, rng: &mut dyn Rng) -> Duration {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    // (nanos × r) / 2^64 with r uniform in [0, 2^64): the high half of a 128-bit product.
    let scaled = (u128::from(nanos) * u128::from(rng.next_u64())) >> 64;
    Duration::from_nanos(scaled as u64)
}
