//! The fallback chain over HTTP answers: the last good answer to the same
//! GET (from rempart's stale-if-error cache), a default answer, a degraded
//! answer; each marked `X-Degraded-Mode: true`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use rempart::cache::{MokaStore, StaleCache};
use rempart::clock::TokioClock;
use rempart::fallback::{Degraded, FallbackChain, FallbackKind, mark_degraded};
use reqwest::ResponseBuilderExt;

use crate::config::{Canned, FallbackSettings, Strategy};

/// An answer kept whole, so it can be given again.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Stored {
    fn canned(c: &Canned) -> Stored {
        let mut headers = HeaderMap::new();
        if let Some(ct) = c
            .content_type
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(http::header::CONTENT_TYPE, ct);
        }
        Stored {
            status: StatusCode::from_u16(c.status).unwrap_or(StatusCode::OK),
            version: Version::HTTP_11,
            headers,
            body: Bytes::from(c.body.clone()),
        }
    }

    /// A reqwest response carrying this answer, for `url`.
    pub(crate) fn into_response(self, url: &reqwest::Url) -> reqwest::Response {
        reqwest::Response::from(self.into_http(url))
    }

    fn into_http(self, url: &reqwest::Url) -> http::Response<Bytes> {
        let mut resp = http::Response::builder()
            .url(url.clone())
            .body(self.body)
            .unwrap_or_default();
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// Reads the whole body of `resp`, and gives back an equal response and the
/// answer to keep.
pub(crate) async fn buffer(
    resp: reqwest::Response,
) -> Result<(reqwest::Response, Stored), reqwest::Error> {
    let url = resp.url().clone();
    let (status, version, headers) = (resp.status(), resp.version(), resp.headers().clone());
    let body = resp.bytes().await?;
    let stored = Stored {
        status,
        version,
        headers,
        body,
    };
    Ok((stored.clone().into_response(&url), stored))
}

/// Which fallback gave a response: found in its extensions
/// (`response.extensions().get::<FallbackAnswer>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackAnswer {
    /// The step that answered.
    pub kind: FallbackKind,
    /// For a cached answer, how old it is.
    pub age: Option<Duration>,
}

/// What the chain is told of a failed call: which cached answer would do.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) cache_key: Option<Arc<str>>,
}

/// Last good answers, shared by every host, keyed by URL.
pub(crate) type AnswerCache = StaleCache<Arc<str>, Stored>;

pub(crate) fn answer_cache(settings: &FallbackSettings) -> Option<AnswerCache> {
    (settings.enabled && settings.strategies.contains(&Strategy::Cache)).then(|| {
        StaleCache::with_store(
            MokaStore::new(settings.cache_max_entries, settings.cache_ttl),
            settings.cache_ttl,
            TokioClock::new(),
        )
    })
}

/// The chain for one key, from the settings' strategies in order.
pub(crate) fn chain(
    key: &str,
    settings: &FallbackSettings,
    cache: Option<&AnswerCache>,
) -> Option<FallbackChain<Stored, Failure>> {
    if !settings.enabled {
        return None;
    }
    let mut chain = FallbackChain::new(key);
    for s in &settings.strategies {
        chain = match s {
            Strategy::Cache => {
                let Some(cache) = cache.cloned() else {
                    continue;
                };
                chain.cached(move |f: &Failure| {
                    let (cache, key) = (cache.clone(), f.cache_key.clone());
                    async move {
                        match key {
                            Some(k) => cache.lookup(&k).await,
                            None => None,
                        }
                    }
                })
            }
            Strategy::DefaultValue => match &settings.default_answer {
                Some(c) => chain.default_value(Stored::canned(c)),
                None => chain,
            },
            Strategy::Degraded => {
                let answer = Stored::canned(&settings.degraded_answer);
                chain.degraded(move |_| answer.clone())
            }
        };
    }
    Some(chain)
}

/// The fallback's answer as a response: marked degraded, and saying which
/// step answered.
pub(crate) fn fallback_response(
    stored: Stored,
    mode: Degraded,
    url: &reqwest::Url,
) -> (reqwest::Response, FallbackKind) {
    let (kind, age) = match mode {
        Degraded::Stale { age } => (FallbackKind::Cache, Some(age)),
        Degraded::Default => (FallbackKind::Default, None),
        _ => (FallbackKind::Degraded, None),
    };
    let mut resp = stored.into_http(url);
    mark_degraded(&mut resp, mode);
    resp.extensions_mut().insert(FallbackAnswer { kind, age });
    (reqwest::Response::from(resp), kind)
}
