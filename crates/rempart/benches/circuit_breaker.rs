//! Per-call overhead of a circuit breaker, rempart against its peers.
//!
//! What is measured: the cost a breaker adds to one call whose future is
//! already ready (`async { Ok::<u64, ()>(black_box(1)) }`), with the breaker
//! Closed (`closed_call*`) or Open (`open_reject`). Every breaker is built once,
//! outside the timed loop. Every call is driven by the same tiny executor
//! ([`block_on`]): a no-op waker and a poll loop. No tokio runtime, so no
//! scheduler cost hides the breaker's own.
//!
//! Contestants, each configured the way its README shows a new user:
//! - `bare`: the operation alone, no breaker: the floor.
//! - `rempart`: `cb.call(|| op())`, default config (5 consecutive failures).
//! - `rempart_permit`: `cb.try_acquire()` + `op().await` + `permit.success()`.
//! - `recloser`: `AsyncRecloser::from(Recloser::default())`, `ar.call(op())`
//!   (failure rate over a 100-call ring buffer: it has no consecutive-failure rule).
//! - `failsafe`: `failsafe::futures::CircuitBreaker::call(op())` on
//!   `Config::new().failure_policy(consecutive_failures(5, constant(30 s))).build()`.
//! - `tower_resilience`: `CircuitBreakerLayer::builder().consecutive_failures(5)`
//!   around `service_fn(|()| op())`; each call is `svc.ready().await?.call(()).await`
//!   (`tower::ServiceExt::ready`, then `Service::call`), as a tower user writes it.
//!
//! Groups:
//! - `closed_call/1_thread/<name>`: one thread, criterion `iter`.
//! - `closed_call/2_threads/<name>`: two threads share one breaker (clones of
//!   one handle); each does `iters` calls after a barrier, and the figure is the
//!   wall time of the slower thread divided by `iters`: the time per call as
//!   each thread sees it. Ideal is the 1-thread figure.
//! - `open_reject/<name>`: a call refused by an Open breaker (tripped once before
//!   the loop, with an open period far longer than the run).
//! - `closed_call_options/{1_thread,2_threads}/<name>`: rempart with a 50 %
//!   failure-rate rule over a count window (100 calls) and over a time window
//!   (10 s in 10 buckets), next to its default (consecutive failures).
//!
//! `closed_call/2_threads/rempart_unshared` is a control: two threads, each with
//! its own breaker, so the figure shows what the machine itself charges for two
//! busy threads.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Duration;

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use failsafe::futures::CircuitBreaker as _;
use rempart::CircuitBreaker;
use rempart::circuit_breaker::SlidingWindow;
use tower::{Service, ServiceExt};

mod support;
use support::block_on;

/// An open period no run comes near, so `open_reject` never half-opens.
const LONG_OPEN: Duration = Duration::from_secs(3600);

/// The operation every contestant wraps: a future that is ready on first poll.
/// (`async fn op()` is the same future as `async { Ok::<u64, ()>(black_box(1)) }`.)
async fn op() -> Result<u64, ()> {
    Ok(black_box(1))
}

/// A failing operation, used only to trip peers before `open_reject`.
async fn failing_op() -> Result<u64, ()> {
    Err(())
}

/// Something that makes one call through a breaker; cloned once per thread.
trait Contestant: Clone + Send {
    fn call_once(&mut self) -> Result<u64, ()>;
}

#[derive(Clone)]
struct Bare;

impl Contestant for Bare {
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        block_on(op())
    }
}

#[derive(Clone)]
struct Rempart(CircuitBreaker);

impl Contestant for Rempart {
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        block_on(self.0.call(op)).map_err(|_| ())
    }
}

/// A control, not a contestant: each clone is a *new* breaker, so two threads
/// share nothing. Its 2-thread figure is what this machine charges two busy
/// threads anyway (two vCPUs need not be two idle physical cores); the
/// difference between `rempart` and this is what sharing one breaker costs.
struct RempartUnshared(CircuitBreaker);

impl Clone for RempartUnshared {
    fn clone(&self) -> Self {
        RempartUnshared(rempart_default())
    }
}

