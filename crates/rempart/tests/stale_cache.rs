//! The stale-if-error cache: never instead of a healthy call, stale with its
//! age on failure, nothing after the TTL (judged on a manual clock).

use std::time::Duration;

use rempart::cache::{MokaStore, StaleCache, StaleStore, Stored};
use rempart::clock::{Instant, ManualClock};
use rempart::fallback::{Degraded, FallbackChain};

const TTL: Duration = Duration::from_secs(300); // seed 001: 5 minutes

#[tokio::test]
async fn a_healthy_call_is_always_served_fresh() {
    let clock = ManualClock::new();
    let cache = StaleCache::<&str, u32>::with_clock(TTL, clock.clone());
    cache.call("k", || async { Ok::<_, ()>(1) }).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let out = cache.call("k", || async { Ok::<_, ()>(2) }).await.unwrap();
    assert_eq!((out.value, out.mode), (2, Degraded::Fresh));
    // and the new value replaced the old one
    let out = cache.call("k", || async { Err(()) }).await.unwrap();
    assert_eq!(out.value, 2);
}

#[tokio::test]
async fn failure_serves_stale_with_its_age_and_the_header() {
    let clock = ManualClock::new();
    let cache = StaleCache::<String, &str>::with_clock(TTL, clock.clone());
    cache
        .call("users".into(), || async { Ok::<_, &str>("alice") })
        .await
        .unwrap();
    clock.advance(Duration::from_secs(90));
    let out = cache
        .call("users".into(), || async { Err("circuit open") })
        .await
        .unwrap();
    assert_eq!(out.value, "alice");
    assert_eq!(
        out.mode,
        Degraded::Stale {
            age: Duration::from_secs(90)
        }
    );

    let resp = rempart::fallback::Fallback {
        value: http::Response::new(out.value),
        mode: out.mode,
    }
    .into_marked_response();
    assert_eq!(resp.headers()["x-degraded-mode"], "true");
}

#[tokio::test]
async fn nothing_is_served_after_the_ttl_and_other_keys_miss() {
    let clock = ManualClock::new();
    let cache = StaleCache::<&str, u32>::with_clock(TTL, clock.clone());
    cache
        .call("k", || async { Ok::<_, &str>(1) })
        .await
        .unwrap();
    assert_eq!(
        cache.call("other", || async { Err("down") }).await,
        Err("down")
    );

    clock.advance(TTL - Duration::from_nanos(1));
    assert!(cache.call("k", || async { Err("down") }).await.is_ok());
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cache.call("k", || async { Err("down") }).await, Err("down"));
}

#[tokio::test]
async fn the_cache_plugs_into_a_chain_before_the_default() {
    // Owned keys: a cache lookup inside a chain's step must be `Send + 'static`.
    let clock = ManualClock::new();
    let cache = StaleCache::<String, u32>::with_clock(TTL, clock.clone());
    let c = cache.clone();
    let chain = FallbackChain::<u32, &str>::new("orders")
        .cached(move |_| {
            let c = c.clone();
            async move { c.lookup(&"orders".to_owned()).await }
        })
        .default_value(0);
    assert_eq!(
        chain.call(|| async { Err("down") }).await.unwrap().mode,
        Degraded::Default
    );
    cache.store("orders".to_owned(), 12).await;
    clock.advance(Duration::from_secs(3));
    let out = chain.call(|| async { Err("down") }).await.unwrap();
    assert_eq!(
        (out.value, out.mode),
        (
            12,
            Degraded::Stale {
                age: Duration::from_secs(3)
            }
        )
    );
}

#[tokio::test]
async fn moka_store_round_trips() {
    let store = MokaStore::<u8, &str>::new(10, TTL);
    let entry = Stored {
        value: "v",
        stored_at: Instant::from_nanos(5),
        ttl: TTL,
    };
    store.put(1, entry.clone()).await;
    assert_eq!(store.get(&1).await, Some(entry));
    assert_eq!(store.get(&2).await, None);
}

