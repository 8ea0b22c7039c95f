//! A call through five policies on the success path.
//!
//! - `five_policies/bare`: the operation alone (the floor).
//! - `five_policies/pipeline`: `Pipeline::call` with retry (3 attempts),
//!   circuit breaker (defaults), rate limit (never reached), bulkhead (100
//!   slots) and timeout (3 s, armed only if the attempt is not ready at once);
//!   the operation is ready on its first poll, as every contestant here.
//!
//! For scale (not measured here): Polly v8 publishes about 2 µs for five
//! strategies; tower-resilience's breaker alone costs about 200 ns in
//! `benches/circuit_breaker.rs`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rempart::CircuitBreaker;
use rempart::bulkhead::Bulkhead;
use rempart::pipeline::Pipeline;
use rempart::rate_limit::RateLimiter;
use rempart::retry::Retry;

mod support;
use support::block_on;

async fn op() -> Result<u64, ()> {
    Ok(black_box(1))
}

fn five_policies(c: &mut Criterion) {
    let mut g = c.benchmark_group("five_policies");
    g.bench_function("bare", |b| b.iter(|| block_on(op())));
    let pipeline = Pipeline::builder("orders")
        .retry(Retry::builder().build().unwrap())
        .circuit_breaker(CircuitBreaker::builder().name("orders").build().unwrap())
        .rate_limit(
            RateLimiter::builder()
                .rate(1_000_000_000, Duration::from_secs(1))
                .burst(1_000_000_000)
                .build()
                .unwrap(),
        )
        .bulkhead(
            Bulkhead::builder()
                .name("orders")
                .max_concurrent(100)
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(3))
        .build();
    g.bench_function("pipeline", |b| b.iter(|| block_on(pipeline.call(op))));
    g.finish();
}

criterion_group!(benches, five_policies);
criterion_main!(benches);
