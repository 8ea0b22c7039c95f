//! Seed 004, section 4.1: the grading table, one test per row, on a manual clock.

mod common;

use rempart::circuit_breaker::CircuitMetrics;
use rempart::*;
use std::sync::Arc;
use std::time::Duration;

use common::breaker_on_manual_clock as breaker;

async fn fail(cb: &CircuitBreaker) -> Result<(), CircuitError<&'static str>> {
    cb.call(|| async { Err("down") }).await
}
async fn succeed(cb: &CircuitBreaker) -> Result<(), CircuitError<&'static str>> {
    cb.call(|| async { Ok(()) }).await
}

#[tokio::test]
async fn closed_success_five_successful_calls_remain_closed() {
    let (cb, _) = breaker(CircuitBreakerConfig::default());
    for _ in 0..5 {
        succeed(&cb).await.unwrap();
    }
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn closed_failure_five_failed_calls_open() {
    let (cb, _) = breaker(CircuitBreakerConfig::default());
    for i in 0..5 {
        assert_eq!(
            cb.state(),
            CircuitState::Closed,
            "opened early, after {i} failures"
        );
        assert!(matches!(
            fail(&cb).await,
            Err(CircuitError::OperationFailed("down"))
        ));
    }
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test]
async fn open_rejects_without_running_the_operation() {
    let (cb, _) = breaker(CircuitBreakerConfig::default());
    cb.trip();
    let ran = std::sync::atomic::AtomicBool::new(false);
    let r = cb
        .call(|| async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(r, Err(CircuitError::Open)));
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test]
async fn timeout_half_open_after_open_timeout_without_any_call() {
    let (cb, clock) = breaker(CircuitBreakerConfig::default());
    cb.trip();
    clock.advance(Duration::from_secs(30) - Duration::from_nanos(1));
    assert_eq!(cb.state(), CircuitState::Open);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cb.state(), CircuitState::HalfOpen);
}

#[tokio::test]
async fn half_open_success_closes_after_success_threshold() {
    let (cb, clock) = breaker(CircuitBreakerConfig::default());
    cb.trip();
    clock.advance(Duration::from_secs(30));
    for _ in 0..2 {
        succeed(&cb).await.unwrap();
        assert_eq!(cb.state(), CircuitState::HalfOpen);
    }
    succeed(&cb).await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn half_open_failure_reopens_and_restarts_the_timer() {
    let (cb, clock) = breaker(CircuitBreakerConfig::default());
    cb.trip();
    clock.advance(Duration::from_secs(30));
    succeed(&cb).await.unwrap();
    fail(&cb).await.unwrap_err();
    assert_eq!(cb.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "the timer must restart at the reopening"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(cb.state(), CircuitState::HalfOpen);
}

#[tokio::test]
async fn half_open_limit_rejects_calls_beyond_half_open_max_calls_in_flight() {
    let (cb, clock) = breaker(CircuitBreakerConfig {
        half_open_max_calls: 2,
        ..Default::default()
    });
    cb.trip();
    clock.advance(Duration::from_secs(30));
    let a = cb.try_acquire().unwrap();
    let b = cb.try_acquire().unwrap();
    assert!(matches!(
        cb.call(|| async { Ok::<_, ()>(()) }).await,
        Err(CircuitError::HalfOpenRejected)
    ));
    a.success(); // frees a slot
    let c = cb.try_acquire().expect("a finished trial frees its slot");
    b.success();
    c.success(); // third success closes (success_threshold 3)
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn reset_returns_to_closed_from_open_and_half_open() {
    let (cb, clock) = breaker(CircuitBreakerConfig::default());
    cb.trip();
    cb.reset();
    assert_eq!(cb.state(), CircuitState::Closed);
    succeed(&cb).await.unwrap();
    cb.trip();
    clock.advance(Duration::from_secs(30));
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    cb.reset();
    assert_eq!(cb.state(), CircuitState::Closed);
    // the failure run starts from zero again
    for _ in 0..4 {
        fail(&cb).await.unwrap_err();
    }
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn metrics_count_every_kind_of_call_and_each_transition() {
    let (cb, clock) = breaker(CircuitBreakerConfig {
        failure_threshold: 2,
        success_threshold: 1,
        ..Default::default()
    });
    succeed(&cb).await.unwrap();
    fail(&cb).await.unwrap_err();
    fail(&cb).await.unwrap_err(); // Closed -> Open
    fail(&cb).await.unwrap_err(); // rejected
    succeed(&cb).await.unwrap_err(); // rejected
    clock.advance(Duration::from_secs(30)); // -> HalfOpen
    succeed(&cb).await.unwrap(); // -> Closed
    let m = cb.metrics();
    let mut expected = CircuitMetrics::default();
    expected.total_calls = 6;
    expected.successful_calls = 2;
    expected.failed_calls = 2;
    expected.rejected_calls = 2;
    expected.state_transitions = 3;
    assert_eq!(m, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_all_counted_and_trip_once() {
    let (cb, _) = breaker(CircuitBreakerConfig {
        failure_threshold: 50,
        ..Default::default()
    });
    let cb = Arc::new(cb);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let cb = cb.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                // two tasks fail every call; the rest succeed
                let failing = t < 2 && i < 100;
                let _ = cb
                    .call(|| async move {
                        tokio::task::yield_now().await;
                        if failing { Err("x") } else { Ok(()) }
                    })
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = cb.metrics();
    assert_eq!(m.total_calls, 8 * 500);
    assert_eq!(
        m.successful_calls + m.failed_calls + m.rejected_calls,
        8 * 500
    );
    // transitions come in whole trips: at most one Closed -> Open at a time
    assert!(m.state_transitions <= 1, "{m:?}");
}
