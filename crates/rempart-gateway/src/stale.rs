//! The stale-if-error store: the last good answer to each GET, served with
//! `X-Degraded-Mode: true` when the service cannot answer (seed 001 case 4).
//!
//! What may be kept, and under which key, is decided in [`crate::cacheable`]:
//! only shareable answers, keyed per user when a service opts in, one answer
//! per value of the headers named in `Vary`. Answers whose body is at most
//! [`MAX_BODY`] bytes (declared in `Content-Length`) are kept for `cache.ttl`,
//! or less when the upstream's `stale-if-error` says so, and only ever served
//! when the service did not answer well: open circuit, full bulkhead,
//! timeout, unreachable host, or a 5xx.
//!
//! Storage is the library's [`StaleCache`] over a boxed [`StaleStore`]: in
//! process, or with `cache.backend = "redis"` Redis in front of the in-process
//! copy, so every instance can serve what any of them saw. Writes to Redis
//! leave the request path (spawned, at most [`REDIS_WRITES`] at a time, the
//! rest dropped); a read falls back to the in-process copy when Redis does
//! not answer or its breaker is open.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use rempart::cache::{MokaStore, StaleCache, StaleStore, Stored};
use rempart::clock::{Clock, Instant, UnixClock};
use rempart::fallback::BoxFuture;
use tokio::sync::Semaphore;

use crate::cacheable::{KEPT_HEADERS, Keep, variant_key};
use crate::redis_backend::RedisBackend;

/// Largest body kept (bigger answers stream through uncached).
pub const MAX_BODY: u64 = 1024 * 1024;
/// A kept answer younger than this is not replaced: under load the same GET
/// is answered many times a second, and reading each answer whole to store it
/// again would cost every one of them (store-and-forward instead of streaming).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Most bytes of bodies kept in process.
pub const MEMORY_BUDGET: u64 = 256 * 1024 * 1024;
/// Redis writes in flight at most; past it a write is dropped (the in-process
/// copy still has the answer), so a Redis that does not answer cannot pile up tasks.
pub const REDIS_WRITES: usize = 64;

/// A kept answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleAnswer {
    /// Its status.
    pub status: u16,
    /// The headers a client needs to read its body ([`KEPT_HEADERS`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: Bytes,
}

impl StaleAnswer {
    /// The answer with `status`, `body` and the kept headers of `headers`.
    pub fn new(status: u16, headers: &HeaderMap, body: Bytes) -> StaleAnswer {
        let headers = KEPT_HEADERS
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect();
        StaleAnswer {
            status,
            headers,
            body,
        }
    }
}

/// What a key holds: an answer, or (under a base key, when the answer varies)
/// the names of the request headers whose values select the answer's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleEntry {
    /// A kept answer.
    Answer(StaleAnswer),
    /// The answer varies on these request headers: look it up under
    /// [`variant_key`] of the base key and these names.
    Varies(Vec<HeaderName>),
}

impl StaleEntry {
    fn weight(&self) -> usize {
        match self {
            StaleEntry::Answer(a) => {
                a.body.len()
                    + a.headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len())
                        .sum::<usize>()
            }
            StaleEntry::Varies(names) => names.iter().map(|n| n.as_str().len()).sum(),
        }
    }
}

const ANSWER: u8 = 1;
const VARIES: u8 = 2;

