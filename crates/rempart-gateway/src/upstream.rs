//! A service's upstream hosts: weighted choice and passive outlier ejection.
//!
//! Choice is weighted random (a 90/10 strangler-fig split sends about 10 % of
//! requests to the new service, request by request, without a shared lock).
//! A host that fails [`EJECT_AFTER`] times in a row (connection refused or
//! reset, or a 5xx) is ejected for [`BASE_EJECTION`] times the number of times
//! it has been ejected (capped at [`MAX_EJECTION`]), as Envoy's outlier
//! detection does; the last host standing is never ejected, so a service with
//! one host still gets its circuit breaker's judgement rather than none.
//! Ejections are decided one at a time under a lock taken only on that rare
//! path, so hosts failing at the same moment cannot all eject each other;
//! picking and recording successes stay lock-free.
//!
//! Active health checks ([`crate::health_check`]), when configured, take a
//! host out of rotation on their own; a host takes traffic only when neither
//! mechanism has taken it out.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    picks: AtomicU64,
    /// Held while an ejection is decided and made: "is another host still
    /// available?" and "eject this one" must be one step.
    ejecting: Mutex<()>,
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
        Upstreams {
            hosts,
            picks: AtomicU64::new(0),
            ejecting: Mutex::new(()),
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
        self.available_at(self.clock.now())
    }

    fn available_at(&self, now: Instant) -> usize {
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
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        choose(&self.hosts, |h| h.is_available(now), mix(n))
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
        if h.is_ejected(self.clock.now()) || self.available() <= 1 {
            return false;
        }
        // Checked again and acted on as one step: two hosts failing together
        // must not each see the other still available and both leave.
        let deciding = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        if h.is_ejected(now) || self.available_at(now) <= 1 {
            return false;
        }
        let n = h.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let period = BASE_EJECTION.saturating_mul(n).min(MAX_EJECTION);
        h.ejected_until
            .store(now.saturating_add(period).as_nanos(), Ordering::Release);
        h.consecutive_failures.store(0, Ordering::Relaxed);
        drop(deciding);
        tracing::warn!(host = %h.url, period_s = period.as_secs(), "upstream host ejected");
        true
    }
}

/// The host that random number `r` lands on, by weight among the hosts
/// `is_available` accepts, or by configured weight when none is. Availability
/// is read more than once and can change in between (a probe, an ejection on
/// another thread): a walk that overshoots takes the last candidate it saw,
/// so a service with a weighted host always gets one.
fn choose(hosts: &[Host], mut is_available: impl FnMut(&Host) -> bool, r: u64) -> Option<usize> {
    let live: u64 = hosts
        .iter()
        .filter(|h| is_available(h))
        .map(|h| u64::from(h.weight))
        .sum();
    // Everything out or weightless: fall back to the configured weights.
    let (total, skip_unavailable) = if live > 0 {
        (live, true)
    } else {
        (hosts.iter().map(|h| u64::from(h.weight)).sum(), false)
    };
    if total == 0 {
        return None;
    }
    let mut r = r % total;
    let mut candidate = None;
    for (i, h) in hosts.iter().enumerate() {
        if h.weight == 0 || (skip_unavailable && !is_available(h)) {
            continue;
        }
        let w = u64::from(h.weight);
        if r < w {
            return Some(i);
        }
        r -= w;
        candidate = Some(i);
    }
    candidate.or_else(|| hosts.iter().position(|h| h.weight > 0))
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

    #[test]
    fn hosts_failing_at_the_same_moment_never_all_get_ejected() {
        // Every thread fails every host at once, round after round: without
        // the check and the ejection as one step, each host saw the others
        // still available and all of them left.
        for _ in 0..200 {
            let (u, _) = upstreams(&[1, 1, 1, 1]);
            let u = Arc::new(u);
            let start = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (u, start) = (Arc::clone(&u), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        for k in 0..EJECT_AFTER as usize * 4 {
                            u.failure((t + k) % 4);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert!(u.available() >= 1, "every host was ejected");
            assert!(u.pick().is_some_and(|i| u.hosts()[i].is_available(u.now())));
        }
    }

    #[test]
    fn picking_while_health_checks_flip_always_finds_a_host() {
        // A checker flips hosts in and out while requests pick: a host that
        // left between the weight sum and the walk once made `pick` answer
        // None though another host was up all along.
        let (u, _) = upstreams(&[1, 1, 1]);
        let u = Arc::new(u);
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (u, stop) = (Arc::clone(&u), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut up = false;
                while !stop.load(Ordering::Relaxed) {
                    u.set_probed_healthy(0, up);
                    u.set_probed_healthy(1, !up);
                    up = !up;
                }
            })
        };
        let misses = (0..200_000).filter(|_| u.pick().is_none()).count();
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
        assert_eq!(misses, 0, "host 2 was up all along");
    }

    proptest::proptest! {
        /// Whatever availability says each time it is asked (another thread
        /// can change it between two looks), a service with a weighted host
        /// gets a host, and a host it offered when asked for the walk.
        #[test]
        fn choose_finds_a_host_whenever_one_has_weight(
            weights in proptest::collection::vec(0u32..5, 1..8),
            looks in proptest::collection::vec(proptest::bool::ANY, 64),
            r in proptest::num::u64::ANY,
        ) {
            let (u, _) = upstreams(&weights);
            let mut k = 0;
            let picked = choose(u.hosts(), |_| { k += 1; looks[k % looks.len()] }, r);
            let weighted = weights.iter().any(|&w| w > 0);
            proptest::prop_assert_eq!(picked.is_some(), weighted);
            if let Some(i) = picked {
                proptest::prop_assert!(weights[i] > 0, "picked a drained host");
            }
        }

        /// With availability steady, `pick` answers whenever a host is available.
        #[test]
        fn pick_answers_whenever_a_host_is_available(
            weights in proptest::collection::vec(1u32..5, 1..8),
            out in proptest::collection::vec(proptest::bool::ANY, 8),
        ) {
            let (u, _) = upstreams(&weights);
            for (i, o) in out.iter().take(weights.len()).enumerate() {
                u.set_probed_healthy(i, !o);
            }
            let picked = u.pick();
            proptest::prop_assert!(picked.is_some());
            if u.available() > 0 {
                proptest::prop_assert!(u.hosts()[picked.unwrap()].is_available(u.now()));
            }
        }
    }
}
