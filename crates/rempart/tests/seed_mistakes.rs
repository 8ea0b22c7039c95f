//! Seed 004, section 4.10: the five classic mistakes (mutants A–E). Each test is
//! named after what it guards and fails on the mutant it describes.

mod common;

use rempart::circuit_breaker::{CircuitListener, StateChange};
use rempart::clock::ManualClock;
use rempart::*;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::breaker_on_manual_clock as breaker;

/// Mutant A: closing on the first HalfOpen success.
#[tokio::test]
async fn half_open_needs_success_threshold_successes_before_closing() {
    let (cb, clock) = breaker(CircuitBreakerConfig {
        failure_threshold: 1,
        success_threshold: 3,
        open_timeout: Duration::from_secs(1),
        half_open_max_calls: 1,
    });
    let _ = cb.call(|| async { Err::<(), _>("down") }).await;
    clock.advance(Duration::from_secs(1));
    for n in 1..=2 {
        cb.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
        assert_eq!(
            cb.state(),
            CircuitState::HalfOpen,
            "closed after {n} success(es)"
        );
    }
    cb.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[derive(Debug, Default, Clone)]
struct Transitions(Arc<Mutex<Vec<(CircuitState, CircuitState)>>>);
impl CircuitListener for Transitions {
    fn on_state_change(&self, c: &StateChange) {
        self.0.lock().unwrap().push((c.from, c.to));
    }
}

/// Mutant B: a read-then-write gap on the failure count loses failures that
/// happen at the same moment on different threads (and can trip twice).
#[test]
fn simultaneous_failures_on_many_threads_are_all_counted_and_trip_once() {
    const THREADS: usize = 4;
    let log = Transitions::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(THREADS as u32)
        .clock(ManualClock::new())
        .listener(log.clone())
        .build()
        .unwrap();
    for round in 0..300 {
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let permit = cb.try_acquire().unwrap();
                    barrier.wait();
                    permit.failure();
                });
            }
        });
        assert_eq!(
            cb.state(),
            CircuitState::Open,
            "round {round}: a failure was lost"
        );
        cb.reset();
    }
    let seen = log.0.lock().unwrap();
    let opens = seen
        .iter()
        .filter(|t| **t == (CircuitState::Closed, CircuitState::Open))
        .count();
    assert_eq!(opens, 300, "exactly one Closed -> Open per round");
    assert_eq!(cb.metrics().failed_calls, 300 * THREADS as u64);

    // and one short of the threshold never trips
    let cb = CircuitBreaker::builder()
        .failure_threshold(THREADS as u32 + 1)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    for _ in 0..100 {
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| cb.try_acquire().unwrap().failure());
            }
        });
        assert_eq!(cb.state(), CircuitState::Closed);
        cb.try_acquire().unwrap().success();
    }
}

/// Mutant C: failures must be *consecutive*; a success in Closed ends the run.
#[tokio::test]
async fn a_success_in_closed_resets_the_failure_run() {
    let (cb, _) = breaker(CircuitBreakerConfig::default());
    for _ in 0..10 {
        for _ in 0..4 {
            let _ = cb.call(|| async { Err::<(), _>("down") }).await;
        }
        cb.call(|| async { Ok::<_, &str>(()) }).await.unwrap();
    }
    assert_eq!(
        cb.state(),
        CircuitState::Closed,
        "40 failures, never 5 in a row"
    );
}

/// Mutant D: the open timer must start when the circuit opens, or it never half-opens.
#[tokio::test]
async fn a_circuit_opened_by_failures_half_opens_after_open_timeout() {
    let (cb, clock) = breaker(CircuitBreakerConfig {
        failure_threshold: 2,
        open_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    clock.advance(Duration::from_secs(100)); // the timer is relative to the trip, not to creation
    for _ in 0..2 {
        let _ = cb.call(|| async { Err::<(), _>("down") }).await;
    }
    assert!(!cb.can_execute());
    clock.advance(Duration::from_secs(9));
    assert_eq!(cb.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(1));
    assert!(cb.can_execute());
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    cb.call(|| async { Ok::<_, ()>(()) })
        .await
        .expect("a trial call runs");
}

/// Mutant E: the operation's own error must come back, including on the call
/// that trips the circuit.
#[tokio::test]
async fn the_operations_error_is_returned_even_on_the_tripping_call() {
    let (cb, _) = breaker(CircuitBreakerConfig {
        failure_threshold: 1,
        ..Default::default()
    });
    let r = cb
        .call(|| async { Err::<(), _>(std::io::Error::other("disk full")) })
        .await;
    match r {
        Err(CircuitError::OperationFailed(e)) => assert_eq!(e.to_string(), "disk full"),
        other => panic!("expected the operation's error, got {other:?}"),
    }
    assert_eq!(cb.state(), CircuitState::Open);
}
