//! Seed 004, section 4.2: the exercise's own test file, kept as written except
//! that `state`, `reset`, `trip` and `can_execute` are synchronous here (the
//! breaker does no I/O), so their `.await` is dropped. `test_half_open_success`
//! keeps the seed's real sleep on purpose: it checks the breaker on the system clock.

mod common;

use rempart::*;
use std::time::Duration;

#[tokio::test]
async fn test_closed_state_success() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig::default());

    for _ in 0..5 {
        let result = cb.call(|| async { Ok::<_, &str>(42) }).await;
        assert!(result.is_ok());
    }

    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn test_transition_to_open() {
    let config = CircuitBreakerConfig {
        failure_threshold: 3,
        ..Default::default()
    };
    let cb = CircuitBreaker::new(config);

    // Cause 3 failures
    for _ in 0..3 {
        let _ = cb.call(|| async { Err::<i32, _>("error") }).await;
    }

    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test]
async fn test_open_rejects() {
    let config = CircuitBreakerConfig {
        failure_threshold: 1,
        ..Default::default()
    };
    let cb = CircuitBreaker::new(config);

    // Trigger open
    let _ = cb.call(|| async { Err::<i32, _>("error") }).await;

    // Should be rejected
    let result = cb.call(|| async { Ok::<_, &str>(42) }).await;
    assert!(matches!(result, Err(CircuitError::Open)));
}

#[tokio::test]
async fn test_half_open_success() {
    let config = CircuitBreakerConfig {
        failure_threshold: 1,
        success_threshold: 2,
        open_timeout: Duration::from_millis(50),
        half_open_max_calls: 3,
    };
    let cb = CircuitBreaker::new(config);

    // Trigger open
    let _ = cb.call(|| async { Err::<i32, _>("error") }).await;
    assert_eq!(cb.state(), CircuitState::Open);

    // Wait for timeout
    tokio::time::sleep(Duration::from_millis(60)).await;

    // Should be half-open now
    assert_eq!(cb.state(), CircuitState::HalfOpen);

    // 2 successes should close
    for _ in 0..2 {
        let result = cb.call(|| async { Ok::<_, &str>(42) }).await;
        assert!(result.is_ok());
    }

    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn test_metrics() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig::default());

    cb.call(|| async { Ok::<_, &str>(1) }).await.ok();
    cb.call(|| async { Err::<i32, _>("err") }).await.ok();

    let metrics = cb.metrics();
    assert_eq!(metrics.total_calls, 2);
    assert_eq!(metrics.successful_calls, 1);
    assert_eq!(metrics.failed_calls, 1);
}

#[test]
fn config_default_is_the_seeds() {
    let c = CircuitBreakerConfig::default();
    assert_eq!(
        (
            c.failure_threshold,
            c.success_threshold,
            c.open_timeout,
            c.half_open_max_calls
        ),
        (5, 3, Duration::from_secs(30), 3)
    );
}

#[test]
fn state_and_error_display() {
    assert_eq!(CircuitState::Closed.to_string(), "Closed");
    assert_eq!(CircuitState::Open.to_string(), "Open");
    assert_eq!(CircuitState::HalfOpen.to_string(), "HalfOpen");
    let e: CircuitError<std::io::Error> =
        CircuitError::OperationFailed(std::io::Error::other("boom"));
    assert_eq!(e.to_string(), "operation failed: boom");
    // std::error::Error, with the operation's error as the source
    let source = std::error::Error::source(&e).map(|s| s.to_string());
    assert_eq!(source.as_deref(), Some("boom"));
    let open: CircuitError<std::io::Error> = CircuitError::Open;
    assert!(std::error::Error::source(&open).is_none());
    assert!(open.to_string().contains("open"));
    assert!(
        CircuitError::<std::io::Error>::HalfOpenRejected
            .to_string()
            .contains("half-open")
    );
}

#[test]
fn breaker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<circuit_breaker::OwnedPermit>();
}

// The seed's `cargo test` session (its section 3.0) lists twelve tests; these are
// the seven whose bodies its file does not give, written to the same contract.
mod named_in_the_seeds_session {
    use rempart::*;
    use std::time::Duration;

    use super::common::breaker_on_manual_clock as breaker;

    #[tokio::test]
    async fn test_closed_state_failure() {
        let (cb, _) = breaker(CircuitBreakerConfig::default());
        for _ in 0..4 {
            let r = cb.call(|| async { Err::<i32, _>("error") }).await;
            assert!(matches!(r, Err(CircuitError::OperationFailed("error"))));
        }
        assert_eq!(
            cb.state(),
            CircuitState::Closed,
            "4 failures are under the threshold of 5"
        );
    }

    #[tokio::test]
    async fn test_transition_to_half_open() {
        let (cb, clock) = breaker(CircuitBreakerConfig {
            failure_threshold: 1,
            open_timeout: Duration::from_millis(50),
            ..Default::default()
        });
        let _ = cb.call(|| async { Err::<i32, _>("error") }).await;
        clock.advance(Duration::from_millis(49));
        assert_eq!(cb.state(), CircuitState::Open);
        clock.advance(Duration::from_millis(1));
        assert_eq!(cb.state(), CircuitState::HalfOpen);
    }

    #[tokio::test]
    async fn test_half_open_failure() {
        let (cb, clock) = breaker(CircuitBreakerConfig {
            failure_threshold: 1,
            open_timeout: Duration::from_millis(50),
            ..Default::default()
        });
        let _ = cb.call(|| async { Err::<i32, _>("error") }).await;
        clock.advance(Duration::from_millis(50));
        let r = cb.call(|| async { Err::<i32, _>("still down") }).await;
        assert!(matches!(
            r,
            Err(CircuitError::OperationFailed("still down"))
        ));
        assert_eq!(cb.state(), CircuitState::Open);
    }

    #[tokio::test]
    async fn test_reset() {
        let (cb, _) = breaker(CircuitBreakerConfig {
            failure_threshold: 1,
            ..Default::default()
        });
        let _ = cb.call(|| async { Err::<i32, _>("error") }).await;
        cb.reset();
        assert_eq!(cb.state(), CircuitState::Closed);
        assert_eq!(cb.call(|| async { Ok::<_, &str>(42) }).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn test_trip() {
        let (cb, clock) = breaker(CircuitBreakerConfig::default());
        cb.trip();
        assert_eq!(cb.state(), CircuitState::Open);
        assert!(matches!(
            cb.call(|| async { Ok::<_, &str>(42) }).await,
            Err(CircuitError::Open)
        ));
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            cb.state(),
            CircuitState::HalfOpen,
            "a manual trip half-opens like a real one"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_concurrent_calls() {
        let (cb, _) = breaker(CircuitBreakerConfig::default());
        let mut handles = Vec::new();
        for _ in 0..10 {
            let cb = cb.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..100 {
                    cb.call(|| async { Ok::<_, &str>(1) }).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let m = cb.metrics();
        assert_eq!((m.total_calls, m.successful_calls), (1000, 1000));
        assert_eq!(cb.state(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn test_can_execute() {
        let (cb, clock) = breaker(CircuitBreakerConfig {
            failure_threshold: 1,
            half_open_max_calls: 1,
            open_timeout: Duration::from_millis(50),
            ..Default::default()
        });
        assert!(cb.can_execute());
        let _ = cb.call(|| async { Err::<i32, _>("error") }).await;
        assert!(!cb.can_execute());
        clock.advance(Duration::from_millis(50));
        assert!(cb.can_execute());
        let held = cb.try_acquire().unwrap();
        assert!(!cb.can_execute(), "the only trial slot is taken");
        held.success();
    }
}
