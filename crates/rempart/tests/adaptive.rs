//! Adaptive concurrency: each algorithm's limit moves exactly as its rule
//! says for a given latency sequence; the limiter refuses over the limit and
//! feeds it latencies measured on a manual clock.

use std::time::Duration;

use rempart::adaptive::{
    AdaptiveCollector, AdaptiveError, AdaptiveLayer, AdaptiveLimiter, Aimd, Gradient2,
    LimitAlgorithm, Sample, Vegas,
};
use rempart::clock::ManualClock;
use tower::{Service, ServiceBuilder, ServiceExt};

fn sample(ms: u64, in_flight: u32) -> Sample {
    Sample {
        rtt: Duration::from_millis(ms),
        in_flight,
        dropped: false,
    }
}

fn dropped(in_flight: u32) -> Sample {
    Sample {
        dropped: true,
        ..sample(5, in_flight)
    }
}

#[test]
fn aimd_adds_one_per_success_and_cuts_by_a_tenth_on_overload_within_bounds() {
    let mut aimd = Aimd::builder()
        .initial_limit(10)
        .min_limit(5)
        .max_limit(12)
        .build()
        .unwrap();
    let ups: Vec<u32> = (0..3).map(|_| aimd.update(sample(5, 10))).collect();
    assert_eq!(ups, [11, 12, 12], "capped at max");
    let downs: Vec<u32> = (0..7).map(|_| aimd.update(dropped(12))).collect();
    assert_eq!(
        downs,
        [10, 9, 8, 7, 6, 5, 5],
        "floor(× 0.9), floored at min"
    );
}

#[test]
fn aimd_treats_a_call_over_its_timeout_as_overload() {
    let mut aimd = Aimd::builder()
        .initial_limit(10)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(aimd.update(sample(1_000, 10)), 11, "at the timeout: fine");
    assert_eq!(aimd.update(sample(1_001, 10)), 9, "over it: overload");
}

#[test]
fn aimd_does_not_grow_while_the_limit_is_not_in_use() {
    let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
    assert_eq!(
        aimd.update(sample(5, 4)),
        10,
        "4 in flight of 10: no evidence"
    );
    assert_eq!(aimd.update(sample(5, 5)), 11, "half in use: grow");
}

#[test]
fn gradient2_grows_by_a_smoothed_queue_while_latency_is_steady() {
    let mut g = Gradient2::builder()
        .initial_limit(20)
        .min_limit(10)
        .build()
        .unwrap();
    let limits: Vec<u32> = (0..5).map(|_| g.update(sample(10, 40))).collect();
    assert_eq!(limits, [20, 21, 22, 23, 24]);
    assert!((g.estimated_limit() - 24.0).abs() < 1e-9);
}

#[test]
fn gradient2_shrinks_when_latency_rises_and_stops_at_its_minimum() {
    let mut g = Gradient2::builder()
        .initial_limit(20)
        .min_limit(10)
        .max_limit(100)
        .build()
        .unwrap();
    for _ in 0..10 {
        g.update(sample(10, 100)); // warm-up: long-term RTT = 10 ms
    }
    assert!((g.estimated_limit() - 28.0).abs() < 1e-9);
    // gradient = 1.5 × long / 30 ms ≈ 0.503: each sample takes ~10 % off.
    let limits: Vec<u32> = (0..6).map(|_| g.update(sample(30, 100))).collect();
    assert_eq!(limits, [26, 24, 22, 21, 20, 18]);
    assert!((g.estimated_limit() - 18.888_863_987_359_386).abs() < 1e-9);
    // Held at 30 ms, the long-term average catches up and the limit recovers:
    // 30 ms becomes the new normal.
    let mut settled = g.clone();
    for _ in 0..2_000 {
        settled.update(sample(30, 1_000));
    }
    assert!(settled.estimated_limit() > 28.0);
    // Latency that keeps doubling keeps the gradient at its floor of 0.5.
    let mut rtt = 30;
    for _ in 0..30 {
        rtt *= 2;
        g.update(sample(rtt, 100));
    }
    assert_eq!(g.update(sample(rtt * 2, 100)), 10, "never below min_limit");
}

#[test]
fn gradient2_ignores_samples_while_app_limited() {
    let mut g = Gradient2::builder().initial_limit(20).build().unwrap();
    for _ in 0..5 {
        assert_eq!(g.update(sample(10, 9)), 20, "9 in flight < 20 / 2");
    }
    assert!((g.estimated_limit() - 20.0).abs() < 1e-12);
}

#[test]
fn vegas_grows_with_no_queue_and_shrinks_with_a_long_one() {
    let mut v = Vegas::builder().initial_limit(10).build().unwrap();
    assert_eq!(v.update(sample(10, 10)), 10, "first sample sets rtt_noload");
    assert_eq!(v.rtt_noload(), Duration::from_millis(10));
    assert_eq!(v.update(sample(10, 10)), 16, "no queue: + 6 log10(10)");
    // RTT doubles: queue = ceil(16 × 0.5) = 8 > 6 log10(16) ≈ 7.2: − log10(16).
    assert_eq!(v.update(sample(20, 16)), 14);
    // A faster call lowers rtt_noload and leaves the limit.
    assert_eq!(v.update(sample(5, 16)), 14);
    assert_eq!(v.rtt_noload(), Duration::from_millis(5));
    let before = v.update(sample(5, 16));
    assert!(v.update(dropped(16)) < before, "a dropped call shrinks it");
}

