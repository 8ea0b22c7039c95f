//! Admission policies against the primitives under them.
//!
//! What is measured: the cost of one admission decision on the admitted path,
//! each subject built once outside the timed loop.
//!
//! - `rate_limit_direct/<name>`: one token bucket, `check()`. `governor_quanta`
//!   is governor's default (`RateLimiter::direct`, TSC clock);
//!   `governor_std_clock` is governor on `std::time::Instant`
//!   (`governor::clock::MonotonicClock`), the clock rempart's default reads;
//!   `rempart` is `rempart::rate_limit::RateLimiter` (governor underneath, on
//!   rempart's `MonotonicClock` through `GovernorClock`, plus per-thread counters).
//! - `rate_limit_keyed/<name>`: a bucket per `IpAddr`, one hot key,
//!   `check_key(&ip)`: governor's default keyed limiter (`DashMap`), the same
//!   on the std clock, and `rempart::rate_limit::KeyedRateLimiter`.
//! - `rate_limit_tower/<name>`: one request through a tower service wrapping
//!   a ready inner service (`service_fn` answering `Response<axum::body::Body>`
//!   with an empty body), `call` + poll of the response future, with a fixed
//!   key extractor. `inner` is the inner service alone (the floor);
//!   `tower_governor` is `tower_governor::Governor` (its `KeyExtractor` returns
//!   a fixed IP); `rempart` is `KeyedRateLimitLayer` with a closure returning it.
//! - `bulkhead/<name>`: take a slot and give it back. `semaphore` is
//!   `tokio::sync::Semaphore::try_acquire` + drop, `semaphore_owned` its
//!   `try_acquire_owned` on an `Arc`; `rempart`/`rempart_owned` are
//!   `Bulkhead::try_acquire`/`try_acquire_owned` + drop;
//!   `semaphore_async`/`rempart_async` poll `acquire()` once (ready at once).
//!   `adaptive`/`adaptive_tsc`: `AdaptiveLimiter::try_acquire` + `ignore()`
//!   (an AIMD limit of 100), for scale: it reads the clock once per slot to
//!   time the call, on rempart's default clock or the TSC.
//!
//! `rempart_tsc` is rempart on a TSC clock defined here (`quanta`, the same
//! `raw()` + `delta_as_nanos` reading as governor's `QuantaClock`). Since
//! rempart's own `MonotonicClock` now reads the TSC the same way, `rempart`
//! and `rempart_tsc` measure the same thing; the pair stays as a check. (Before
//! that change, `std::time::Instant`'s `clock_gettime`, about 23 ns here, was
//! most of a rempart decision.)
//!
//! Every quota is far above the bench's call rate, so every call is admitted.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::Quota;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use rempart::adaptive::{AdaptiveLimiter, Aimd};
use rempart::bulkhead::Bulkhead;
use rempart::rate_limit::{KeyedRateLimitLayer, KeyedRateLimiter, RateLimiter};
use tower::{Layer, Service};

mod support;
use support::block_on;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// About a billion per second with a burst of a billion: never refuses here.
fn quota() -> Quota {
    Quota::with_period(Duration::from_nanos(1))
        .unwrap()
        .allow_burst(NonZeroU32::new(1_000_000_000).unwrap())
}

/// rempart's `Clock` on the TSC, read as governor's `QuantaClock` reads it.
#[derive(Debug, Clone)]
struct Tsc(quanta::Clock);

impl rempart::clock::Clock for Tsc {
    #[inline]
    fn now(&self) -> rempart::clock::Instant {
        rempart::clock::Instant::from_nanos(self.0.delta_as_nanos(0, self.0.raw()))
    }
}

fn tsc() -> Tsc {
    Tsc(quanta::Clock::new())
}

fn rate_limit_direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_direct");
    let quanta = governor::RateLimiter::direct(quota());
    g.bench_function("governor_quanta", |b| {
        b.iter(|| black_box(quanta.check()).is_ok())
    });
    let std_clock: governor::RateLimiter<NotKeyed, InMemoryState, _, _> =
        governor::RateLimiter::direct_with_clock(quota(), governor::clock::MonotonicClock);
    g.bench_function("governor_std_clock", |b| {
        b.iter(|| black_box(std_clock.check()).is_ok())
    });
    let ours = RateLimiter::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000_000)
        .build()
        .unwrap();
    g.bench_function("rempart", |b| b.iter(|| black_box(ours.check()).is_ok()));
    let on_tsc = RateLimiter::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000_000)
        .clock(tsc())
        .build()
        .unwrap();
    g.bench_function("rempart_tsc", |b| {
        b.iter(|| black_box(on_tsc.check()).is_ok())
    });
    g.finish();
}

