//! Rate limiting: exact admissions on a manual clock, keyed isolation, idle
//! eviction, bounded memory with 100,000 keys, the sliding window's edges,
//! refusal headers, and the tower layers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rempart::clock::{ManualClock, TokioClock};
use rempart::rate_limit::{
    InMemoryWindowStore, KeyedRateLimitLayer, KeyedRateLimiter, RateLimitCollector, RateLimitError,
    RateLimitLayer, RateLimiter, SlidingWindowError, SlidingWindowLimiter,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

// Live bytes allocated by the current thread: what the 100,000-key test
// measures (per thread, so other tests running in parallel do not blur it).
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + layout.size() as i64));
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - layout.size() as i64));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() - layout.size() as i64 + new_size as i64));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn seed_limiter(clock: &ManualClock) -> RateLimiter {
    RateLimiter::builder()
        .name("seed")
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

#[test]
fn seed_bucket_admits_a_burst_of_20_then_exactly_10_per_second() {
    let clock = ManualClock::new();
    let limiter = seed_limiter(&clock);
    assert_eq!((0..100).filter(|_| limiter.check().is_ok()).count(), 20);
    // Then one every 100 ms: try every millisecond for 10 s.
    let mut admitted_at = Vec::new();
    for ms in 1..=10_000u64 {
        clock.advance(Duration::from_millis(1));
        if limiter.check().is_ok() {
            admitted_at.push(ms);
        }
        assert!(
            limiter.check().is_err(),
            "at most one per tick after the burst"
        );
    }
    assert_eq!(admitted_at.len(), 100);
    assert_eq!(admitted_at[..3], [100, 200, 300]);
    let m = limiter.metrics();
    assert_eq!(m.allowed, 120);
    assert_eq!(m.refused, 80 + 10_000 + 10_000 - 100);
}

#[test]
fn a_refill_never_exceeds_the_burst() {
    let clock = ManualClock::new();
    let limiter = seed_limiter(&clock);
    clock.advance(Duration::from_secs(3600));
    assert_eq!((0..100).filter(|_| limiter.check().is_ok()).count(), 20);
}

#[test]
fn refusal_carries_limit_remaining_reset_and_retry_after() {
    let clock = ManualClock::new();
    let limiter = seed_limiter(&clock);
    for _ in 0..20 {
        limiter.check().unwrap();
    }
    clock.advance(Duration::from_millis(30));
    let refused = limiter.check().unwrap_err();
    assert_eq!(refused.limiter(), "seed");
    assert_eq!(refused.limit(), 20);
    assert_eq!(refused.remaining(), 0);
    assert_eq!(refused.retry_after(), Duration::from_millis(70));
    assert_eq!(
        refused.reset(),
        Duration::from_millis(1970),
        "full again at t = 2 s"
    );
    assert_eq!(refused.window(), Duration::from_secs(2));

    let response: http::Response<String> = refused.to_response();
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    let h = response.headers();
    for (name, value) in [
        ("retry-after", "1"),
        ("x-ratelimit-limit", "20"),
        ("x-ratelimit-remaining", "0"),
        ("ratelimit-limit", "20"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "2"),
        ("ratelimit-policy", "20;w=2"),
    ] {
        assert_eq!(h[name], value, "header {name}");
    }
    assert!(response.body().contains("Too Many Requests"));

    // `apply` keeps the body and sets status and headers.
    let mut mine = http::Response::new("custom");
    refused.apply(&mut mine);
    assert_eq!(mine.status(), 429);
    assert_eq!(*mine.body(), "custom");
    assert_eq!(mine.headers()["retry-after"], "1");
}

#[test]
fn retry_after_is_rounded_up_to_whole_seconds() {
    let clock = ManualClock::new();
    let slow = RateLimiter::builder()
        .rate(1, Duration::from_millis(2500))
        .clock(clock.clone())
        .build()
        .unwrap();
    slow.check().unwrap();
    let refused = slow.check().unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_millis(2500));
    assert_eq!(refused.retry_after_secs(), 3);
    clock.advance(Duration::from_millis(2500));
    assert!(
        slow.check().is_ok(),
        "waiting the exact retry_after is enough"
    );
}