#[test]
fn algorithms_reject_settings_that_cannot_work() {
    assert_eq!(
        Aimd::builder().min_limit(0).build().unwrap_err().field(),
        "min_limit"
    );
    assert_eq!(
        Aimd::builder()
            .min_limit(10)
            .max_limit(5)
            .build()
            .unwrap_err()
            .field(),
        "max_limit"
    );
    assert_eq!(
        Aimd::builder()
            .backoff_ratio(1.0)
            .build()
            .unwrap_err()
            .field(),
        "backoff_ratio"
    );
    assert_eq!(
        Gradient2::builder()
            .initial_limit(5)
            .build()
            .unwrap_err()
            .field(),
        "initial_limit",
        "Gradient2's default minimum is 20"
    );
    assert_eq!(
        Gradient2::builder()
            .rtt_tolerance(0.5)
            .build()
            .unwrap_err()
            .field(),
        "rtt_tolerance"
    );
    assert_eq!(
        Vegas::builder().smoothing(0.0).build().unwrap_err().field(),
        "smoothing"
    );
}

fn aimd_limiter(initial: u32, clock: &ManualClock) -> AdaptiveLimiter {
    AdaptiveLimiter::builder(
        Aimd::builder()
            .initial_limit(initial)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .name("orders")
    .clock(clock.clone())
    .build()
}

#[test]
fn the_limiter_refuses_exactly_at_its_limit_and_measures_latency_on_its_clock() {
    let clock = ManualClock::new();
    let limiter = aimd_limiter(3, &clock);
    let permits: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
    let refused = limiter.try_acquire().unwrap_err();
    assert_eq!(refused.limit, 3);
    assert_eq!(&*refused.name, "orders");
    assert_eq!(limiter.in_flight(), 3);
    // The first call (1 in flight at its start, < 3 / 2) teaches nothing; the
    // others (2 and 3 in flight) each add one.
    clock.advance(Duration::from_millis(100));
    for p in permits {
        p.success();
    }
    assert_eq!(limiter.limit(), 5);
    assert_eq!(limiter.in_flight(), 0);
    // A call slower than the 1 s timeout is overload: floor(5 × 0.9) = 4.
    let p = limiter.try_acquire().unwrap();
    let q = limiter.try_acquire().unwrap();
    let r = limiter.try_acquire().unwrap();
    clock.advance(Duration::from_millis(1_001));
    r.success();
    assert_eq!(limiter.limit(), 4);
    q.ignore();
    drop(p);
    assert_eq!(
        limiter.limit(),
        4,
        "ignored and unrecorded calls teach nothing"
    );
    assert_eq!(limiter.in_flight(), 0);
    let m = limiter.metrics();
    assert_eq!((m.admitted, m.refused, m.limit), (6, 1, 4));
}

#[test]
fn the_limit_bounds_calls_in_flight_across_threads() {
    let limiter =
        AdaptiveLimiter::builder(Aimd::builder().initial_limit(4).build().unwrap()).build();
    let max_seen = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    if let Ok(p) = limiter.try_acquire() {
                        max_seen
                            .fetch_max(limiter.in_flight(), std::sync::atomic::Ordering::SeqCst);
                        p.ignore();
                    }
                }
            });
        }
    });
    assert!(max_seen.into_inner() <= 4);
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test]
async fn the_layer_counts_errors_as_overload() {
    let clock = ManualClock::new();
    let limiter = aimd_limiter(10, &clock);
    let mut svc = ServiceBuilder::new()
        .layer(AdaptiveLayer::new(limiter.clone()))
        .service_fn(|fail: bool| async move {
            if fail {
                Err(std::io::Error::other("503 from upstream"))
            } else {
                Ok(())
            }
        });
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(matches!(err, AdaptiveError::OperationFailed(_)));
    assert_eq!(limiter.limit(), 9);
    assert!(
        limiter
            .call(|| async { Ok::<_, ()>(()) })
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(limiter.limit(), 9, "1 of 9 in flight: app-limited");
}

#[test]
fn the_current_limit_is_exported_for_prometheus() {
    let clock = ManualClock::new();
    let limiter = aimd_limiter(3, &clock);
    let collector = AdaptiveCollector::new();
    collector.add(&limiter);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    let _a = limiter.try_acquire().unwrap();
    let b = limiter.try_acquire().unwrap();
    b.success();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"adaptive_concurrency_limit{service="orders"} 4"#,
        r#"adaptive_concurrency_inflight{service="orders"} 1"#,
        r#"adaptive_concurrency_rejected_total{service="orders"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}
