//! Options beyond the seed: rate windows, slow calls, classifiers, open-period
//! backoff, manual modes, permits, listeners, the tower layer, and validation.

use rempart::circuit_breaker::*;
use rempart::clock::{Clock, ManualClock};
use rempart::rng::SplitMix64;
use rempart::{CircuitBreaker, CircuitError, CircuitState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default, Clone)]
struct Recorder {
    changes: Arc<Mutex<Vec<StateChange>>>,
    calls: Arc<Mutex<Vec<CallEvent>>>,
}
impl CircuitListener for Recorder {
    fn on_state_change(&self, c: &StateChange) {
        self.changes.lock().unwrap().push(c.clone());
    }
    fn on_call(&self, e: &CallEvent) {
        self.calls.lock().unwrap().push(*e);
    }
}
impl Recorder {
    fn reasons(&self) -> Vec<TransitionReason> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.reason)
            .collect()
    }
    fn open_periods(&self) -> Vec<Duration> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.open_for)
            .collect()
    }
}

fn record(cb: &CircuitBreaker, ok: bool) {
    let p = cb.try_acquire().expect("admitted");
    if ok { p.success() } else { p.failure() }
}

#[test]
fn failure_rate_over_a_count_window_waits_for_minimum_calls() {
    let cb = CircuitBreaker::builder()
        .failure_threshold(0)
        .failure_rate(50.0)
        .sliding_window(SlidingWindow::Count { calls: 10 })
        .minimum_calls(10)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    for _ in 0..9 {
        record(&cb, false); // 9 failures, but fewer than 10 calls: not judged yet
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    record(&cb, false);
    assert_eq!(cb.state(), CircuitState::Open);
}

#[test]
fn failure_rate_below_threshold_keeps_the_circuit_closed() {
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(0)
        .failure_rate(50.0)
        .sliding_window(SlidingWindow::Count { calls: 10 })
        .minimum_calls(10)
        .clock(ManualClock::new())
        .listener(rec.clone())
        .build()
        .unwrap();
    // alternate: 40 % failures over any 10 calls
    for i in 0..100 {
        record(&cb, i % 5 >= 2);
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    // then 5 failures in a row make the last 10 calls 50 %+ failures
    for _ in 0..3 {
        record(&cb, false);
    }
    assert_eq!(cb.state(), CircuitState::Open);
    assert!(matches!(rec.reasons()[..], [TransitionReason::FailureRate(p)] if p >= 50.0));
}

#[test]
fn time_window_forgets_failures_older_than_the_period() {
    let clock = ManualClock::new();
    // seed 001 case 4: 50 %, volume 10, 10 s in 10 buckets, reset 30 s
    let cb = CircuitBreaker::builder()
        .failure_threshold(0)
        .failure_rate(50.0)
        .sliding_window(SlidingWindow::Time {
            period: Duration::from_secs(10),
            buckets: 10,
        })
        .minimum_calls(10)
        .open_timeout(Duration::from_secs(30))
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..9 {
        record(&cb, false);
    }
    clock.advance(Duration::from_secs(11)); // those 9 failures leave the window
    for _ in 0..5 {
        record(&cb, true);
    }
    for _ in 0..4 {
        record(&cb, false);
    }
    assert_eq!(
        cb.state(),
        CircuitState::Closed,
        "4 of 9 in the window, and under the volume threshold"
    );
    record(&cb, false); // 5 of 10 = 50 %
    assert_eq!(cb.state(), CircuitState::Open);
}

#[test]
fn slow_calls_open_the_circuit_by_rate_and_fail_a_trial() {
    let clock = ManualClock::new();
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(0)
        .slow_calls(Duration::from_millis(500), 60.0)
        .sliding_window(SlidingWindow::Count { calls: 5 })
        .minimum_calls(5)
        .open_timeout(Duration::from_secs(1))
        .clock(clock.clone())
        .listener(rec.clone())
        .build()
        .unwrap();
    let timed = |ms: u64| {
        let p = cb.try_acquire().unwrap();
        clock.advance(Duration::from_millis(ms));
        p.success();
    };
    timed(100);
    timed(100);
    timed(600);
    timed(600);
    assert_eq!(cb.state(), CircuitState::Closed);
    timed(500); // 3 of 5 slow = 60 %, and a slow call is one at the threshold or over
    assert_eq!(cb.state(), CircuitState::Open);
    assert!(
        matches!(rec.reasons()[..], [TransitionReason::SlowCallRate(p)] if (p - 60.0).abs() < 1e-9)
    );
    assert_eq!(cb.metrics().slow_calls, 3);
    let durations: Vec<_> = rec
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.duration)
        .collect();
    assert_eq!(durations[0], Some(Duration::from_millis(100)));
    // a slow trial, though successful, says the dependency has not recovered
    clock.advance(Duration::from_secs(1));
    timed(700);
    assert_eq!(cb.state(), CircuitState::Open);
    assert_eq!(rec.reasons().last(), Some(&TransitionReason::TrialFailed));
}

#[tokio::test]
async fn classifier_ignores_client_errors_and_fails_server_errors() {
    let cb = CircuitBreaker::builder()
        .failure_threshold(2)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let by_status = |r: &Result<u16, ()>| match r {
        Ok(s) if *s >= 500 => Outcome::Failure,
        Ok(s) if *s >= 400 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(()) => Outcome::Failure,
    };
    for _ in 0..20 {
        assert_eq!(
            cb.call_classified(by_status, || async { Ok(404) }).await,
            Ok(404)
        );
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    let m = cb.metrics();
    assert_eq!((m.ignored_calls, m.failed_calls), (20, 0));
    cb.call_classified(by_status, || async { Ok(503) })
        .await
        .unwrap();
    // an ignored result does not break a run of failures
    cb.call_classified(by_status, || async { Ok(404) })
        .await
        .unwrap();
    cb.call_classified(by_status, || async { Ok(502) })
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Open);
}

#[test]
fn open_period_grows_on_repeated_trips_up_to_the_cap_and_resets_on_close() {
    let clock = ManualClock::new();
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .open_timeout(Duration::from_secs(1))
        .open_backoff(OpenBackoff::new(2.0, Duration::from_secs(5)).unwrap())
        .clock(clock.clone())
        .listener(rec.clone())
        .build()
        .unwrap();
    record(&cb, false);
    for _ in 0..4 {
        let period = *rec.open_periods().last().unwrap();
        clock.advance(period);
        record(&cb, false); // the trial fails: open again, longer
    }
    assert_eq!(
        rec.open_periods(),
        [1, 2, 4, 5, 5].map(Duration::from_secs).to_vec()
    );
    clock.advance(Duration::from_secs(5));
    record(&cb, true); // closes: the next trip starts from open_timeout again
    record(&cb, false);
    assert_eq!(rec.open_periods().last(), Some(&Duration::from_secs(1)));
}

#[test]
fn open_period_jitter_stays_within_its_fraction() {
    let clock = ManualClock::new();
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(1)
        .open_timeout(Duration::from_secs(10))
        .open_backoff(
            OpenBackoff::new(1.0, Duration::from_secs(10))
                .unwrap()
                .with_jitter(0.2)
                .unwrap(),
        )
        .rng(SplitMix64::seeded(3))
        .clock(clock.clone())
        .listener(rec.clone())
        .build()
        .unwrap();
    for _ in 0..500 {
        record(&cb, false);
        cb.reset();
    }
    let periods = rec.open_periods();
    assert_eq!(periods.len(), 500);
    assert!(
        periods
            .iter()
            .all(|p| (8.0..=12.0).contains(&p.as_secs_f64()))
    );
    let distinct: std::collections::BTreeSet<_> = periods.iter().collect();
    assert!(distinct.len() > 400, "jitter should spread the periods");
    let (lo, hi) = periods.iter().fold((f64::MAX, 0f64), |(lo, hi), p| {
        (lo.min(p.as_secs_f64()), hi.max(p.as_secs_f64()))
    });
    assert!(
        lo < 8.5 && hi > 11.5,
        "jitter should reach near both ends: {lo}..{hi}"
    );
}

#[tokio::test]
async fn forced_open_refuses_everything_until_reset() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    cb.force_open();
    assert_eq!(
        (cb.state(), cb.mode()),
        (CircuitState::Open, CircuitMode::ForcedOpen)
    );
    clock.advance(Duration::from_secs(3600)); // no timer: it stays open
    assert!(matches!(
        cb.call(|| async { Ok::<_, ()>(()) }).await,
        Err(CircuitError::Open)
    ));
    assert!(!cb.can_execute());
    cb.reset();
    assert_eq!(
        (cb.state(), cb.mode()),
        (CircuitState::Closed, CircuitMode::Automatic)
    );
    cb.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
}

