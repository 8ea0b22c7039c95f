//! Retry, timeouts and deadlines: exact, on tokio's paused time and a seeded RNG.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use rempart::deadline::{Deadline, parse_grpc_timeout};
use rempart::retry::{
    Backoff, Decision, HttpOutcome, Jitter, Retry, RetryBudget, RetryCollector, RetryError,
    RetryErrors, StopWhenOpen, http_decision, http_not_sent,
};
use rempart::rng::SplitMix64;
use rempart::timeout::{Elapsed, timeout};
use rempart::{CircuitBreaker, CircuitError};
use tokio::time::Instant;

const S: Duration = Duration::from_secs(1);

#[test]
fn every_backoff_gives_its_exact_sequence_and_respects_its_cap() {
    let secs = |b: Backoff| (1..=7).map(|n| b.delay(n).as_secs()).collect::<Vec<_>>();
    assert_eq!(secs(Backoff::constant(3 * S)), [3, 3, 3, 3, 3, 3, 3]);
    assert_eq!(
        secs(Backoff::linear(S, 5 * S).unwrap()),
        [1, 2, 3, 4, 5, 5, 5]
    );
    // Seed 003: 1 s ×2 up to 30 s.
    assert_eq!(
        secs(Backoff::exponential(S, 2.0, 30 * S).unwrap()),
        [1, 2, 4, 8, 16, 30, 30]
    );
    // Seed 002: 1 s doubling to 5 min.
    let b = Backoff::exponential(S, 2.0, 300 * S).unwrap();
    assert_eq!(b.delay(9), 256 * S);
    assert_eq!(b.delay(10), 300 * S);
    assert_eq!(
        b.delay(u32::MAX),
        300 * S,
        "no overflow at absurd attempt numbers"
    );
}

#[test]
fn backoff_settings_that_cannot_work_are_refused_by_name() {
    let e = Backoff::exponential(S, 0.5, 10 * S).unwrap_err();
    assert_eq!((e.policy(), e.field()), ("retry", "multiplier"));
    let e = Backoff::linear(10 * S, S).unwrap_err();
    assert_eq!(e.field(), "max");
    assert_eq!(
        Retry::builder()
            .max_attempts(0)
            .build()
            .unwrap_err()
            .field(),
        "max_attempts"
    );
}

#[test]
fn each_jitter_stays_within_its_bounds_over_ten_thousand_samples() {
    let mut rng = SplitMix64::seeded(42);
    let (d, initial, max) = (
        Duration::from_millis(800),
        Duration::from_millis(100),
        10 * S,
    );
    let mut seen_low_full = false;
    for _ in 0..10_000 {
        let full = Jitter::Full.apply(d, d, initial, max, &mut rng);
        assert!(full <= d);
        seen_low_full |= full < d / 10;
        let equal = Jitter::Equal.apply(d, d, initial, max, &mut rng);
        assert!(equal >= d / 2 && equal <= d, "{equal:?}");
        let dec = Jitter::Decorrelated.apply(d, d, initial, max, &mut rng);
        assert!(dec >= initial && dec <= d * 3, "{dec:?}");
        let prop = Jitter::proportional(0.1)
            .unwrap()
            .apply(d, d, initial, max, &mut rng);
        assert!(prop >= d.mul_f64(0.9) && prop <= d.mul_f64(1.1), "{prop:?}");
        assert_eq!(Jitter::None.apply(d, d, initial, max, &mut rng), d);
    }
    assert!(seen_low_full, "full jitter should reach near zero");
    // Capped: decorrelated from a large previous delay never exceeds max.
    for _ in 0..1000 {
        assert!(Jitter::Decorrelated.apply(d, 100 * S, initial, max, &mut rng) <= max);
    }
    assert!(Jitter::proportional(1.5).is_err());
}