impl Contestant for RempartUnshared {
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        block_on(self.0.call(op)).map_err(|_| ())
    }
}

#[derive(Clone)]
struct RempartPermit(CircuitBreaker);

impl Contestant for RempartPermit {
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        let permit = self.0.try_acquire().map_err(|_| ())?;
        let out = block_on(op());
        permit.success();
        out
    }
}

#[derive(Clone)]
struct Recloser(recloser::AsyncRecloser);

impl Contestant for Recloser {
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        block_on(self.0.call(op())).map_err(|_| ())
    }
}

type FailsafeBreaker = failsafe::StateMachine<
    failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>,
    (),
>;

#[derive(Clone)]
struct Failsafe(FailsafeBreaker);

impl Contestant for Failsafe {
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        block_on(self.0.call(op())).map_err(|_| ())
    }
}

/// tower-resilience's breaker around a `service_fn` that returns `op()`.
///
/// The inner `service_fn` is generic over a closure type that cannot be named,
/// so the service is kept behind this one generic wrapper.
#[derive(Clone)]
struct Tower<S>(S);

impl<S> Contestant for Tower<S>
where
    S: Service<(), Response = u64> + Clone + Send,
{
    #[inline(always)]
    fn call_once(&mut self) -> Result<u64, ()> {
        block_on(async {
            let svc = self.0.ready().await.map_err(|_| ())?;
            svc.call(()).await.map_err(|_| ())
        })
    }
}

fn tower_layer(open: Duration) -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .wait_duration_in_open(open)
        .build()
        .expect("valid tower-resilience config")
}

/// tower-resilience's breaker around `service_fn(|()| op())`; `tripped` forces it
/// Open first (its `force_open`, the same transition as a trip).
fn tower_service(
    open: Duration,
    tripped: bool,
) -> Tower<impl Service<(), Response = u64> + Clone + Send> {
    use tower::Layer;
    let svc = tower_layer(open).layer(tower::service_fn(|()| op()));
    if tripped {
        block_on(svc.force_open());
    }
    Tower(svc)
}

fn rempart_default() -> CircuitBreaker {
    CircuitBreaker::new(rempart::CircuitBreakerConfig::default())
}

fn recloser_default() -> recloser::AsyncRecloser {
    recloser::AsyncRecloser::from(recloser::Recloser::default())
}

fn failsafe_breaker(open: Duration) -> FailsafeBreaker {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(open),
        ))
        .build()
}

/// Checks that a contestant succeeds in Closed before it is timed, so a
/// misconfigured breaker cannot post a fast figure by rejecting.
fn checked<C: Contestant>(mut c: C, name: &str) -> C {
    assert_eq!(
        c.call_once(),
        Ok(1),
        "{name} must let a Closed call through"
    );
    c
}

fn bench_one_thread<C: Contestant>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, c: C) {
    let mut c = checked(c, name);
    g.bench_function(name, |b| b.iter(|| c.call_once()));
}

/// Runs `iters` calls on each of two threads sharing one breaker, and returns
/// the wall time of the slower thread.
// Benches measure wall time, which is what `Instant::now` is for; the crate's
// ban on it keeps policy code on `rempart::clock`, not benches.
#[allow(clippy::disallowed_methods)]
fn two_threads<C: Contestant>(c: &C, iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut c = c.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    // One untimed call first, so first-use set-up on a new thread
                    // (a thread-local row, a lazy allocation) is not in the figure.
                    black_box(c.call_once()).expect("closed call succeeds");
                    barrier.wait();
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        black_box(c.call_once()).expect("closed call succeeds");
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

fn bench_two_threads<C: Contestant>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, c: C) {
    let c = checked(c, name);
    g.bench_function(name, |b| b.iter_custom(|iters| two_threads(&c, iters)));
}

