//! `[cache]`: where stale answers are kept (memory or Redis, with a
//! `redis://` URL) and for how long.

use std::time::Duration;

use crate::config::reader::{OkOrDefault, Reader, Section};
use crate::config::{CacheBackend, CacheConfig};

impl Reader<'_> {
    pub(super) fn cache(&mut self, top: Section<'_>) -> CacheConfig {
        let ttl_default = Duration::from_secs(300);
        let Some((table, at, path)) = self.table(top, "cache") else {
            return CacheConfig {
                backend: CacheBackend::Memory,
                ttl: ttl_default,
            };
        };
        let s = Section {
            table,
            at,
            path: &path,
        };
        self.known_keys(s, &["backend", "redis_url", "ttl"]);
        let backend = self.value(s, "backend", "\"memory\" or \"redis\"", false, |i| match i
            .as_str()
        {
            Some("memory") => Ok(false),
            Some("redis") => Ok(true),
            _ => Err(String::new()),
        });
        let url = self.value(
            s,
            "redis_url",
            "a URL such as \"redis://127.0.0.1:6379\"",
            false,
            |i| {
                let t = i.as_str().ok_or_default()?;
                if t.starts_with("redis://") || t.starts_with("rediss://") {
                    Ok(t.to_owned())
                } else {
                    Err(" (it must start with redis:// or rediss://)".into())
                }
            },
        );
        let backend = if backend == Some(true) {
            CacheBackend::Redis {
                url: url.unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            }
        } else {
            CacheBackend::Memory
        };
        CacheConfig {
            backend,
            ttl: self.duration(s, "ttl", ttl_default),
        }
    }
}
