//! Random numbers for jitter, injectable and seedable so tests are deterministic.
//!
//! ```
//! use rempart::rng::{Rng, SplitMix64};
//!
//! let mut a = SplitMix64::seeded(42);
//! let mut b = SplitMix64::seeded(42);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let x = a.next_f64();
//! assert!((0.0..1.0).contains(&x));
//! ```

use std::fmt;

/// A source of random numbers. Not cryptographic: it only spreads retries and
/// open periods apart.
pub trait Rng: Send + fmt::Debug + 'static {
    /// A uniformly distributed `u64`.
    fn next_u64(&mut self) -> u64;

    /// A uniformly distributed `f64` in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// SplitMix64: tiny, fast, and good enough for jitter. Same seed, same sequence.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that always yields the same sequence for the same `seed`.
    pub const fn seeded(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the process's random hasher keys, different on each call.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        SplitMix64::seeded(h.finish())
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_f64_stays_in_unit_interval() {
        let mut r = SplitMix64::seeded(7);
        for _ in 0..10_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let mut a = SplitMix64::seeded(1);
        let mut b = SplitMix64::seeded(2);
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