fn closed_call(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("closed_call/1_thread");
    bench_one_thread(&mut g, "bare", Bare);
    bench_one_thread(&mut g, "rempart", Rempart(rempart_default()));
    bench_one_thread(&mut g, "rempart_permit", RempartPermit(rempart_default()));
    bench_one_thread(&mut g, "recloser", Recloser(recloser_default()));
    bench_one_thread(
        &mut g,
        "failsafe",
        Failsafe(failsafe_breaker(Duration::from_secs(30))),
    );
    bench_one_thread(
        &mut g,
        "tower_resilience",
        tower_service(Duration::from_secs(30), false),
    );
    g.finish();

    let mut g = cr.benchmark_group("closed_call/2_threads");
    bench_two_threads(&mut g, "bare", Bare);
    bench_two_threads(&mut g, "rempart", Rempart(rempart_default()));
    bench_two_threads(
        &mut g,
        "rempart_unshared",
        RempartUnshared(rempart_default()),
    );
    bench_two_threads(&mut g, "rempart_permit", RempartPermit(rempart_default()));
    bench_two_threads(&mut g, "recloser", Recloser(recloser_default()));
    bench_two_threads(
        &mut g,
        "failsafe",
        Failsafe(failsafe_breaker(Duration::from_secs(30))),
    );
    bench_two_threads(
        &mut g,
        "tower_resilience",
        tower_service(Duration::from_secs(30), false),
    );
    g.finish();
}

fn count_window() -> CircuitBreaker {
    CircuitBreaker::builder()
        .failure_threshold(0)
        .failure_rate(50.0)
        .sliding_window(SlidingWindow::Count { calls: 100 })
        .minimum_calls(10)
        .build()
        .expect("valid count-window config")
}

fn time_window() -> CircuitBreaker {
    CircuitBreaker::builder()
        .failure_threshold(0)
        .failure_rate(50.0)
        .sliding_window(SlidingWindow::Time {
            period: Duration::from_secs(10),
            buckets: 10,
        })
        .minimum_calls(10)
        .build()
        .expect("valid time-window config")
}

fn closed_call_options(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("closed_call_options/1_thread");
    bench_one_thread(&mut g, "rempart_consecutive", Rempart(rempart_default()));
    bench_one_thread(&mut g, "rempart_count_window", Rempart(count_window()));
    bench_one_thread(&mut g, "rempart_time_window", Rempart(time_window()));
    g.finish();

    let mut g = cr.benchmark_group("closed_call_options/2_threads");
    bench_two_threads(&mut g, "rempart_consecutive", Rempart(rempart_default()));
    bench_two_threads(&mut g, "rempart_count_window", Rempart(count_window()));
    bench_two_threads(&mut g, "rempart_time_window", Rempart(time_window()));
    g.finish();
}

/// Times a refused call; `c` must already be Open.
fn bench_reject<C: Contestant>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut c: C) {
    assert!(
        c.call_once().is_err(),
        "{name} must be Open before open_reject"
    );
    g.bench_function(name, |b| b.iter(|| c.call_once()));
}

fn open_reject(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("open_reject");

    let cb = CircuitBreaker::new(rempart::CircuitBreakerConfig {
        open_timeout: LONG_OPEN,
        ..Default::default()
    });
    cb.trip();
    bench_reject(&mut g, "rempart", Rempart(cb.clone()));
    bench_reject(&mut g, "rempart_permit", RempartPermit(cb));

    // recloser has no trip call: fill its 100-call ring buffer with failures.
    let rc =
        recloser::AsyncRecloser::from(recloser::Recloser::custom().open_wait(LONG_OPEN).build());
    for _ in 0..200 {
        let _ = block_on(rc.call(failing_op()));
    }
    bench_reject(&mut g, "recloser", Recloser(rc));

    // failsafe has no trip call either: five consecutive failures open it.
    let fs = failsafe_breaker(LONG_OPEN);
    for _ in 0..5 {
        let _ = block_on(fs.call(failing_op()));
    }
    bench_reject(&mut g, "failsafe", Failsafe(fs));

    bench_reject(&mut g, "tower_resilience", tower_service(LONG_OPEN, true));

    g.finish();
}

criterion_group!(benches, closed_call, closed_call_options, open_reject);
criterion_main!(benches);
