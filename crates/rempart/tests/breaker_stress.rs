//! Many threads on one breaker: every call is counted exactly once, and the
//! circuit trips exactly once per trip, however many threads fail together.

use rempart::circuit_breaker::{CircuitListener, StateChange};
use rempart::clock::ManualClock;
use rempart::{CircuitBreaker, CircuitState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[derive(Debug, Default, Clone)]
struct Opens(Arc<AtomicU64>);
impl CircuitListener for Opens {
    fn on_state_change(&self, c: &StateChange) {
        if c.to == CircuitState::Open {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn every_call_is_counted_exactly_once_across_threads() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 50_000;
    let clock = ManualClock::new();
    let opens = Opens::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(3)
        .success_threshold(1)
        .half_open_max_calls(2)
        .open_timeout(Duration::from_millis(1))
        .clock(clock.clone())
        .listener(opens.clone())
        .build()
        .unwrap();
    let (ok, failed, rejected) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (cb, clock, barrier) = (&cb, &clock, &barrier);
            let (ok, failed, rejected) = (&ok, &failed, &rejected);
            s.spawn(move || {
                barrier.wait();
                for i in 0..CALLS {
                    // bursts of failures, so the circuit opens and closes many times
                    let fail = (i / 64 + t) % 4 == 0;
                    match cb.try_acquire() {
                        Ok(p) if fail => {
                            p.failure();
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(p) => {
                            p.success();
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if i % 97 == 0 {
                        clock.advance(Duration::from_millis(1));
                    }
                }
            });
        }
    });
    let m = cb.metrics();
    assert_eq!(m.total_calls, THREADS * CALLS);
    assert_eq!(m.successful_calls, ok.load(Ordering::Relaxed));
    assert_eq!(m.failed_calls, failed.load(Ordering::Relaxed));
    assert_eq!(m.rejected_calls, rejected.load(Ordering::Relaxed));
    assert!(
        m.rejected_calls > 0 && opens.0.load(Ordering::SeqCst) > 10,
        "the circuit should have cycled: {m:?}"
    );
    // every transition the counters saw was reported to the listener, and vice versa
    let opens = opens.0.load(Ordering::SeqCst);
    assert!(
        m.state_transitions >= 2 * opens - 1 && m.state_transitions <= 3 * opens,
        "{m:?} opens={opens}"
    );
}

#[test]
fn many_threads_failing_at_once_trip_the_circuit_once() {
    const THREADS: usize = 8;
    let opens = Opens::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(1)
        .clock(ManualClock::new())
        .listener(opens.clone())
        .build()
        .unwrap();
    for round in 1..=200u64 {
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let p = cb.try_acquire().unwrap();
                    barrier.wait();
                    p.failure();
                });
            }
        });
        assert_eq!(opens.0.load(Ordering::SeqCst), round, "round {round}");
        cb.reset();
    }
    assert_eq!(cb.metrics().state_transitions, 400);
}

#[test]
fn half_open_never_admits_more_trials_than_allowed() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder()
        .half_open_max_calls(3)
        .success_threshold(u32::MAX)
        .clock(clock.clone())
        .build()
        .unwrap();
    cb.trip();
    clock.advance(Duration::from_secs(30));
    let in_flight = AtomicU64::new(0);
    let max_seen = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    if let Ok(p) = cb.try_acquire() {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        p.success();
                    }
                }
            });
        }
    });
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    assert!(max_seen.load(Ordering::SeqCst) <= 3);
}
