//! A stale-if-error cache: every successful answer is stored with a TTL
//! (5 minutes in seed 001), and a stored answer is served only when the call
//! fails or is refused (an open circuit, a full bulkhead), never instead of a
//! healthy call.
//!
//! Storage is behind [`StaleStore`], so a gateway can keep entries in Redis;
//! [`MokaStore`] keeps them in process on `moka`.
//!
//! **Time.** Each entry carries the [`Instant`] it was stored at, read from
//! the cache's [`Clock`], and [`StaleCache`] judges age and expiry with that
//! clock, so tests drive expiry with a [`ManualClock`](crate::clock::ManualClock).
//! moka's own (real-time) TTL is set to the same TTL only to bound memory: it
//! never serves an entry our clock calls expired.
//!
//! ```
//! use std::time::Duration;
//! use rempart::cache::StaleCache;
//! use rempart::clock::ManualClock;
//! use rempart::fallback::Degraded;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let clock = ManualClock::new();
//! let cache = StaleCache::<&str, u32>::with_clock(Duration::from_secs(300), clock.clone());
//! let fresh = cache.call("report", || async { Ok::<_, &str>(7) }).await.unwrap();
//! assert_eq!(fresh.mode, Degraded::Fresh);
//!
//! clock.advance(Duration::from_secs(60));
//! let stale = cache.call("report", || async { Err("reporting is down") }).await.unwrap();
//! assert_eq!((stale.value, stale.mode), (7, Degraded::Stale { age: Duration::from_secs(60) }));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Instant, MonotonicClock};
use crate::fallback::{BoxFuture, Degraded, Fallback};
use crate::per_thread::PerThreadCounters;

/// A stored value, with when it was stored and for how long it may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<V> {
    /// The value.
    pub value: V,
    /// When it was stored, on the cache's clock.
    pub stored_at: Instant,
    /// How long after `stored_at` it may still be served.
    pub ttl: Duration,
}

/// Where a [`StaleCache`] keeps its entries: in process ([`MokaStore`]) or,
/// in the gateway, on Redis. A store may forget entries early; it must not
/// return a value for another key.
///
/// The trait is object-safe (its futures are boxed), so a store can be chosen
/// at run time: `StaleCache<K, V, Box<dyn StaleStore<K, V>>>`. One allocation
/// per lookup is small beside a network round trip to the store.
pub trait StaleStore<K, V>: Send + Sync + fmt::Debug + 'static {
    /// The entry for `key`, if still held.
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Option<Stored<V>>>;
    /// Stores `entry` under `key`, replacing any previous one.
    fn put(&self, key: K, entry: Stored<V>) -> BoxFuture<'_, ()>;
}

impl<K, V, T> StaleStore<K, V> for Box<T>
where
    T: StaleStore<K, V> + ?Sized,
{
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Option<Stored<V>>> {
        (**self).get(key)
    }

    fn put(&self, key: K, entry: Stored<V>) -> BoxFuture<'_, ()> {
        (**self).put(key, entry)
    }
}

/// An in-process [`StaleStore`] on `moka::future::Cache`, bounded in entries
/// and in (real) time.
#[derive(Clone)]
pub struct MokaStore<K, V> {
    cache: moka::future::Cache<K, Stored<V>>,
}

impl<K, V> fmt::Debug for MokaStore<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaStore")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl<K, V> MokaStore<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `max_entries` entries, each dropped (in real time) a little
    /// after `ttl`: [`StaleCache`] judges expiry on its own clock, and moka's
    /// TTL only bounds memory, so it must never drop an entry before ours.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        MokaStore {
            cache: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(memory_bound(ttl))
                .build(),
        }
    }

    /// At most `max_weight` in total, as `weigh` counts each entry (say, the
    /// bytes of its value), each dropped a little after `ttl` as in [`new`](Self::new).
    pub fn weighted(
        max_weight: u64,
        ttl: Duration,
        weigh: impl Fn(&K, &V) -> u32 + Send + Sync + 'static,
    ) -> Self {
        MokaStore {
            cache: moka::future::Cache::builder()
                .max_capacity(max_weight)
                .weigher(move |k: &K, v: &Stored<V>| weigh(k, &v.value))
                .time_to_live(memory_bound(ttl))
                .build(),
        }
    }
}

/// moka's TTL: ours plus a tenth (at least a second), so real-time eviction
/// never beats the expiry [`StaleCache`] reads on its clock.
fn memory_bound(ttl: Duration) -> Duration {
    ttl.saturating_add((ttl / 10).max(Duration::from_secs(1)))
}

impl<K, V> StaleStore<K, V> for MokaStore<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Option<Stored<V>>> {
        Box::pin(self.cache.get(key))
    }

    fn put(&self, key: K, entry: Stored<V>) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.insert(key, entry))
    }
}

/// Default bound on a [`StaleCache`]'s entries.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// What a [`StaleCache`] has done so far, summed over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StaleCacheMetrics {
    /// Fresh successes stored.
    pub stored: u64,
    /// Failures answered with a stored value.
    pub served_stale: u64,
    /// Failures the cache could not answer (no entry, or too old).
    pub missed: u64,
    /// Failures passed through because `call_when`'s predicate refused them.
    pub passed_through: u64,
}

const STORED: usize = 0;
const SERVED_STALE: usize = 1;
const MISSED: usize = 2;
const PASSED_THROUGH: usize = 3;

