//! Chaos (as Polly v8's chaos strategies): inject an error, latency, or a
//! chosen outcome into a share of calls, to test that the other policies
//! hold. Each policy can be switched on and off at run time; the random draw
//! comes from a seedable [`Rng`], so a test knows exactly which calls are hit.
//!
//! ```
//! use rempart::chaos::Chaos;
//! use rempart::rng::SplitMix64;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let chaos = Chaos::<u32, String>::error(0.5, || "injected".to_owned())
//!     .unwrap()
//!     .with_rng(SplitMix64::seeded(7));
//! let mut failures = 0;
//! for _ in 0..1000 {
//!     if chaos.call(|| async { Ok(1) }).await.is_err() { failures += 1; }
//! }
//! assert_eq!(failures, chaos.injected());
//! chaos.disable();
//! assert_eq!(chaos.call(|| async { Ok(1) }).await, Ok(1));
//! # });
//! ```

mod layer;

pub use layer::{ChaosLayer, ChaosService};

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ConfigError;
use crate::rng::{Rng, SplitMix64};

type Make<X> = Arc<dyn Fn() -> X + Send + Sync>;

/// What a hit call gets.
pub enum Fault<T, E> {
    /// The call is not made; it fails with this error.
    Error(Make<E>),
    /// The call is made after this extra delay (tokio time).
    Latency(Duration),
    /// The call is not made; it answers this value.
    Outcome(Make<T>),
}

impl<T, E> Clone for Fault<T, E> {
    fn clone(&self) -> Self {
        match self {
            Fault::Error(f) => Fault::Error(f.clone()),
            Fault::Latency(d) => Fault::Latency(*d),
            Fault::Outcome(f) => Fault::Outcome(f.clone()),
        }
    }
}

impl<T, E> fmt::Debug for Fault<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Error(_) => f.write_str("Error"),
            Fault::Latency(d) => write!(f, "Latency({d:?})"),
            Fault::Outcome(_) => f.write_str("Outcome"),
        }
    }
}

struct Shared<T, E> {
    fault: Fault<T, E>,
    rate: f64,
    enabled: AtomicBool,
    rng: Mutex<Box<dyn Rng>>,
    calls: AtomicU64,
    injected: AtomicU64,
}

/// A chaos policy: hits a share `rate` of calls with its [`Fault`] while enabled.
/// Cheap to clone; clones share the switch, the random source and the counts.
pub struct Chaos<T, E> {
    shared: Arc<Shared<T, E>>,
}

impl<T, E> Clone for Chaos<T, E> {
    fn clone(&self) -> Self {
        Chaos {
            shared: self.shared.clone(),
        }
    }
}

impl<T, E> fmt::Debug for Chaos<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("fault", &self.shared.fault)
            .field("rate", &self.shared.rate)
            .field("enabled", &self.is_enabled())
            .field("injected", &self.injected())
            .finish()
    }
}

impl<T, E> Chaos<T, E> {
    /// Hits a share `rate` (0.0 to 1.0) of calls with `fault`; enabled, with
    /// an entropy-seeded random source.
    pub fn new(rate: f64, fault: Fault<T, E>) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::new(
                "chaos",
                "rate",
                format!("must be between 0.0 and 1.0 (the share of calls hit), got {rate}"),
            ));
        }
        Ok(Chaos {
            shared: Arc::new(Shared {
                fault,
                rate,
                enabled: AtomicBool::new(true),
                rng: Mutex::new(Box::new(SplitMix64::from_entropy())),
                calls: AtomicU64::new(0),
                injected: AtomicU64::new(0),
            }),
        })
    }

    /// Fails a share `rate` of calls with `make()`.
    pub fn error(
        rate: f64,
        make: impl Fn() -> E + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        Self::new(rate, Fault::Error(Arc::new(make)))
    }

    /// Delays a share `rate` of calls by `delay`.
    pub fn latency(rate: f64, delay: Duration) -> Result<Self, ConfigError> {
        Self::new(rate, Fault::Latency(delay))
    }

    /// Answers a share `rate` of calls with `make()` without making them.
    pub fn outcome(
        rate: f64,
        make: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        Self::new(rate, Fault::Outcome(Arc::new(make)))
    }

    /// Draws from `rng` instead (a seeded one makes the hits reproducible).
    pub fn with_rng(self, rng: impl Rng) -> Self {
        if let Ok(mut r) = self.shared.rng.lock() {
            *r = Box::new(rng);
        }
        self
    }

    /// Starts injecting.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Release);
    }

    /// Stops injecting: calls pass through untouched (and draw nothing).
    pub fn disable(&self) {
        self.shared.enabled.store(false, Ordering::Release);
    }

    /// `true` while injecting.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Acquire)
    }

    /// Calls seen while enabled.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Calls hit so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    /// The fault for this call, if it is hit.
    pub fn draw(&self) -> Option<Fault<T, E>> {
        if !self.is_enabled() {
            return None;
        }
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let x = match self.shared.rng.lock() {
            Ok(mut r) => r.next_f64(),
            Err(p) => p.into_inner().next_f64(),
        };
        if x < self.shared.rate {
            self.shared.injected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(fault = ?self.shared.fault, "chaos injected");
            Some(self.shared.fault.clone())
        } else {
            None
        }
    }

    /// Runs `call`, unless this call is hit by the fault.
    pub async fn call<F, Fut>(&self, call: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.draw() {
            None => call().await,
            Some(Fault::Error(make)) => Err(make()),
            Some(Fault::Outcome(make)) => Ok(make()),
            Some(Fault::Latency(d)) => {
                tokio::time::sleep(d).await;
                call().await
            }
        }
    }
}