#[tokio::test]
async fn disabled_lets_everything_through_and_records_nothing() {
    let cb = CircuitBreaker::builder()
        .failure_threshold(1)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    cb.disable();
    for _ in 0..10 {
        assert!(matches!(
            cb.call(|| async { Err::<(), _>("x") }).await,
            Err(CircuitError::OperationFailed("x"))
        ));
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.metrics().total_calls, 0);
}

#[tokio::test]
async fn metrics_only_counts_and_tells_but_never_opens() {
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .failure_threshold(1)
        .clock(ManualClock::new())
        .listener(rec.clone())
        .build()
        .unwrap();
    cb.metrics_only();
    for _ in 0..10 {
        let _ = cb.call(|| async { Err::<(), _>("x") }).await;
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.metrics().failed_calls, 10);
    assert_eq!(rec.calls.lock().unwrap().len(), 10);
    cb.reset();
    let _ = cb.call(|| async { Err::<(), _>("x") }).await;
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "back under automatic control"
    );
}

#[test]
fn a_dropped_trial_permit_frees_its_slot_and_counts_as_ignored() {
    let clock = ManualClock::new();
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .half_open_max_calls(1)
        .success_threshold(1)
        .clock(clock.clone())
        .listener(rec.clone())
        .build()
        .unwrap();
    cb.trip();
    clock.advance(Duration::from_secs(30));
    let p = cb.try_acquire().unwrap();
    assert_eq!(cb.try_acquire().unwrap_err(), Rejected::HalfOpenFull);
    drop(p);
    assert_eq!(
        cb.state(),
        CircuitState::HalfOpen,
        "a cancelled trial decides nothing"
    );
    cb.try_acquire().expect("the slot is free again").success();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.metrics().ignored_calls, 1);
    let outcomes: Vec<_> = rec
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            CallOutcome::Rejected,
            CallOutcome::Cancelled,
            CallOutcome::Success
        ]
    );
}