/// Stores every success, serves the stored value only on failure.
pub struct StaleCache<K, V, S = MokaStore<K, V>> {
    store: Arc<S>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    // Shared by clones; per-thread so counting never contends on the hot path.
    counts: Arc<PerThreadCounters<4>>,
    _types: std::marker::PhantomData<fn(K) -> V>,
}

impl<K, V, S> Clone for StaleCache<K, V, S> {
    fn clone(&self) -> Self {
        StaleCache {
            store: self.store.clone(),
            ttl: self.ttl,
            clock: self.clock.clone(),
            counts: self.counts.clone(),
            _types: std::marker::PhantomData,
        }
    }
}

impl<K, V, S: fmt::Debug> fmt::Debug for StaleCache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCache")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<K, V> StaleCache<K, V, MokaStore<K, V>>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An in-process cache serving values up to `ttl` old, on the machine's clock.
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, MonotonicClock::new())
    }

    /// The same, on `clock` (a `ManualClock` in tests).
    pub fn with_clock(ttl: Duration, clock: impl Clock) -> Self {
        Self::with_store(MokaStore::new(DEFAULT_MAX_ENTRIES, ttl), ttl, clock)
    }
}

impl<K, V, S> StaleCache<K, V, S>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: StaleStore<K, V>,
{
    /// A cache on `store`, serving values up to `ttl` old as read on `clock`.
    pub fn with_store(store: S, ttl: Duration, clock: impl Clock) -> Self {
        StaleCache {
            store: Arc::new(store),
            ttl,
            clock: Arc::new(clock),
            counts: Arc::default(),
            _types: std::marker::PhantomData,
        }
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What the cache (and its clones) have done so far.
    pub fn metrics(&self) -> StaleCacheMetrics {
        let [stored, served_stale, missed, passed_through] = self.counts.sum();
        StaleCacheMetrics {
            stored,
            served_stale,
            missed,
            passed_through,
        }
    }

    /// Stores `value` as the latest good answer for `key`.
    pub async fn store(&self, key: K, value: V) {
        self.store_for(key, value, self.ttl).await;
    }

    /// Stores `value` for `key`, to be served for at most `ttl` (capped at the
    /// cache's TTL): for a value whose source bounds its own staleness, as an
    /// HTTP answer's `stale-if-error` does.
    pub async fn store_for(&self, key: K, value: V, ttl: Duration) {
        let entry = Stored {
            value,
            stored_at: self.clock.now(),
            ttl: ttl.min(self.ttl),
        };
        self.store.put(key, entry).await;
        self.counts.bump(STORED);
    }

    /// The stored value for `key` and its age, unless missing or older than its TTL.
    pub async fn lookup(&self, key: &K) -> Option<(V, Duration)> {
        let entry = self.store.get(key).await?;
        let age = self.clock.now().saturating_duration_since(entry.stored_at);
        (age < entry.ttl).then_some((entry.value, age))
    }

    /// Runs `call`: a success is stored and returned fresh; a failure is
    /// answered with the stored value (if any, and young enough), else returned.
    pub async fn call<F, Fut, E>(&self, key: K, call: F) -> Result<Fallback<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.call_when(key, call, |_| true).await
    }

    /// As [`call`](Self::call), but only errors for which `serve_stale`
    /// returns `true` are answered from the cache; the others are returned
    /// as they are (say, a 404 that a stale copy must not hide).
    pub async fn call_when<F, Fut, E>(
        &self,
        key: K,
        call: F,
        serve_stale: impl FnOnce(&E) -> bool,
    ) -> Result<Fallback<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        match call().await {
            Ok(v) => {
                self.store(key, v.clone()).await;
                Ok(Fallback::fresh(v))
            }
            Err(e) if !serve_stale(&e) => {
                self.counts.bump(PASSED_THROUGH);
                Err(e)
            }
            Err(e) => match self.lookup(&key).await {
                Some((value, age)) => {
                    self.counts.bump(SERVED_STALE);
                    tracing::warn!(age_ms = age.as_millis() as u64, "serving stale value");
                    Ok(Fallback {
                        value,
                        mode: Degraded::Stale { age },
                    })
                }
                None => {
                    self.counts.bump(MISSED);
                    Err(e)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_value_stored_for_less_than_the_ttl_is_not_served_past_it() {
        let clock = ManualClock::new();
        let cache = StaleCache::<&str, u32>::with_clock(Duration::from_secs(300), clock.clone());
        cache.store_for("bounded", 1, Duration::from_secs(10)).await;
        cache
            .store_for("capped", 2, Duration::from_secs(3600))
            .await;
        clock.advance(Duration::from_secs(9));
        assert_eq!(cache.lookup(&"bounded").await.map(|(v, _)| v), Some(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.lookup(&"bounded").await, None);
        clock.advance(Duration::from_secs(290));
        assert_eq!(
            cache.lookup(&"capped").await,
            None,
            "the cache's TTL caps store_for"
        );
    }

    #[tokio::test]
    async fn a_weighted_store_serves_what_it_holds() {
        let store = MokaStore::<u32, Vec<u8>>::weighted(1_000, Duration::from_secs(60), |_, v| {
            u32::try_from(v.len()).unwrap_or(u32::MAX)
        });
        let cache = StaleCache::with_store(store, Duration::from_secs(60), ManualClock::new());
        cache.store(1, vec![0; 10]).await;
        assert_eq!(cache.lookup(&1).await.map(|(v, _)| v.len()), Some(10));
    }
}
