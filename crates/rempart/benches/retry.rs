//! Retry's cost when the first attempt succeeds, against peers, and the cost
//! of one jittered delay.
//!
//! - `first_attempt/<name>`: one call whose operation is ready at once and
//!   succeeds, each retry built once outside the loop. `bare` polls the
//!   operation alone (the floor); `rempart` is `Retry::call`; `rempart_layer`
//!   is `RetryLayer` over a `service_fn` (it boxes its future); `backon` is
//!   `backon::Retryable::retry` with an `ExponentialBuilder` built once
//!   (`.retry(builder)` clones it per call, as its API requires); `tower_retry`
//!   is `tower::retry::Retry` with a policy that never retries.
//! - `jitter/<kind>`: `Jitter::apply` on a 1 s delay with a `SplitMix64`.
//!
//! All futures are polled with a no-op waker on one thread (no runtime): every
//! contestant is ready on its first poll.

use std::hint::black_box;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use criterion::{Criterion, criterion_group, criterion_main};
use rempart::retry::{Decision, Jitter, Retry, RetryLayer};
use rempart::rng::SplitMix64;
use tower::{Layer, Service, ServiceExt};

mod support;
use support::block_on;

async fn op() -> Result<u64, ()> {
    Ok(black_box(1))
}

#[derive(Clone)]
struct NeverRetry;

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for NeverRetry {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _req: &mut Req, _result: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn first_attempt(c: &mut Criterion) {
    let mut g = c.benchmark_group("first_attempt");
    g.bench_function("bare", |b| b.iter(|| block_on(op())));

    let retry = Retry::builder().build().unwrap();
    g.bench_function("rempart", |b| b.iter(|| block_on(retry.call(op))));

    let policy = |r: Result<&u64, &()>| {
        if r.is_ok() {
            Decision::Accept
        } else {
            Decision::Retry
        }
    };
    let mut layered =
        RetryLayer::new(retry.clone(), policy).layer(tower::service_fn(|_req: ()| op()));
    g.bench_function("rempart_layer", |b| {
        b.iter(|| block_on(async { layered.ready().await.unwrap().call(()).await }))
    });

    let backoff = ExponentialBuilder::default();
    g.bench_function("backon", |b| b.iter(|| block_on(op.retry(backoff))));

    let mut tower_retry =
        tower::retry::RetryLayer::new(NeverRetry).layer(tower::service_fn(|_req: ()| op()));
    g.bench_function("tower_retry", |b| {
        b.iter(|| block_on(async { tower_retry.ready().await.unwrap().call(()).await }))
    });
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("jitter");
    let (d, initial, max) = (
        Duration::from_secs(1),
        Duration::from_millis(100),
        Duration::from_secs(30),
    );
    for (name, j) in [
        ("none", Jitter::None),
        ("full", Jitter::Full),
        ("equal", Jitter::Equal),
        ("decorrelated", Jitter::Decorrelated),
        ("proportional", Jitter::Proportional(0.1)),
    ] {
        let mut rng = SplitMix64::seeded(7);
        g.bench_function(name, |b| {
            b.iter(|| j.apply(black_box(d), black_box(d), initial, max, &mut rng))
        });
    }
    g.finish();
}

criterion_group!(benches, first_attempt, jitter);
criterion_main!(benches);
