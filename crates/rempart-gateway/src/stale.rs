//! The stale-if-error store: the last good answer to each GET, served with
//! `X-Degraded-Mode: true` when the service cannot answer (seed 001 case 4).
//!
//! Every 200 to a GET whose body is at most [`MAX_BODY`] bytes (declared in
//! `Content-Length`) is kept for `cache.ttl` under its service, method, path
//! and query. It is only ever served when the service did not answer well:
//! open circuit, full bulkhead, timeout, unreachable host, or a 5xx. With
//! `cache.backend = "redis"` entries live in Redis so every instance can serve
//! what any of them saw; if Redis does not answer, the in-process copy is used.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderValue;
use rempart::clock::{Clock, Instant, UnixClock};

use crate::redis_backend::RedisBackend;

/// Largest body kept (bigger answers stream through uncached).
pub const MAX_BODY: u64 = 1024 * 1024;
/// A kept answer younger than this is not replaced: under load the same GET
/// is answered many times a second, and reading each answer whole to store it
/// again would cost every one of them (store-and-forward instead of streaming).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Most bytes of bodies kept in process.
pub const MEMORY_BUDGET: u64 = 256 * 1024 * 1024;

/// A kept answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleAnswer {
    /// Its status.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
    /// When it was stored (Unix nanos, from [`UnixClock`]: shared by instances).
    pub stored_at: Instant,
}

impl StaleAnswer {
    fn encode(&self) -> Bytes {
        let ct = self
            .content_type
            .as_ref()
            .map_or(&b""[..], |v| v.as_bytes());
        let mut b = BytesMut::with_capacity(2 + 8 + 2 + ct.len() + self.body.len());
        b.put_u16(self.status);
        b.put_u64(self.stored_at.as_nanos());
        b.put_u16(u16::try_from(ct.len()).unwrap_or(0));
        b.put_slice(if ct.len() <= usize::from(u16::MAX) {
            ct
        } else {
            b""
        });
        b.put_slice(&self.body);
        b.freeze()
    }

    fn decode(mut raw: Bytes) -> Option<StaleAnswer> {
        if raw.len() < 12 {
            return None;
        }
        let status = raw.get_u16();
        let stored_at = Instant::from_nanos(raw.get_u64());
        let ct_len = usize::from(raw.get_u16());
        if raw.len() < ct_len {
            return None;
        }
        let ct = raw.split_to(ct_len);
        Some(StaleAnswer {
            status,
            content_type: (!ct.is_empty())
                .then(|| HeaderValue::from_maybe_shared(ct).ok())
                .flatten(),
            body: raw,
            stored_at,
        })
    }
}

/// Kept answers, in process and optionally in Redis.
#[derive(Debug)]
pub struct StaleResponses {
    memory: moka::future::Cache<String, Arc<StaleAnswer>>,
    redis: Option<Arc<RedisBackend>>,
    ttl: Duration,
    clock: UnixClock,
}

impl StaleResponses {
    /// A store keeping answers for `ttl`, in Redis too when `redis` is given.
    pub fn new(ttl: Duration, redis: Option<Arc<RedisBackend>>) -> StaleResponses {
        StaleResponses {
            memory: moka::future::Cache::builder()
                .time_to_live(ttl)
                .weigher(|k: &String, v: &Arc<StaleAnswer>| {
                    u32::try_from(k.len() + v.body.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(MEMORY_BUDGET)
                .build(),
            redis,
            ttl,
            clock: UnixClock::new(),
        }
    }

    /// The key of a request: its service, method, path and query.
    pub fn key(service: &str, method: &http::Method, uri: &http::Uri) -> String {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Built by hand: `format!` cost more than the cache lookup it keys.
        let method = method.as_str();
        let mut key = String::with_capacity(16 + service.len() + method.len() + pq.len());
        for part in ["rempart:stale:", service, ":", method, ":", pq] {
            key.push_str(part);
        }
        key
    }

    /// Whether an answer for `key` should be kept now: none is kept here, or
    /// the one kept is older than [`REFRESH_EVERY`].
    pub async fn wants(&self, key: &str) -> bool {
        match self.memory.get(key).await {
            None => true,
            Some(a) => self.clock.now().saturating_duration_since(a.stored_at) >= REFRESH_EVERY,
        }
    }

    /// Keeps `answer` under `key`.
    pub async fn put(
        &self,
        key: String,
        status: u16,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) {
        let answer = StaleAnswer {
            status,
            content_type,
            body,
            stored_at: self.clock.now(),
        };
        if let Some(r) = &self.redis {
            let ttl_ms = u64::try_from(self.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let _: Option<()> = r
                .run(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(answer.encode().as_ref())
                        .arg("PX")
                        .arg(ttl_ms)
                        .clone(),
                )
                .await;
        }
        self.memory.insert(key, Arc::new(answer)).await;
    }

    /// The answer kept under `key` and its age, if one is fresh enough.
    pub async fn get(&self, key: &str) -> Option<(StaleAnswer, Duration)> {
        let from_redis = match &self.redis {
            Some(r) => r
                .run::<Option<Vec<u8>>>(redis::cmd("GET").arg(key).clone())
                .await
                .flatten()
                .and_then(|raw| StaleAnswer::decode(Bytes::from(raw))),
            None => None,
        };
        let answer = match from_redis {
            Some(a) => a,
            None => (*self.memory.get(key).await?).clone(),
        };
        let age = self.clock.now().saturating_duration_since(answer.stored_at);
        (age <= self.ttl).then_some((answer, age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_the_redis_encoding() {
        let a = StaleAnswer {
            status: 200,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(br#"{"report":1}"#),
            stored_at: Instant::from_nanos(1_763_000_000_000_000_000),
        };
        assert_eq!(StaleAnswer::decode(a.encode()), Some(a.clone()));
        let bare = StaleAnswer {
            content_type: None,
            body: Bytes::new(),
            ..a
        };
        assert_eq!(StaleAnswer::decode(bare.encode()), Some(bare));
        assert_eq!(StaleAnswer::decode(Bytes::from_static(b"short")), None);
    }

    #[test]
    fn keys_separate_services_methods_paths_and_queries() {
        let get = http::Method::GET;
        let k = |s, u: &str| StaleResponses::key(s, &get, &u.parse().unwrap());
        assert_ne!(k("a", "/r?x=1"), k("a", "/r?x=2"));
        assert_ne!(k("a", "/r"), k("b", "/r"));
        assert_eq!(k("a", "/r?x=1"), "rempart:stale:a:GET:/r?x=1");
    }
}
