//! Degradation policies on the success path, against a bare call.
//!
//! - `success/bare`: an `async` block answering `Ok` (the floor).
//! - `success/fallback_chain`: the same through a three-step `FallbackChain`
//!   (cache lookup, default, degraded), none of which runs.
//! - `success/chaos_disabled`, `success/chaos_rate_0`: through a `Chaos`
//!   policy switched off (one atomic load) and on at rate 0 (a draw from the
//!   seeded generator behind a mutex).
//! - `success/stale_cache`: through a `StaleCache` on moka, which stores every
//!   success (one moka insert per call: the cost of being able to serve stale).
//! - `failure/fallback_default`, `failure/stale_cache_hit`: a failing call
//!   answered by the default value and by the cache.
//!
//! Every future is polled to completion on a no-op waker; none ever waits.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rempart::cache::StaleCache;
use rempart::chaos::Chaos;
use rempart::fallback::FallbackChain;
use rempart::rng::SplitMix64;

mod support;
use support::block_on;

fn success(c: &mut Criterion) {
    let mut g = c.benchmark_group("success");
    g.bench_function("bare", |b| {
        b.iter(|| block_on(async { Ok::<u64, ()>(black_box(1)) }))
    });
    let chain = FallbackChain::<u64, ()>::new("bench")
        .cached(|_| async { None })
        .default_value(0)
        .degraded(|_| 0);
    g.bench_function("fallback_chain", |b| {
        b.iter(|| block_on(chain.call(|| async { Ok(black_box(1)) })))
    });
    let off = Chaos::<u64, ()>::error(0.5, || ()).unwrap();
    off.disable();
    g.bench_function("chaos_disabled", |b| {
        b.iter(|| block_on(off.call(|| async { Ok(black_box(1)) })))
    });
    let on = Chaos::<u64, ()>::error(0.0, || ())
        .unwrap()
        .with_rng(SplitMix64::seeded(1));
    g.bench_function("chaos_rate_0", |b| {
        b.iter(|| block_on(on.call(|| async { Ok(black_box(1)) })))
    });
    let cache = StaleCache::<u64, u64>::new(Duration::from_secs(300));
    g.bench_function("stale_cache", |b| {
        b.iter(|| block_on(cache.call(7, || async { Ok::<_, ()>(black_box(1)) })))
    });
    g.finish();
}

fn failure(c: &mut Criterion) {
    let mut g = c.benchmark_group("failure");
    let chain = FallbackChain::<u64, ()>::new("bench").default_value(0);
    g.bench_function("fallback_default", |b| {
        b.iter(|| block_on(chain.call(|| async { Err(()) })))
    });
    let cache = StaleCache::<u64, u64>::new(Duration::from_secs(300));
    block_on(cache.store(7, 1));
    g.bench_function("stale_cache_hit", |b| {
        b.iter(|| block_on(cache.call(7, || async { Err::<u64, _>(()) })))
    });
    g.finish();
}

criterion_group!(benches, success, failure);
criterion_main!(benches);