fn failing_retry(attempts: u32) -> Retry {
    Retry::builder()
        .max_attempts(attempts)
        .backoff(Backoff::exponential(S, 2.0, 30 * S).unwrap())
        .jitter(Jitter::None)
        .rng(SplitMix64::seeded(1))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn pauses_follow_the_backoff_exactly_and_the_last_error_is_returned() {
    let retry = failing_retry(4);
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = retry
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("down")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RetryError::Exhausted {
                attempts: 4,
                error: "down"
            }
        ),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(start.elapsed(), 7 * S, "1 + 2 + 4 seconds of pauses");
    let m = retry.metrics();
    assert_eq!(
        (
            m.calls,
            m.attempts,
            m.failed_after_retries,
            m.max_retries_reached
        ),
        (1, 4, 1, 1)
    );
    assert_eq!(m.delay_total, 7 * S);
    assert_eq!(m.delays.iter().sum::<u64>(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_pause_but_never_beyond_the_cap() {
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(S, 2.0, 10 * S).unwrap())
        .build()
        .unwrap();
    let answers = [
        HttpOutcome::Status {
            code: 503,
            retry_after: Some(3 * S),
        },
        HttpOutcome::Status {
            code: 429,
            retry_after: Some(120 * S),
        },
        HttpOutcome::Status {
            code: 200,
            retry_after: None,
        },
    ];
    let n = AtomicU32::new(0);
    let start = Instant::now();
    let last = retry
        .call_with(
            |r: Result<&HttpOutcome, &()>| http_decision(r.unwrap()),
            || async { Ok::<_, ()>(answers[n.fetch_add(1, Ordering::SeqCst) as usize]) },
        )
        .await
        .unwrap();
    assert_eq!(last, answers[2]);
    assert_eq!(
        start.elapsed(),
        13 * S,
        "3 s as asked, then 120 s capped to 10 s"
    );
}

#[test]
fn seed_003s_http_classification() {
    let status = |code| HttpOutcome::Status {
        code,
        retry_after: None,
    };
    for code in [429, 500, 502, 503, 504] {
        assert_eq!(http_decision(&status(code)), Decision::Retry, "{code}");
    }
    for code in [200, 400, 401, 403, 404] {
        assert_eq!(http_decision(&status(code)), Decision::Accept, "{code}");
    }
    for o in [
        HttpOutcome::ConnectTimeout,
        HttpOutcome::Dns,
        HttpOutcome::ConnectionReset,
    ] {
        assert_eq!(http_decision(&o), Decision::Retry);
    }
    assert!(http_not_sent(&HttpOutcome::Dns));
    assert!(
        !http_not_sent(&HttpOutcome::ConnectionReset),
        "a reset request may have been processed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_is_tried_once() {
    let retry = failing_retry(5);
    let calls = AtomicU32::new(0);
    let err = retry
        .call_with(
            |r: Result<&(), &u16>| match r {
                Err(404) => Decision::Accept,
                Err(_) => Decision::Retry,
                Ok(_) => Decision::Accept,
            },
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), u16>(404)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RetryError::NotRetried {
            attempts: 1,
            error: 404
        }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_ends_the_loop_at_once() {
    let breaker = CircuitBreaker::builder()
        .failure_threshold(2)
        .build()
        .unwrap();
    let retry = failing_retry(10);
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = retry
        .call_with(StopWhenOpen(RetryErrors), || {
            breaker.call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("refused")
            })
        })
        .await
        .unwrap_err();
    // Two failures open the circuit; the third attempt is refused and stops the loop.
    assert!(
        matches!(
            err,
            RetryError::NotRetried {
                attempts: 3,
                error: CircuitError::Open
            }
        ),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), 3 * S, "no pause after the refusal");
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_refuses_the_retry_with_its_own_error() {
    let budget = Arc::new(RetryBudget::new(0, 1).unwrap());
    let retry = Retry::builder()
        .max_attempts(5)
        .jitter(Jitter::None)
        .budget(Arc::clone(&budget))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let err = retry
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("x")
        })
        .await
        .unwrap_err();
    // One retry in reserve, then the budget says no.
    assert!(
        matches!(err, RetryError::BudgetExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(retry.metrics().budget_refusals, 1);
}

/// Raises its flag when dropped: proves a cancelled future is gone.
struct DropGuard(Arc<AtomicBool>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_drops_the_operation_and_names_its_limit() {
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropGuard(Arc::clone(&dropped));
    let err = timeout(2 * S, async move {
        let _g = guard;
        tokio::time::sleep(60 * S).await;
    })
    .await
    .unwrap_err();
    assert_eq!(err, Elapsed { limit: 2 * S });
    assert!(
        dropped.load(Ordering::SeqCst),
        "the timed-out future must be dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_are_retried_and_the_overall_timeout_ends_the_call() {
    let retry = Retry::builder()
        .max_attempts(10)
        .attempt_timeout(S)
        .overall_timeout(Duration::from_millis(2500))
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = retry
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(60 * S).await;
            Ok::<(), ()>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RetryError::TimedOut { .. }), "{err:?}");
    // 1 s, 0.1 s pause, 1 s, 0.1 s pause, then only 0.3 s left.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shrinks_across_nested_calls_and_bounds_inner_timeouts() {
    Deadline::after(3 * S)
        .scope(async {
            tokio::time::sleep(S).await;
            let inner =
                Deadline::after(60 * S).scope(async { Deadline::current().unwrap().remaining() });
            assert_eq!(
                inner.await,
                2 * S,
                "an inner call gets what remains, never more"
            );
            let err = timeout(60 * S, tokio::time::sleep(60 * S))
                .await
                .unwrap_err();
            assert_eq!(err.limit, 2 * S, "the timeout is the deadline's remainder");
        })
        .await;
    assert!(Deadline::current().is_none());
}

#[tokio::test(start_paused = true)]
async fn deadlines_travel_in_headers() {
    let mut h = http::HeaderMap::new();
    Deadline::after(Duration::from_millis(1500)).write_header(&mut h);
    assert_eq!(h["x-request-timeout-ms"], "1500");
    h.insert("grpc-timeout", "800m".parse().unwrap());
    assert_eq!(
        Deadline::from_headers(&h).unwrap().remaining(),
        Duration::from_millis(800)
    );
    assert_eq!(parse_grpc_timeout("2S"), Some(2 * S));
    assert_eq!(parse_grpc_timeout("5M"), Some(300 * S));
    assert_eq!(parse_grpc_timeout("123456789m"), None, "at most 8 digits");
    assert_eq!(parse_grpc_timeout("10x"), None);
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    use rempart::retry::parse_retry_after;
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
    assert_eq!(parse_retry_after(" 30 ", now), Some(30 * S));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("tomorrow", now), None);
}

#[tokio::test(start_paused = true)]
async fn prometheus_shows_attempts_outcomes_and_delays() {
    let retry = Retry::builder()
        .name("orders")
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::from_millis(200)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let n = AtomicU32::new(0);
    retry
        .call(|| async {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    let collector = RetryCollector::new();
    collector.add(&retry);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"retry_attempts_total{service="orders"} 2"#,
        r#"retry_calls_total{service="orders",outcome="success_after_retry"} 1"#,
        r#"retry_delay_seconds_bucket{le="0.1",service="orders"} 0"#,
        r#"retry_delay_seconds_bucket{le="0.5",service="orders"} 1"#,
        r#"retry_delay_seconds_count{service="orders"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

proptest! {
    #[test]
    fn backoff_never_shrinks_and_never_passes_its_cap(
        initial_ms in 1u64..10_000,
        mult in 1.0f64..10.0,
        extra_ms in 0u64..1_000_000,
        n in 1u32..2000,
    ) {
        let (initial, max) = (Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms));
        for b in [
            Backoff::exponential(initial, mult, max).unwrap(),
            Backoff::linear(initial, max).unwrap(),
        ] {
            prop_assert!(b.delay(n) <= max);
            prop_assert!(b.delay(n + 1) >= b.delay(n));
            prop_assert!(b.delay(1) == initial);
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl rempart::retry::RetryListener for Recorder {
    fn on_retry(&self, e: &rempart::retry::RetryEvent<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("retry {} after {:?}", e.attempt, e.delay));
    }
    fn on_give_up(&self, name: &str, attempts: u32, why: rempart::retry::GiveUp) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{name} gave up after {attempts}: {why:?}"));
    }
}

#[tokio::test(start_paused = true)]
async fn listeners_hear_each_retry_and_the_give_up_but_not_a_first_success() {
    let rec = Recorder::default();
    let retry = Retry::builder()
        .name("orders")
        .max_attempts(3)
        .backoff(Backoff::constant(S))
        .jitter(Jitter::None)
        .listener(rec.clone())
        .build()
        .unwrap();
    retry.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
    assert!(rec.0.lock().unwrap().is_empty());
    let _ = retry.call(|| async { Err::<(), _>(()) }).await;
    assert_eq!(
        *rec.0.lock().unwrap(),
        [
            "retry 1 after 1s",
            "retry 2 after 1s",
            "orders gave up after 3: AttemptsSpent"
        ]
    );
}