#[test]
fn each_key_has_its_own_bucket() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!((0..50).filter(|_| per_ip.check(&ip(1)).is_ok()).count(), 20);
    assert_eq!((0..50).filter(|_| per_ip.check(&ip(2)).is_ok()).count(), 20);
    clock.advance(Duration::from_millis(100));
    assert!(per_ip.check(&ip(1)).is_ok());
    assert!(per_ip.check(&ip(1)).is_err());
    assert_eq!(per_ip.len(), 2);
    assert_eq!(per_ip.metrics().allowed, 41);
}

#[test]
fn a_shared_key_admits_exactly_the_burst_across_threads() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock)
        .build()
        .unwrap();
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..1_000).filter(|_| per_ip.check(&ip(7)).is_ok()).count()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 20);
}

#[test]
fn idle_keys_are_forgotten_3_minutes_after_their_bucket_is_full_and_not_before() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap();
    per_ip.check(&ip(1)).unwrap(); // bucket full again at t = 100 ms
    clock.advance(Duration::from_secs(60));
    per_ip.check(&ip(2)).unwrap(); // full again at t = 60.1 s
    clock.advance(Duration::from_millis(120_100) - Duration::from_nanos(1));
    assert_eq!(per_ip.evict_idle(), 0, "ip 1 full for 3 min less 1 ns");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(per_ip.evict_idle(), 1, "ip 1 full for exactly 3 min");
    assert_eq!(per_ip.len(), 1);
    clock.advance(Duration::from_secs(60));
    assert_eq!(per_ip.evict_idle(), 1);
    assert!(per_ip.is_empty());
    // A forgotten key comes back with a full bucket, as it would have had.
    assert_eq!((0..30).filter(|_| per_ip.check(&ip(1)).is_ok()).count(), 20);
}

#[test]
fn a_key_in_use_is_never_forgotten() {
    let clock = ManualClock::new();
    let per_key = KeyedRateLimiter::<&'static str>::builder()
        .rate(10, Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(180))
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..10 {
        per_key.check(&"busy").unwrap();
        clock.advance(Duration::from_secs(179));
        assert_eq!(per_key.evict_idle(), 0);
    }
}

#[test]
fn after_a_burst_idleness_counts_from_when_the_bucket_is_full_again() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..20 {
        per_ip.check(&ip(1)).unwrap();
    }
    // The burst took 20 tokens: the bucket is full again at t = 2 s.
    clock.advance(Duration::from_millis(182_000) - Duration::from_nanos(1));
    assert_eq!(per_ip.evict_idle(), 0);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(per_ip.evict_idle(), 1);
}

