//! A service's upstream hosts: weighted choice and passive outlier ejection.
//!
//! Choice is weighted random (a 90/10 strangler-fig split sends about 10 % of
//! requests to the new service, request by request, without a shared lock).
//! A host that fails [`EJECT_AFTER`] times in a row (connection refused or
//! reset, or a 5xx) is ejected for [`BASE_EJECTION`] times the number of times
//! it has been ejected (capped at [`MAX_EJECTION`]), as Envoy's outlier
//! detection does; the last host standing is never ejected, so a service with
//! one host still gets its circuit breaker's judgement rather than none.
//!
//! Active health checks ([`crate::health_check`]), when configured, take a
//! host out of rotation on their own; a host takes traffic only when neither
//! mechanism has taken it out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::Uri;
use rempart::clock::{Clock, Instant};
use rempart::rng::{Rng, SplitMix64};

use crate::config::UpstreamConfig;

/// Consecutive failures that eject a host.
pub const EJECT_AFTER: u32 = 5;
/// First ejection period; the n-th ejection lasts n times this.
pub const BASE_EJECTION: Duration = Duration::from_secs(30);
/// Longest ejection period.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    /// Where it is.
    pub url: Uri,
    /// Its share of traffic.
    pub weight: u32,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Clock nanos until which the host is ejected (0: not ejected).
    ejected_until: AtomicU64,
    /// Out of rotation by its active health checks.
    probed_unhealthy: AtomicBool,
}

impl Host {
    /// Whether the host is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        now.as_nanos() < self.ejected_until.load(Ordering::Acquire)
    }

    /// Whether its active health checks have taken it out of rotation.
    pub fn is_probed_unhealthy(&self) -> bool {
        self.probed_unhealthy.load(Ordering::Relaxed)
    }

    /// Whether it takes traffic at `now`: neither ejected nor failing its
    /// health checks.
    pub fn is_available(&self, now: Instant) -> bool {
        !self.is_ejected(now) && !self.is_probed_unhealthy()
    }
}

