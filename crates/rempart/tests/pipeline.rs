//! The pipeline's order, as a user sees it in outcomes and counts.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rempart::bulkhead::Bulkhead;
use rempart::pipeline::{Pipeline, PipelineError};
use rempart::rate_limit::RateLimiter;
use rempart::retry::{Backoff, Jitter, Retry};
use rempart::{CircuitBreaker, CircuitState};

fn retry(n: u32) -> Retry {
    Retry::builder()
        .max_attempts(n)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_breaker_failures_and_are_retried() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(5)
        .build()
        .unwrap();
    let p = Pipeline::builder("slow")
        .retry(retry(3))
        .circuit_breaker(breaker.clone())
        .timeout(Duration::from_millis(100))
        .build();
    let calls = AtomicU32::new(0);
    let err = p
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), ()>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::TimedOut(e) if e.limit == Duration::from_millis(100)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        breaker.metrics().failed_calls,
        3,
        "the timeout sits inside the breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_not_retried_and_a_rate_refusal_is_not_a_breaker_failure() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .build()
        .unwrap();
    let limiter = RateLimiter::builder()
        .rate(1, Duration::from_secs(60))
        .burst(1)
        .build()
        .unwrap();
    let p = Pipeline::builder("limited")
        .retry(retry(5))
        .circuit_breaker(breaker.clone())
        .rate_limit(limiter)
        .build();
    assert_eq!(p.call(|| async { Ok::<_, ()>(1) }).await.unwrap(), 1);
    let calls = AtomicU32::new(0);
    let err = p
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(2)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::RateLimited(_)), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "being rate limited says nothing of the service"
    );
    assert_eq!(breaker.metrics().failed_calls, 0);
    assert_eq!(
        p.retry().unwrap().metrics().attempts,
        2,
        "one attempt per call, no retries"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_refuses_without_calling() {
    let bulkhead = Bulkhead::builder()
        .name("tiny")
        .max_concurrent(1)
        .build()
        .unwrap();
    let p = Pipeline::builder("tiny")
        .retry(retry(3))
        .bulkhead(bulkhead.clone())
        .build();
    let _held = bulkhead.try_acquire().unwrap();
    let err = p.call(|| async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert!(matches!(err, PipelineError::BulkheadFull(_)));
    assert!(err.is_refusal());
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_until_the_breaker_opens() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(2)
        .build()
        .unwrap();
    let p = Pipeline::builder("flaky")
        .retry(retry(10))
        .circuit_breaker(breaker.clone())
        .build();
    let calls = AtomicU32::new(0);
    let err = p
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("boom")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::CircuitOpen));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