#[tokio::test]
async fn an_open_circuit_is_answered_from_cache_without_calling() {
    use rempart::{CircuitBreaker, CircuitBreakerConfig, CircuitError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let clock = ManualClock::new();
    let cache = StaleCache::<&str, u32>::with_clock(TTL, clock.clone());
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    let calls = AtomicUsize::new(0);
    let reporting = || {
        breaker.call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, std::io::Error>(7)
        })
    };
    assert_eq!(
        cache.call("report", reporting).await.unwrap().mode,
        Degraded::Fresh
    );

    breaker.trip();
    clock.advance(Duration::from_secs(20));
    let out = cache.call("report", reporting).await.unwrap();
    assert_eq!(
        (out.value, out.mode),
        (
            7,
            Degraded::Stale {
                age: Duration::from_secs(20)
            }
        )
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the open circuit kept the call from running"
    );

    let miss = cache.call("other", reporting).await;
    assert!(matches!(miss, Err(CircuitError::Open)), "{miss:?}");
}

/// A store written outside the crate, as the gateway's Redis store is.
#[derive(Debug, Default)]
struct MapStore(std::sync::Mutex<std::collections::HashMap<String, Stored<u32>>>);

impl StaleStore<String, u32> for MapStore {
    fn get<'a>(&'a self, key: &'a String) -> rempart::fallback::BoxFuture<'a, Option<Stored<u32>>> {
        let hit = self.0.lock().unwrap().get(key).cloned();
        Box::pin(async move { hit })
    }

    fn put(&self, key: String, entry: Stored<u32>) -> rempart::fallback::BoxFuture<'_, ()> {
        self.0.lock().unwrap().insert(key, entry);
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_store_chosen_at_run_time_serves_through_a_trait_object() {
    let clock = ManualClock::new();
    let store: Box<dyn StaleStore<String, u32>> = Box::new(MapStore::default());
    let cache = StaleCache::with_store(store, TTL, clock.clone());
    cache
        .call("k".to_owned(), || async { Ok::<_, &str>(5) })
        .await
        .unwrap();
    clock.advance(Duration::from_secs(4));
    let out = cache
        .call("k".to_owned(), || async { Err("down") })
        .await
        .unwrap();
    assert_eq!(
        (out.value, out.mode),
        (
            5,
            Degraded::Stale {
                age: Duration::from_secs(4)
            }
        )
    );
    clock.advance(TTL);
    assert_eq!(
        cache.call("k".to_owned(), || async { Err("down") }).await,
        Err("down")
    );
}

#[tokio::test]
async fn only_errors_the_predicate_chooses_are_answered_from_cache() {
    #[derive(Debug, PartialEq)]
    enum Upstream {
        Unavailable,
        NotFound,
    }
    let clock = ManualClock::new();
    let cache = StaleCache::<&str, u32>::with_clock(TTL, clock.clone());
    cache
        .call("k", || async { Ok::<_, Upstream>(3) })
        .await
        .unwrap();
    let transient = |e: &Upstream| *e == Upstream::Unavailable;
    let out = cache
        .call_when("k", || async { Err(Upstream::Unavailable) }, transient)
        .await
        .unwrap();
    assert_eq!(out.value, 3);
    assert_eq!(
        cache
            .call_when("k", || async { Err(Upstream::NotFound) }, transient)
            .await,
        Err(Upstream::NotFound),
        "a stale copy must not hide an answer the caller chose to pass through"
    );
}

#[tokio::test]
async fn metrics_count_stores_stale_answers_misses_and_pass_throughs() {
    use rempart::cache::StaleCacheMetrics;
    let clock = ManualClock::new();
    let cache = StaleCache::<&str, u32>::with_clock(TTL, clock.clone());
    let clone = cache.clone();
    cache
        .call("k", || async { Ok::<_, &str>(1) })
        .await
        .unwrap();
    clone.call("k", || async { Err("down") }).await.unwrap();
    assert!(cache.call("other", || async { Err("down") }).await.is_err());
    assert!(
        cache
            .call_when("k", || async { Err("not found") }, |e| *e != "not found")
            .await
            .is_err()
    );
    clock.advance(TTL);
    assert!(cache.call("k", || async { Err("down") }).await.is_err());
    assert_eq!(
        cache.metrics(),
        StaleCacheMetrics {
            stored: 1,
            served_stale: 1,
            missed: 2,
            passed_through: 1,
        }
    );
}