/// A service's hosts.
#[derive(Debug)]
pub struct Upstreams {
    hosts: Box<[Host]>,
    total_weight: u64,
    picks: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Upstreams {
    /// The hosts of `config`, on `clock`.
    pub fn new(config: &[UpstreamConfig], clock: Arc<dyn Clock>) -> Upstreams {
        let hosts: Box<[Host]> = config
            .iter()
            .map(|u| Host {
                url: u.url.clone(),
                weight: u.weight,
                consecutive_failures: AtomicU32::new(0),
                ejections: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                probed_unhealthy: AtomicBool::new(false),
            })
            .collect();
        let total_weight = hosts.iter().map(|h| u64::from(h.weight)).sum();
        Upstreams {
            hosts,
            total_weight,
            picks: AtomicU64::new(0),
            clock,
        }
    }

    /// Now, on the clock ejections are judged by.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Every host.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Hosts taking traffic now: neither ejected nor failing health checks.
    pub fn available(&self) -> usize {
        let now = self.clock.now();
        self.hosts.iter().filter(|h| h.is_available(now)).count()
    }

    /// Records what host `i`'s active health checks decided.
    pub fn set_probed_healthy(&self, i: usize, healthy: bool) {
        self.hosts[i]
            .probed_unhealthy
            .store(!healthy, Ordering::Relaxed);
    }

    /// Picks a host by weight among those available; `None` only if the
    /// service has no host with a positive weight.
    pub fn pick(&self) -> Option<usize> {
        let now = self.clock.now();
        let live: u64 = self
            .hosts
            .iter()
            .filter(|h| h.is_available(now))
            .map(|h| u64::from(h.weight))
            .sum();
        // Everything out or weightless: fall back to the configured weights.
        let (total, skip_unavailable) = if live > 0 {
            (live, true)
        } else {
            (self.total_weight, false)
        };
        if total == 0 {
            return None;
        }
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        let mut r = mix(n) % total;
        for (i, h) in self.hosts.iter().enumerate() {
            if skip_unavailable && !h.is_available(now) {
                continue;
            }
            let w = u64::from(h.weight);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// Records that host `i` answered well.
    pub fn success(&self, i: usize) {
        let h = &self.hosts[i];
        if h.consecutive_failures.load(Ordering::Relaxed) != 0 {
            h.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records that host `i` failed; returns true if this ejected it.
    pub fn failure(&self, i: usize) -> bool {
        let h = &self.hosts[i];
        let fails = h.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if fails < EJECT_AFTER {
            return false;
        }
        let now = self.clock.now();
        if h.is_ejected(now) || self.available() <= 1 {
            return false;
        }
        let n = h.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let period = BASE_EJECTION.saturating_mul(n).min(MAX_EJECTION);
        h.ejected_until
            .store(now.saturating_add(period).as_nanos(), Ordering::Release);
        h.consecutive_failures.store(0, Ordering::Relaxed);
        tracing::warn!(host = %h.url, period_s = period.as_secs(), "upstream host ejected");
        true
    }
}

/// Spreads a counter into well-mixed bits: the n-th pick's random number.
fn mix(n: u64) -> u64 {
    SplitMix64::seeded(n).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rempart::clock::ManualClock;

    fn upstreams(weights: &[u32]) -> (Upstreams, ManualClock) {
        let clock = ManualClock::new();
        let config: Vec<UpstreamConfig> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| UpstreamConfig {
                url: format!("http://127.0.0.1:{}", 7000 + i).parse().unwrap(),
                weight: *w,
            })
            .collect();
        (Upstreams::new(&config, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn traffic_follows_the_weights() {
        let (u, _) = upstreams(&[90, 10, 0]);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[u.pick().unwrap()] += 1;
        }
        assert_eq!(counts[2], 0, "a weight of 0 drains a host");
        // 10 % of 10,000, within a generous margin for the random choice.
        assert!((800..=1200).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn five_failures_in_a_row_eject_a_host_for_thirty_seconds_then_it_returns() {
        let (u, clock) = upstreams(&[1, 1]);
        for _ in 0..4 {
            assert!(!u.failure(0));
        }
        u.success(0); // a success breaks the run
        for _ in 0..4 {
            assert!(!u.failure(0));
        }
        assert!(u.failure(0));
        assert_eq!(u.available(), 1);
        for _ in 0..100 {
            assert_eq!(u.pick(), Some(1));
        }
        clock.advance(BASE_EJECTION - Duration::from_millis(1));
        assert_eq!(u.available(), 1);
        clock.advance(Duration::from_millis(1));
        assert_eq!(u.available(), 2);
        // The second ejection lasts twice as long.
        for _ in 0..EJECT_AFTER {
            u.failure(0);
        }
        clock.advance(BASE_EJECTION);
        assert_eq!(u.available(), 1);
        clock.advance(BASE_EJECTION);
        assert_eq!(u.available(), 2);
    }

    #[test]
    fn a_host_failing_its_health_checks_gets_no_traffic_and_is_not_available() {
        let (u, _) = upstreams(&[1, 1, 1]);
        u.set_probed_healthy(1, false);
        assert_eq!(u.available(), 2);
        for _ in 0..1000 {
            assert_ne!(u.pick(), Some(1));
        }
        u.set_probed_healthy(1, true);
        assert_eq!(u.available(), 3);
        assert!((0..1000).any(|_| u.pick() == Some(1)));
    }

    #[test]
    fn ejection_and_health_checks_each_take_a_host_out_on_their_own() {
        let (u, clock) = upstreams(&[1, 1, 1]);
        for _ in 0..EJECT_AFTER {
            u.failure(0);
        }
        u.set_probed_healthy(1, false);
        assert_eq!(u.available(), 1);
        for _ in 0..100 {
            assert_eq!(u.pick(), Some(2));
        }
        // The ejection ends; the failing checks still keep host 1 out.
        clock.advance(BASE_EJECTION);
        assert_eq!(u.available(), 2);
        for _ in 0..100 {
            assert_ne!(u.pick(), Some(1));
        }
    }

    #[test]
    fn the_last_host_passing_its_checks_is_never_ejected() {
        let (u, _) = upstreams(&[1, 1]);
        u.set_probed_healthy(1, false);
        for _ in 0..50 {
            assert!(!u.failure(0));
        }
        assert_eq!(u.available(), 1);
    }

    #[test]
    fn every_host_failing_its_checks_falls_back_to_the_configured_weights() {
        let (u, _) = upstreams(&[3, 1, 0]);
        for i in 0..3 {
            u.set_probed_healthy(i, false);
        }
        assert_eq!(u.available(), 0);
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[u.pick().expect("traffic still flows")] += 1;
        }
        assert_eq!(counts[2], 0, "a weight of 0 still drains a host");
        assert!((800..=1200).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn the_last_available_host_is_never_ejected() {
        let (u, _) = upstreams(&[1]);
        for _ in 0..50 {
            assert!(!u.failure(0));
        }
        assert_eq!(u.pick(), Some(0));
    }
}