/// Issue 10: with 1 token per hour and the default 3-minute idle timeout, the
/// key was forgotten 3 minutes after each admission and came back with a full
/// bucket: 21 requests admitted in an hour instead of 2.
#[test]
fn a_slow_limit_keeps_its_key_until_the_bucket_refills() {
    let clock = ManualClock::new();
    let resets = KeyedRateLimiter::<&'static str>::builder()
        .rate(1, Duration::from_secs(3600))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut admitted = 0;
    // The evictor runs every minute, and the client tries just after it, for an hour.
    for minute in 0..=60 {
        resets.evict_idle();
        if resets.check(&"alice@example.com").is_ok() {
            admitted += 1;
        }
        if minute < 60 {
            clock.advance(Duration::from_secs(60));
        }
    }
    assert_eq!(
        admitted, 2,
        "one at t = 0, the next once the hour's token is back"
    );
    assert_eq!(resets.len(), 1, "its bucket is empty again: still tracked");
    // Full again at t = 2 h; forgotten 3 minutes later, not before.
    clock.advance(Duration::from_secs(3600 + 179));
    assert_eq!(resets.evict_idle(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(resets.evict_idle(), 1);
}

#[test]
fn memory_stays_bounded_with_100_000_keys_per_round() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap();
    const KEYS: u32 = 100_000;
    let baseline = live_bytes();
    let mut peaks = Vec::new();
    for round in 0..3u32 {
        for n in 0..KEYS {
            per_ip.check(&ip(round * KEYS + n)).unwrap();
        }
        assert_eq!(per_ip.len(), KEYS as usize);
        let held = live_bytes() - baseline;
        peaks.push(held);
        // Each bucket is full again 100 ms after its one request.
        clock.advance(Duration::from_millis(180_100));
        assert_eq!(per_ip.evict_idle(), KEYS as usize);
        assert!(per_ip.is_empty());
        let after = live_bytes() - baseline;
        assert!(
            after < 64 * 1024,
            "round {round}: {after} bytes still held after evicting every key"
        );
    }
    let per_key = peaks[0] as f64 / f64::from(KEYS);
    eprintln!(
        "keyed rate limiter: {per_key:.1} bytes per IpAddr key at 100,000 keys (peaks {peaks:?})"
    );
    assert!(per_key < 128.0, "{per_key} bytes per key");
    assert!(
        peaks[2] <= peaks[0] + peaks[0] / 10,
        "the third round of 100,000 fresh keys held {} bytes, the first {}",
        peaks[2],
        peaks[0]
    );
}

#[tokio::test(start_paused = true)]
async fn the_spawned_evictor_forgets_idle_keys_on_tokio_time() {
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let evictor = per_ip.spawn_evictor(Duration::from_secs(60));
    per_ip.check(&ip(1)).unwrap(); // its bucket is full again at 100 ms
    tokio::time::sleep(Duration::from_secs(230)).await;
    assert_eq!(
        per_ip.len(),
        1,
        "sweeps at 60, 120 and 180 s: full for < 3 min"
    );
    tokio::time::sleep(Duration::from_secs(20)).await; // the sweep at 240 s
    assert_eq!(per_ip.len(), 0);
    // The evictor ends with the limiter.
    drop(per_ip);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(evictor.is_finished());
}

fn window_limiter(clock: &ManualClock) -> SlidingWindowLimiter {
    SlidingWindowLimiter::builder()
        .name("window")
        .limit(100, Duration::from_secs(60))
        .store(Arc::new(InMemoryWindowStore::new()))
        .clock(clock.clone())
        .build()
        .unwrap()
}

async fn admitted(limiter: &SlidingWindowLimiter, key: &str, tries: usize) -> usize {
    let mut n = 0;
    for _ in 0..tries {
        if limiter.check(key).await.is_ok() {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn sliding_window_admits_no_burst_at_a_window_edge() {
    let clock = ManualClock::new();
    let limiter = window_limiter(&clock);
    clock.advance(Duration::from_millis(59_900));
    assert_eq!(admitted(&limiter, "ip", 150).await, 100);
    // A fixed window would admit 100 more at t = 60 s; the sliding one still
    // sees the previous window's 100 at full weight.
    clock.advance(Duration::from_millis(100));
    let SlidingWindowError::Limited(refused) = limiter.check("ip").await.unwrap_err() else {
        panic!("expected a rate-limit refusal");
    };
    // One more fits once 1 % of the previous window's weight has gone: 0.6 s.
    assert_eq!(refused.retry_after(), Duration::from_millis(600));
    assert_eq!(refused.limit(), 100);
    assert_eq!(refused.reset(), Duration::from_secs(60));
    clock.advance(Duration::from_millis(600) - Duration::from_nanos(1));
    assert!(limiter.check("ip").await.is_err());
    clock.advance(Duration::from_nanos(1));
    assert!(limiter.check("ip").await.is_ok());
    assert!(limiter.check("ip").await.is_err());
}

#[tokio::test]
async fn sliding_window_weights_the_previous_window_by_what_remains_of_it() {
    let clock = ManualClock::new();
    let limiter = window_limiter(&clock);
    assert_eq!(admitted(&limiter, "ip", 100).await, 100);
    // Halfway into the next window, half the previous 100 still count.
    clock.advance(Duration::from_secs(90));
    assert_eq!(admitted(&limiter, "ip", 100).await, 50);
    // Refused requests took nothing: still exactly 50 at the same moment for a newcomer's twin.
    assert_eq!(admitted(&limiter, "other", 200).await, 100);
    assert_eq!(limiter.metrics().allowed, 250);
    assert_eq!(limiter.metrics().refused, 150);
}

#[tokio::test]
async fn sliding_window_reports_what_is_left() {
    let clock = ManualClock::new();
    let limiter = SlidingWindowLimiter::builder()
        .limit(3, Duration::from_secs(1))
        .clock(clock)
        .build()
        .unwrap();
    assert_eq!(limiter.check("k").await.unwrap(), 2);
    assert_eq!(limiter.check("k").await.unwrap(), 1);
    assert_eq!(limiter.check("k").await.unwrap(), 0);
    assert!(limiter.check("k").await.is_err());
}

#[test]
fn in_memory_window_store_forgets_stale_keys() {
    use rempart::rate_limit::SlidingWindowStore;
    let store = InMemoryWindowStore::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        store.hit("a", 1, Duration::ZERO).await.unwrap();
        store.hit("b", 5, Duration::ZERO).await.unwrap();
        let c = store.hit("b", 6, Duration::ZERO).await.unwrap();
        assert_eq!((c.previous, c.current), (1, 1));
        let c = store.hit("b", 8, Duration::ZERO).await.unwrap();
        assert_eq!(
            (c.previous, c.current),
            (0, 1),
            "a skipped window counts nothing"
        );
    });
    assert_eq!(store.forget_before(8), 1, "a's last hit is in window 1");
    assert_eq!(store.len(), 1);
}

#[test]
fn bad_settings_name_the_setting_and_a_fix() {
    let e = RateLimiter::builder().build().unwrap_err();
    assert_eq!(e.field(), "rate");
    let e = RateLimiter::builder()
        .rate(0, Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "rate");
    let e = RateLimiter::builder()
        .rate(10, Duration::from_secs(1))
        .burst(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "burst");
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = KeyedRateLimiter::<u64>::builder()
        .rate(10, Duration::from_secs(1))
        .idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "idle_timeout");
    let e = SlidingWindowLimiter::builder()
        .limit(0, Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "limit");
}

#[tokio::test]
async fn direct_layer_refuses_with_a_typed_error() {
    let clock = ManualClock::new();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(seed_limiter(&clock)))
        .service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) });
    for _ in 0..20 {
        assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
    }
    let err = svc.ready().await.unwrap().call(21).await.unwrap_err();
    let RateLimitError::Limited(refused) = &err else {
        panic!("expected a refusal, got {err}");
    };
    assert_eq!(refused.retry_after(), Duration::from_millis(100));
    assert!(
        err.to_string().contains("rate limit `seed` reached"),
        "{err}"
    );
}