#[tokio::test]
async fn a_cancelled_call_future_frees_its_trial_slot() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder()
        .half_open_max_calls(1)
        .success_threshold(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    cb.trip();
    clock.advance(Duration::from_secs(30));
    let never = cb.call(std::future::pending::<Result<(), ()>>);
    // poll it once so it takes the slot, then give up on it
    let r = tokio::time::timeout(Duration::from_millis(1), never).await;
    assert!(r.is_err());
    cb.call(|| async { Ok::<_, ()>(()) })
        .await
        .expect("slot freed by the cancelled call");
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[test]
fn an_outcome_from_before_a_trip_decides_nothing_after_it() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .half_open_max_calls(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let slow = cb.try_acquire().unwrap(); // admitted while Closed
    record(&cb, false); // trips
    clock.advance(Duration::from_secs(30));
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    slow.success(); // a Closed-era success must not close the circuit
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    let late = cb.try_acquire().unwrap(); // the one trial
    cb.reset();
    late.failure(); // a HalfOpen-era failure must not reopen the reset circuit
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.metrics().failed_calls, 2, "both still counted");
}

#[test]
fn state_changes_carry_reason_time_and_open_period() {
    let clock = ManualClock::new();
    let rec = Recorder::default();
    let cb = CircuitBreaker::builder()
        .name("reporting")
        .failure_threshold(2)
        .success_threshold(1)
        .open_timeout(Duration::from_secs(5))
        .clock(clock.clone())
        .listener(rec.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(1));
    record(&cb, false);
    record(&cb, false);
    clock.advance(Duration::from_secs(5));
    record(&cb, true);
    let changes = rec.changes.lock().unwrap();
    let summary: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.from,
                c.to,
                c.reason,
                c.at.as_nanos() / 1_000_000_000,
                c.open_for,
            )
        })
        .collect();
    use CircuitState::*;
    assert_eq!(
        summary,
        [
            (
                Closed,
                Open,
                TransitionReason::ConsecutiveFailures(2),
                1,
                Some(Duration::from_secs(5))
            ),
            (
                Open,
                HalfOpen,
                TransitionReason::OpenTimeoutElapsed,
                6,
                None
            ),
            (HalfOpen, Closed, TransitionReason::TrialsSucceeded, 6, None),
        ]
    );
    assert!(changes.iter().all(|c| &*c.name == "reporting"));
    assert_eq!(clock.now().as_nanos(), 6_000_000_000);
}

#[tokio::test]
async fn tower_layer_refuses_without_calling_the_inner_service() {
    use tower::{Service, ServiceBuilder, ServiceExt};
    let calls = Arc::new(Mutex::new(0));
    let cb = CircuitBreaker::builder()
        .failure_threshold(2)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let c = calls.clone();
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .service_fn(move |fail: bool| {
            *c.lock().unwrap() += 1;
            async move {
                if fail {
                    Err(std::io::Error::other("502"))
                } else {
                    Ok("ok")
                }
            }
        });
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "ok");
    for _ in 0..2 {
        let e = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert_eq!(e.into_inner().unwrap().to_string(), "502");
    }
    let e = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(matches!(e, CircuitError::Open));
    assert_eq!(
        *calls.lock().unwrap(),
        3,
        "the refused request never reached the service"
    );
    assert_eq!(cb.metrics().rejected_calls, 1);
}