/// The Redis form of an entry: kind, stored-at (Unix nanos), TTL (ms), then
/// the status, the headers as length-prefixed pairs, and the body; or the
/// varying header names.
fn encode(entry: &Stored<StaleEntry>) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + entry.value.weight());
    let put_str = |b: &mut BytesMut, s: &[u8]| {
        b.put_u16(u16::try_from(s.len()).unwrap_or(0));
        b.put_slice(if s.len() <= usize::from(u16::MAX) {
            s
        } else {
            b""
        });
    };
    let kind = match &entry.value {
        StaleEntry::Answer(_) => ANSWER,
        StaleEntry::Varies(_) => VARIES,
    };
    b.put_u8(kind);
    b.put_u64(entry.stored_at.as_nanos());
    b.put_u64(u64::try_from(entry.ttl.as_millis()).unwrap_or(u64::MAX));
    match &entry.value {
        StaleEntry::Answer(a) => {
            b.put_u16(a.status);
            b.put_u16(u16::try_from(a.headers.len()).unwrap_or(0));
            for (n, v) in a.headers.iter().take(usize::from(u16::MAX)) {
                put_str(&mut b, n.as_str().as_bytes());
                put_str(&mut b, v.as_bytes());
            }
            b.put_slice(&a.body);
        }
        StaleEntry::Varies(names) => {
            b.put_u16(u16::try_from(names.len()).unwrap_or(0));
            for n in names.iter().take(usize::from(u16::MAX)) {
                put_str(&mut b, n.as_str().as_bytes());
            }
        }
    }
    b.freeze()
}

/// The entry [`encode`] wrote, or `None` for anything else (a value another
/// version wrote, or a corrupt one: treated as missing).
fn decode(mut raw: Bytes) -> Option<Stored<StaleEntry>> {
    fn take(raw: &mut Bytes) -> Option<Bytes> {
        if raw.remaining() < 2 {
            return None;
        }
        let n = usize::from(raw.get_u16());
        (raw.remaining() >= n).then(|| raw.split_to(n))
    }
    if raw.remaining() < 1 + 8 + 8 + 2 {
        return None;
    }
    let kind = raw.get_u8();
    let stored_at = Instant::from_nanos(raw.get_u64());
    let ttl = Duration::from_millis(raw.get_u64());
    let value = match kind {
        ANSWER => {
            if raw.remaining() < 4 {
                return None;
            }
            let status = raw.get_u16();
            let count = raw.get_u16();
            let mut headers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let name = HeaderName::from_bytes(&take(&mut raw)?).ok()?;
                let value = HeaderValue::from_maybe_shared(take(&mut raw)?).ok()?;
                headers.push((name, value));
            }
            StaleEntry::Answer(StaleAnswer {
                status,
                headers,
                body: raw,
            })
        }
        VARIES => {
            let count = raw.get_u16();
            let mut names = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                names.push(HeaderName::from_bytes(&take(&mut raw)?).ok()?);
            }
            StaleEntry::Varies(names)
        }
        _ => return None,
    };
    Some(Stored {
        value,
        stored_at,
        ttl,
    })
}

/// Stale entries in Redis, each under its key with a Redis expiry of its TTL.
#[derive(Debug, Clone)]
pub struct RedisStaleStore {
    redis: Arc<RedisBackend>,
}

impl RedisStaleStore {
    /// A store on `redis`.
    pub fn new(redis: Arc<RedisBackend>) -> RedisStaleStore {
        RedisStaleStore { redis }
    }
}

impl StaleStore<String, StaleEntry> for RedisStaleStore {
    fn get<'a>(&'a self, key: &'a String) -> BoxFuture<'a, Option<Stored<StaleEntry>>> {
        Box::pin(async move {
            let raw: Vec<u8> = self
                .redis
                .run::<Option<Vec<u8>>>(redis::cmd("GET").arg(key).clone())
                .await??;
            decode(Bytes::from(raw))
        })
    }

    fn put(&self, key: String, entry: Stored<StaleEntry>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(entry.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let _: Option<()> = self
                .redis
                .run(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(encode(&entry).as_ref())
                        .arg("PX")
                        .arg(ttl_ms)
                        .clone(),
                )
                .await;
        })
    }
}

/// Redis in front of the in-process copy: reads prefer Redis (another
/// instance may have seen a newer answer), writes go to memory at once and
/// to Redis off the request path.
#[derive(Debug)]
struct Tiered {
    memory: MokaStore<String, StaleEntry>,
    redis: Arc<RedisStaleStore>,
    writes: Arc<Semaphore>,
}

