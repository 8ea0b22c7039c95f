//! Hot paths allocate nothing: the breaker's Closed-state call (once the
//! calling thread has its counter row, made on its first call through that
//! breaker) and a retry whose first attempt succeeds.

use rempart::circuit_breaker::CircuitBreakerLayer;
use rempart::{CircuitBreaker, CircuitBreakerConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future was not ready"),
    }
}

#[test]
fn closed_call_allocates_nothing() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig::default());
    poll_ready(cb.call(|| async { Ok::<_, ()>(1) })).unwrap(); // makes this thread's row
    let n = allocations_during(|| {
        for i in 0..10_000u64 {
            let r = poll_ready(cb.call(|| async move { if i % 3 == 0 { Err(i) } else { Ok(i) } }));
            std::hint::black_box(r).ok();
        }
    });
    assert_eq!(n, 0, "allocations in 10,000 Closed-state calls");
}

#[test]
fn permits_and_rejections_allocate_nothing() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig::default());
    cb.try_acquire().unwrap().success();
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            cb.try_acquire().unwrap().success();
        }
        cb.trip();
        for _ in 0..10_000 {
            assert!(cb.try_acquire().is_err());
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn tower_service_call_allocates_nothing() {
    use tower::{Layer, Service};
    let cb = CircuitBreaker::new(CircuitBreakerConfig::default());
    let mut svc = CircuitBreakerLayer::new(cb)
        .layer(tower::service_fn(|x: u64| async move { Ok::<_, ()>(x) }));
    poll_ready(svc.call(1)).unwrap();
    let n = allocations_during(|| {
        for i in 0..10_000 {
            poll_ready(svc.call(i)).unwrap();
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn a_retry_whose_first_attempt_succeeds_allocates_nothing() {
    let retry = rempart::retry::Retry::builder().build().unwrap();
    poll_ready(retry.call(|| async { Ok::<_, ()>(1) })).unwrap(); // makes this thread's row
    let n = allocations_during(|| {
        for i in 0..10_000u64 {
            let r = poll_ready(retry.call(|| async move { Ok::<_, ()>(i) }));
            std::hint::black_box(r).ok();
        }
    });
    assert_eq!(n, 0, "allocations in 10,000 first-attempt successes");
}

fn five_policy_pipeline() -> rempart::pipeline::Pipeline {
    use rempart::bulkhead::Bulkhead;
    use rempart::rate_limit::RateLimiter;
    use rempart::retry::Retry;
    use std::time::Duration;
    rempart::pipeline::Pipeline::builder("orders")
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
        .build()
}

#[test]
fn a_five_policy_pipeline_allocates_nothing_on_success() {
    let pipeline = five_policy_pipeline();
    poll_ready(pipeline.call(|| async { Ok::<_, ()>(1) })).unwrap();
    let n = allocations_during(|| {
        for i in 0..10_000u64 {
            let r = poll_ready(pipeline.call(|| async move { Ok::<_, ()>(i) }));
            std::hint::black_box(r).ok();
        }
    });
    assert_eq!(
        n, 0,
        "allocations in 10,000 successful calls through five policies"
    );
}
