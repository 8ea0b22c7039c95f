//! Shared by the integration tests.

use rempart::circuit_breaker::CircuitBreakerBuilder;
use rempart::clock::ManualClock;
use rempart::{CircuitBreaker, CircuitBreakerConfig};

/// A breaker with the seed's settings on a manual clock, and the clock.
pub(crate) fn breaker_on_manual_clock(
    config: CircuitBreakerConfig,
) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let cb = CircuitBreakerBuilder::from_config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    (cb, clock)
}