impl StaleStore<String, StaleEntry> for Tiered {
    fn get<'a>(&'a self, key: &'a String) -> BoxFuture<'a, Option<Stored<StaleEntry>>> {
        Box::pin(async move {
            match self.redis.get(key).await {
                Some(e) => Some(e),
                None => self.memory.get(key).await,
            }
        })
    }

    fn put(&self, key: String, entry: Stored<StaleEntry>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.redis.redis.is_available() {
                match Arc::clone(&self.writes).try_acquire_owned() {
                    Ok(permit) => {
                        let redis = Arc::clone(&self.redis);
                        let (key, entry) = (key.clone(), entry.clone());
                        tokio::spawn(async move {
                            redis.put(key, entry).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracing::debug!("redis writes saturated: stale entry kept in process only")
                    }
                }
            }
            self.memory.put(key, entry).await;
        })
    }
}

/// Kept answers, in process and optionally in Redis.
#[derive(Debug)]
pub struct StaleResponses {
    memory: MokaStore<String, StaleEntry>,
    cache: StaleCache<String, StaleEntry, Box<dyn StaleStore<String, StaleEntry>>>,
    clock: UnixClock,
}

impl StaleResponses {
    /// A store keeping answers for `ttl`, in Redis too when `redis` is given.
    pub fn new(ttl: Duration, redis: Option<Arc<RedisBackend>>) -> StaleResponses {
        let memory = MokaStore::weighted(MEMORY_BUDGET, ttl, |k: &String, v: &StaleEntry| {
            u32::try_from(k.len() + v.weight()).unwrap_or(u32::MAX)
        });
        let store: Box<dyn StaleStore<String, StaleEntry>> = match redis {
            Some(redis) => Box::new(Tiered {
                memory: memory.clone(),
                redis: Arc::new(RedisStaleStore::new(redis)),
                writes: Arc::new(Semaphore::new(REDIS_WRITES)),
            }),
            None => Box::new(memory.clone()),
        };
        // Unix time: entries in Redis are judged alike by every instance.
        let clock = UnixClock::new();
        StaleResponses {
            memory,
            cache: StaleCache::with_store(store, ttl, clock.clone()),
            clock,
        }
    }

    /// Whether the answer to a request with `request` headers under `base`
    /// should be kept now, as `keep` allows: none is kept here, or the one
    /// kept is older than [`REFRESH_EVERY`].
    pub async fn wants(&self, base: &String, keep: &Keep, request: &HeaderMap) -> bool {
        let found = if keep.vary.is_empty() {
            // The common case, without building a key.
            self.memory.get(base).await
        } else {
            self.memory
                .get(&variant_key(base, &keep.vary, request))
                .await
        };
        match found {
            None => true,
            Some(e) => self.clock.now().saturating_duration_since(e.stored_at) >= REFRESH_EVERY,
        }
    }

    /// Keeps `answer`, given to a request with `request` headers whose base
    /// key is `base`, as `keep` allows.
    pub async fn put(&self, base: &str, keep: &Keep, request: &HeaderMap, answer: StaleAnswer) {
        let ttl = keep.serve_for.unwrap_or(self.cache.ttl());
        if keep.vary.is_empty() {
            self.cache
                .store_for(base.to_owned(), StaleEntry::Answer(answer), ttl)
                .await;
            return;
        }
        let key = variant_key(base, &keep.vary, request);
        self.cache
            .store(base.to_owned(), StaleEntry::Varies(keep.vary.clone()))
            .await;
        self.cache
            .store_for(key, StaleEntry::Answer(answer), ttl)
            .await;
    }