fn rate_limit_keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_keyed");
    let quanta = governor::RateLimiter::keyed(quota());
    g.bench_function("governor_quanta", |b| {
        b.iter(|| black_box(quanta.check_key(black_box(&IP))).is_ok())
    });
    let std_clock: governor::RateLimiter<_, _, _, NoOpMiddleware<std::time::Instant>> =
        governor::RateLimiter::new(
            quota(),
            DashMapStateStore::<IpAddr>::default(),
            governor::clock::MonotonicClock,
        );
    g.bench_function("governor_std_clock", |b| {
        b.iter(|| black_box(std_clock.check_key(black_box(&IP))).is_ok())
    });
    let ours = KeyedRateLimiter::<IpAddr>::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000_000)
        .build()
        .unwrap();
    g.bench_function("rempart", |b| {
        b.iter(|| black_box(ours.check(black_box(&IP))).is_ok())
    });
    let on_tsc = KeyedRateLimiter::<IpAddr>::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000_000)
        .clock(tsc())
        .build()
        .unwrap();
    g.bench_function("rempart_tsc", |b| {
        b.iter(|| black_box(on_tsc.check(black_box(&IP))).is_ok())
    });
    g.finish();
}

/// A fixed key, as tower_governor wants it.
#[derive(Clone, Copy)]
struct FixedIp;

impl tower_governor::key_extractor::KeyExtractor for FixedIp {
    type Key = IpAddr;

    fn extract<T>(&self, _req: &http::Request<T>) -> Result<IpAddr, tower_governor::GovernorError> {
        Ok(IP)
    }
}

type Req = http::Request<()>;
type Resp = http::Response<axum::body::Body>;

fn inner() -> impl Service<Req, Response = Resp, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(|_req: Req| async {
        Ok::<_, Infallible>(Resp::new(axum::body::Body::empty()))
    })
}

fn rate_limit_tower(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_tower");
    let mut bare = inner();
    g.bench_function("inner", |b| {
        b.iter(|| black_box(block_on(bare.call(Req::new(())))).is_ok())
    });

    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000_000)
        .key_extractor(FixedIp)
        .finish()
        .unwrap();
    let mut peer = tower_governor::GovernorLayer::new(config).layer(inner());
    g.bench_function("tower_governor", |b| {
        b.iter(|| {
            let r: Result<Resp, Infallible> = block_on(peer.call(Req::new(())));
            black_box(r).is_ok()
        })
    });

    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000_000)
        .build()
        .unwrap();
    let mut ours = KeyedRateLimitLayer::new(per_ip, |_req: &Req| IP).layer(inner());
    g.bench_function("rempart", |b| {
        b.iter(|| black_box(block_on(ours.call(Req::new(())))).is_ok())
    });
    let per_ip_tsc = KeyedRateLimiter::<IpAddr>::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000_000)
        .clock(tsc())
        .build()
        .unwrap();
    let mut on_tsc = KeyedRateLimitLayer::new(per_ip_tsc, |_req: &Req| IP).layer(inner());
    g.bench_function("rempart_tsc", |b| {
        b.iter(|| black_box(block_on(on_tsc.call(Req::new(())))).is_ok())
    });
    g.finish();
}

fn bulkhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead");
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    g.bench_function("semaphore", |b| {
        b.iter(|| drop(black_box(sem.try_acquire().unwrap())))
    });
    g.bench_function("semaphore_owned", |b| {
        b.iter(|| drop(black_box(Arc::clone(&sem).try_acquire_owned().unwrap())))
    });
    g.bench_function("semaphore_async", |b| {
        b.iter(|| drop(black_box(block_on(sem.acquire()).unwrap())))
    });
    let bh = Bulkhead::builder().max_concurrent(100).build().unwrap();
    g.bench_function("rempart", |b| {
        b.iter(|| drop(black_box(bh.try_acquire().unwrap())))
    });
    g.bench_function("rempart_owned", |b| {
        b.iter(|| drop(black_box(bh.try_acquire_owned().unwrap())))
    });
    g.bench_function("rempart_async", |b| {
        b.iter(|| drop(black_box(block_on(bh.acquire()).unwrap())))
    });
    let aimd = || Aimd::builder().initial_limit(100).build().unwrap();
    let adaptive = AdaptiveLimiter::builder(aimd()).build();
    g.bench_function("adaptive", |b| {
        b.iter(|| black_box(adaptive.try_acquire().unwrap()).ignore())
    });
    let adaptive_tsc = AdaptiveLimiter::builder(aimd()).clock(tsc()).build();
    g.bench_function("adaptive_tsc", |b| {
        b.iter(|| black_box(adaptive_tsc.try_acquire().unwrap()).ignore())
    });
    g.finish();
}

criterion_group!(
    benches,
    rate_limit_direct,
    rate_limit_keyed,
    rate_limit_tower,
    bulkhead
);
criterion_main!(benches);
