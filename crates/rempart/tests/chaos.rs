//! Chaos: exactly the calls a seeded draw picks are hit; latency, outcome,
//! run-time switch, bad rates, tower layer.

use std::time::Duration;

use rempart::chaos::{Chaos, ChaosLayer};
use rempart::rng::{Rng, SplitMix64};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Which of `n` calls a `rate` policy seeded with `seed` must hit.
fn expected_hits(seed: u64, rate: f64, n: usize) -> Vec<bool> {
    let mut r = SplitMix64::seeded(seed);
    (0..n).map(|_| r.next_f64() < rate).collect()
}

#[tokio::test]
async fn a_seeded_policy_hits_exactly_the_drawn_calls() {
    let chaos = Chaos::<u32, &str>::error(0.1, || "injected")
        .unwrap()
        .with_rng(SplitMix64::seeded(42));
    let mut hits = Vec::new();
    for _ in 0..10_000 {
        hits.push(chaos.call(|| async { Ok(1) }).await == Err("injected"));
    }
    assert_eq!(hits, expected_hits(42, 0.1, 10_000));
    let n = hits.iter().filter(|h| **h).count();
    assert_eq!(chaos.injected(), n as u64);
    assert_eq!(chaos.calls(), 10_000);
    assert!(
        (900..=1100).contains(&n),
        "a 10 % rate hit {n} of 10 000 calls"
    );
}

#[tokio::test]
async fn rates_zero_and_one_are_never_and_always() {
    let never = Chaos::<u32, ()>::error(0.0, || ()).unwrap();
    let always = Chaos::<u32, ()>::error(1.0, || ()).unwrap();
    for _ in 0..1000 {
        assert_eq!(never.call(|| async { Ok(1) }).await, Ok(1));
        assert_eq!(always.call(|| async { Ok(1) }).await, Err(()));
    }
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_call_and_outcome_replaces_it() {
    let slow = Chaos::<u32, ()>::latency(1.0, Duration::from_millis(800)).unwrap();
    let start = Instant::now();
    assert_eq!(slow.call(|| async { Ok(5) }).await, Ok(5));
    assert_eq!(start.elapsed(), Duration::from_millis(800));

    let fake = Chaos::<u32, ()>::outcome(1.0, || 99).unwrap();
    assert_eq!(
        fake.call(|| async { panic!("a replaced call must not run") })
            .await,
        Ok(99)
    );
}

#[tokio::test]
async fn the_switch_works_at_run_time_and_is_shared_by_clones() {
    let chaos = Chaos::<u32, ()>::error(1.0, || ()).unwrap();
    let switch = chaos.clone();
    switch.disable();
    assert_eq!(chaos.call(|| async { Ok(1) }).await, Ok(1));
    assert_eq!(chaos.calls(), 0, "a disabled policy draws nothing");
    switch.enable();
    assert_eq!(chaos.call(|| async { Ok(1) }).await, Err(()));
}

#[test]
fn a_rate_outside_zero_to_one_is_refused_with_a_reason() {
    for bad in [-0.1, 1.5, f64::NAN] {
        let err = Chaos::<u32, ()>::latency(bad, Duration::ZERO).unwrap_err();
        assert_eq!((err.policy(), err.field()), ("chaos", "rate"));
        assert!(err.to_string().contains("between 0.0 and 1.0"), "{err}");
    }
}

#[tokio::test]
async fn the_layer_injects_into_a_service() {
    let chaos = Chaos::<u32, &str>::error(0.5, || "injected")
        .unwrap()
        .with_rng(SplitMix64::seeded(3));
    let mut svc = ServiceBuilder::new()
        .layer(ChaosLayer::new(chaos.clone()))
        .service_fn(|x: u32| async move { Ok::<_, &str>(x) });
    let mut hits = Vec::new();
    for i in 0..200 {
        hits.push(svc.ready().await.unwrap().call(i).await.is_err());
    }
    assert_eq!(hits, expected_hits(3, 0.5, 200));
}