#[tokio::test]
async fn keyed_layer_limits_each_client_separately() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap();
    let client = |req: &(IpAddr, &'static str)| req.0;
    let mut svc = ServiceBuilder::new()
        .layer(KeyedRateLimitLayer::new(per_ip, client))
        .service_fn(|req: (IpAddr, &'static str)| async move { Ok::<_, std::io::Error>(req.1) });
    let mut count = 0;
    for _ in 0..25 {
        if svc.ready().await.unwrap().call((ip(1), "a")).await.is_ok() {
            count += 1;
        }
    }
    assert_eq!(count, 20);
    assert_eq!(
        svc.ready().await.unwrap().call((ip(2), "b")).await.unwrap(),
        "b"
    );
}

#[test]
fn prometheus_shows_refusals_and_tracked_keys() {
    let clock = ManualClock::new();
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .name("per_ip")
        .rate(1, Duration::from_secs(1))
        .clock(clock)
        .build()
        .unwrap();
    let collector = RateLimitCollector::new();
    collector.add(&per_ip);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    per_ip.check(&ip(1)).unwrap();
    per_ip.check(&ip(2)).unwrap();
    per_ip.check(&ip(2)).unwrap_err();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"rate_limit_rejected_total{limiter="per_ip"} 1"#,
        r#"rate_limit_allowed_total{limiter="per_ip"} 2"#,
        r#"rate_limit_keys{limiter="per_ip"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

#[test]
fn a_refusal_is_a_debug_event_naming_the_limiter() {
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
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
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let clock = ManualClock::new();
        let limiter = seed_limiter(&clock);
        for _ in 0..21 {
            let _ = limiter.check();
        }
    });
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = log.lines().collect();
    assert_eq!(lines.len(), 1, "only the 21st request is refused: {log}");
    assert!(
        lines[0].contains("DEBUG")
            && lines[0].contains("rate limit refused")
            && lines[0].contains("limiter=seed")
            && lines[0].contains("retry_after=100ms"),
        "{log}"
    );
}

#[test]
fn an_admitted_check_allocates_nothing() {
    let clock = ManualClock::new();
    let direct = seed_limiter(&clock);
    let per_ip = KeyedRateLimiter::<IpAddr>::builder()
        .rate(10, Duration::from_secs(1))
        .burst(20)
        .clock(clock.clone())
        .build()
        .unwrap();
    // First calls make this thread's counter row and insert the key.
    direct.check().unwrap();
    per_ip.check(&ip(1)).unwrap();
    let n = allocations_during(|| {
        for _ in 0..10 {
            direct.check().unwrap();
            per_ip.check(&ip(1)).unwrap();
        }
    });
    assert_eq!(n, 0);
}

/// A store whose backend is down.
#[derive(Debug)]
struct Unreachable;

impl rempart::rate_limit::SlidingWindowStore for Unreachable {
    fn hit<'a>(
        &'a self,
        _key: &'a str,
        _window: u64,
        _keep_for: Duration,
    ) -> rempart::rate_limit::StoreFuture<'a, rempart::rate_limit::WindowCounts> {
        Box::pin(async {
            Err(rempart::rate_limit::StoreError::new(
                "connection refused (redis:6379)",
            ))
        })
    }

    fn undo<'a>(&'a self, _key: &'a str, _window: u64) -> rempart::rate_limit::StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn sliding_layer_refuses_when_its_store_is_down_unless_told_to_fail_open() {
    use rempart::rate_limit::SlidingWindowLayer;
    let limiter = SlidingWindowLimiter::builder()
        .name("shared")
        .limit(100, Duration::from_secs(60))
        .store(Arc::new(Unreachable))
        .build()
        .unwrap();
    let handler = tower::service_fn(|_ip: IpAddr| async { Ok::<_, std::io::Error>("ok") });
    let key = |ip: &IpAddr| ip.to_string();

    let mut closed = SlidingWindowLayer::new(limiter.clone(), key).layer(handler);
    let err = closed.ready().await.unwrap().call(ip(1)).await.unwrap_err();
    assert!(matches!(err, RateLimitError::Store(_)), "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");

    let mut open = SlidingWindowLayer::new(limiter, key)
        .fail_open()
        .layer(handler);
    assert_eq!(open.ready().await.unwrap().call(ip(1)).await.unwrap(), "ok");
}

#[tokio::test]
async fn sliding_layer_limits_each_key() {
    use rempart::rate_limit::SlidingWindowLayer;
    let clock = ManualClock::new();
    let mut svc = ServiceBuilder::new()
        .layer(SlidingWindowLayer::new(
            window_limiter(&clock),
            |ip: &IpAddr| ip.to_string(),
        ))
        .service_fn(|_ip: IpAddr| async { Ok::<_, std::io::Error>(()) });
    let mut ok = 0;
    for _ in 0..120 {
        if svc.ready().await.unwrap().call(ip(1)).await.is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 100);
    assert!(svc.ready().await.unwrap().call(ip(2)).await.is_ok());
}