    /// The answer kept for a request with `request` headers under `base`, and
    /// its age, if one is young enough.
    pub async fn get(&self, base: &str, request: &HeaderMap) -> Option<(StaleAnswer, Duration)> {
        match self.cache.lookup(&base.to_owned()).await? {
            (StaleEntry::Answer(a), age) => Some((a, age)),
            (StaleEntry::Varies(names), _) => {
                let key = variant_key(base, &names, request);
                match self.cache.lookup(&key).await? {
                    (StaleEntry::Answer(a), age) => Some((a, age)),
                    (StaleEntry::Varies(_), _) => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> StaleAnswer {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
        h.insert(http::header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(http::header::SET_COOKIE, HeaderValue::from_static("sid=1"));
        StaleAnswer::new(200, &h, Bytes::from_static(br#"{"report":1}"#))
    }

    #[test]
    fn only_the_headers_needed_to_read_the_body_are_kept() {
        let names: Vec<_> = answer().headers.into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                http::header::CONTENT_TYPE,
                http::header::CONTENT_ENCODING,
                http::header::ETAG
            ]
        );
    }

    #[test]
    fn entries_survive_the_redis_encoding() {
        let stored = |value| Stored {
            value,
            stored_at: Instant::from_nanos(1_763_000_000_000_000_000),
            ttl: Duration::from_secs(30),
        };
        let a = stored(StaleEntry::Answer(answer()));
        assert_eq!(decode(encode(&a)), Some(a));
        let bare = stored(StaleEntry::Answer(StaleAnswer {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
        }));
        assert_eq!(decode(encode(&bare)), Some(bare));
        let v = stored(StaleEntry::Varies(vec![http::header::ACCEPT_LANGUAGE]));
        assert_eq!(decode(encode(&v)), Some(v.clone()));
        assert_eq!(decode(Bytes::from_static(b"short")), None);
        let cut = encode(&v);
        assert_eq!(decode(cut.slice(..cut.len() - 1)), None);
    }

    #[tokio::test]
    async fn a_varying_answer_is_found_only_with_the_same_values() {
        let store = StaleResponses::new(Duration::from_secs(60), None);
        let req = |lang: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::ACCEPT_LANGUAGE,
                HeaderValue::from_str(lang).unwrap(),
            );
            h
        };
        let keep = Keep {
            vary: vec![http::header::ACCEPT_LANGUAGE],
            serve_for: None,
        };
        store.put("k", &keep, &req("fr"), answer()).await;
        assert!(store.get("k", &req("fr")).await.is_some());
        assert_eq!(store.get("k", &req("en")).await, None);
        assert_eq!(store.get("k", &HeaderMap::new()).await, None);
    }

    #[tokio::test]
    async fn a_redis_that_does_not_answer_cannot_pile_up_writes() {
        // Accepts and never answers: every write would wait out its deadline.
        let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", hole.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = hole.accept().await {
                held.push(conn);
            }
        });
        let store = StaleResponses::new(
            Duration::from_secs(60),
            Some(RedisBackend::new(&url).unwrap()),
        );
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let keep = Keep {
            vary: vec![],
            serve_for: None,
        };
        for i in 0..3 * REDIS_WRITES {
            let answered = tokio::time::timeout(
                Duration::from_millis(50),
                store.put(&format!("k{i}"), &keep, &HeaderMap::new(), answer()),
            )
            .await;
            assert!(answered.is_ok(), "a write waited on redis");
        }
        let spawned = tasks() - before;
        assert!(spawned <= REDIS_WRITES, "{spawned} redis writes in flight");
        // Each answer is still kept in process.
        assert!(store.memory.get(&"k0".to_owned()).await.is_some());
    }

    #[tokio::test]
    async fn stale_if_error_zero_is_never_served() {
        let store = StaleResponses::new(Duration::from_secs(60), None);
        let keep = Keep {
            vary: vec![],
            serve_for: Some(Duration::ZERO),
        };
        store.put("k", &keep, &HeaderMap::new(), answer()).await;
        assert_eq!(store.get("k", &HeaderMap::new()).await, None);
    }
}