#[test]
fn builder_rejects_settings_that_cannot_work_and_names_them() {
    let field = |b: CircuitBreakerBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(
        field(CircuitBreaker::builder().success_threshold(0)),
        "success_threshold"
    );
    assert_eq!(
        field(CircuitBreaker::builder().half_open_max_calls(0)),
        "half_open_max_calls"
    );
    assert_eq!(
        field(CircuitBreaker::builder().failure_threshold(0)),
        "failure_threshold"
    );
    assert_eq!(
        field(CircuitBreaker::builder().failure_rate(0.0)),
        "failure_rate"
    );
    assert_eq!(
        field(CircuitBreaker::builder().failure_rate(120.0)),
        "failure_rate"
    );
    assert_eq!(
        field(CircuitBreaker::builder().failure_rate(f64::NAN)),
        "failure_rate"
    );
    assert_eq!(
        field(
            CircuitBreaker::builder()
                .failure_rate(50.0)
                .sliding_window(SlidingWindow::Count { calls: 0 })
        ),
        "sliding_window"
    );
    assert_eq!(
        field(
            CircuitBreaker::builder()
                .failure_rate(50.0)
                .sliding_window(SlidingWindow::Time {
                    period: Duration::ZERO,
                    buckets: 10
                })
        ),
        "sliding_window"
    );
    assert_eq!(
        field(CircuitBreaker::builder().sliding_window(SlidingWindow::Count { calls: 10 })),
        "sliding_window"
    );
    assert_eq!(
        field(CircuitBreaker::builder().slow_calls(Duration::ZERO, 50.0)),
        "slow_calls.duration"
    );
    let e = CircuitBreaker::builder()
        .success_threshold(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("use 1 or more"), "{e}");
    assert!(OpenBackoff::new(f64::INFINITY, Duration::from_secs(1)).is_err());
    assert!(
        OpenBackoff::new(2.0, Duration::from_secs(1))
            .unwrap()
            .with_jitter(1.5)
            .is_err()
    );
}

#[test]
fn seed_constructor_takes_zero_settings_as_one() {
    let cb = CircuitBreaker::new(rempart::CircuitBreakerConfig {
        failure_threshold: 0,
        success_threshold: 0,
        open_timeout: Duration::from_secs(1),
        half_open_max_calls: 0,
    });
    record(&cb, true);
    assert_eq!(cb.state(), CircuitState::Closed, "a success never trips");
    record(&cb, false);
    assert_eq!(cb.state(), CircuitState::Open);
}

#[test]
fn initial_state_open_starts_its_timer_at_build() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder()
        .initial_state(CircuitState::Open)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(30));
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    let cb = CircuitBreaker::builder()
        .initial_state(CircuitState::HalfOpen)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(cb.state(), CircuitState::HalfOpen);
}

#[test]
fn tracing_listener_logs_each_transition_with_the_breakers_name() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let clock = ManualClock::new();
        let cb = CircuitBreaker::builder()
            .name("reporting")
            .listener(TracingListener)
            .clock(clock.clone())
            .build()
            .unwrap();
        cb.trip();
        clock.advance(Duration::from_secs(30));
        cb.state();
    });
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains("circuit opened")
            && lines[0].contains("breaker=reporting"),
        "{log}"
    );
    assert!(
        lines[1].contains("INFO") && lines[1].contains("from=Open to=HalfOpen"),
        "{log}"
    );
}

/// Issue 10: the failure run lives in 16 bits, so a threshold of 100,000 was
/// silently taken as 65,535. The builder now says so.
#[test]
fn a_failure_threshold_above_65535_is_refused_by_the_builder_naming_the_fix() {
    let e = CircuitBreaker::builder()
        .failure_threshold(100_000)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.policy(), e.field()),
        ("circuit breaker", "failure_threshold")
    );
    let text = e.to_string();
    assert!(text.contains("100000") && text.contains("65535"), "{text}");
    assert!(
        text.contains("failure_rate"),
        "names the alternative: {text}"
    );
    // The largest run it counts is accepted.
    assert!(
        CircuitBreaker::builder()
            .failure_threshold(MAX_FAILURE_THRESHOLD)
            .build()
            .is_ok()
    );
}

#[test]
fn the_seed_constructor_takes_a_threshold_above_65535_as_65535() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 100_000,
        ..Default::default()
    });
    for _ in 0..MAX_FAILURE_THRESHOLD - 1 {
        cb.try_acquire().unwrap().failure();
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    cb.try_acquire().unwrap().failure();
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "documented: clamped to 65,535"
    );
}
