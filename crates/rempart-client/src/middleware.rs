//! The middleware: each request goes retry → breaker → attempt (with its
//! timeout and `x-request-timeout-ms`), inside the call's deadline, and a
//! failed call goes to the fallback chain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use http::{Extensions, HeaderValue};
use prometheus_client::registry::Registry;
use rempart::CircuitState;
use rempart::deadline::{self, Deadline};
use rempart::fallback::FallbackCollector;
use rempart::prometheus::BreakerCollector;
use rempart::retry::{Decision, RetryCollector, RetryError, parse_retry_after};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use crate::answer::{self, AnswerCache, Failure, fallback_response};
use crate::classify::{
    Attempted, Rules, breaker_outcome, decide, failed_status, idempotent, kind_of,
};
use crate::config::ClientConfig;
use crate::host::{self, HostPolicies};
use crate::observe::{AttemptOutcome, AttemptReport, CallObserver};
use crate::replay;

/// Call budgets below this make their deadline from the call's own clock
/// read; longer ones go through [`Deadline::after`], which caps them.
const NEAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

/// A request extension naming the breaker (and retry, fallback and metrics)
/// a request goes through, instead of its host:
/// `client.get(url).with_extension(BreakerKey::new("payments"))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerKey(pub Arc<str>);

impl BreakerKey {
    /// The key `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        BreakerKey(name.into())
    }
}

/// Why the middleware itself failed a call (transport errors come back as
/// reqwest's own).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The breaker for `key` refused the call: it was not sent.
    CircuitOpen {
        /// The breaker's key.
        key: String,
    },
    /// The last attempt had no answer within `limit`.
    TimedOut {
        /// The breaker's key.
        key: String,
        /// The limit that ran out.
        limit: Duration,
    },
    /// A retry was due, but the request's body is a stream and cannot be sent again.
    NotReplayable,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::CircuitOpen { key } => {
                write!(
                    f,
                    "the circuit breaker for {key} is open: the call was not sent"
                )
            }
            ClientError::TimedOut { key, limit } => {
                write!(f, "no answer from {key} within {limit:?}")
            }
            ClientError::NotReplayable => f.write_str(
                "a retry was due but the request body is a stream that cannot be sent twice",
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// One attempt's failure, as the retry loop sees it.
#[derive(Debug)]
enum AttemptError {
    Transport(reqwest_middleware::Error, Attempted),
    TimedOut(Duration),
    Refused,
    NotReplayable,
}

impl AttemptError {
    fn attempted(&self) -> Attempted {
        match self {
            AttemptError::Transport(_, a) => *a,
            AttemptError::TimedOut(_) => Attempted::Failed(crate::ErrorKind::Timeout),
            AttemptError::Refused => Attempted::Refused,
            AttemptError::NotReplayable => Attempted::Other,
        }
    }
}

/// The resilience middleware for reqwest-middleware, built from a
/// [`ClientConfig`]. Cheap to clone; clones share breakers, budgets, the
/// answer cache and the metrics.
#[derive(Clone)]
pub struct Resilience {
    shared: Arc<Shared>,
}

struct Shared {
    config: ClientConfig,
    /// `config.rules` as each call reads them.
    rules: Rules,
    /// Looked up on every call: foldhash rather than SipHash (a key is a
    /// host the caller chose, and the hasher is still seeded).
    hosts: DashMap<String, Arc<HostPolicies>, foldhash::fast::RandomState>,
    cache: Option<AnswerCache>,
    observer: Option<Arc<dyn CallObserver>>,
    breakers: BreakerCollector,
    retries: RetryCollector,
    fallbacks: FallbackCollector,
}

impl fmt::Debug for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("hosts", &self.shared.hosts.len())
            .finish_non_exhaustive()
    }
}

impl Resilience {
    /// The middleware for `config`.
    pub fn new(config: ClientConfig) -> Self {
        Resilience::build(config, None)
    }

    /// The middleware for `config`, telling `observer` of every attempt,
    /// pause and fallback.
    pub fn observed(config: ClientConfig, observer: impl CallObserver) -> Self {
        Resilience::build(config, Some(Arc::new(observer)))
    }

    fn build(config: ClientConfig, observer: Option<Arc<dyn CallObserver>>) -> Self {
        Resilience {
            shared: Arc::new(Shared {
                cache: answer::answer_cache(&config.fallback),
                rules: Rules::from(&config.rules),
                config,
                hosts: DashMap::default(),
                observer,
                breakers: BreakerCollector::new(),
                retries: RetryCollector::new(),
                fallbacks: FallbackCollector::new(),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// The state of the breaker for `key` (a host such as `"127.0.0.1:8080"`,
    /// or a [`BreakerKey`]), once a call has used it.
    pub fn breaker_state(&self, key: &str) -> Option<CircuitState> {
        self.shared.hosts.get(key).map(|h| h.breaker.state())
    }

    /// Exposes `retry_attempts_total`, `retry_calls_total`,
    /// `retry_delay_seconds`, `circuit_breaker_state` (and the breaker's
    /// call counters) and `fallback_activations_total`, each labelled
    /// `service` = the breaker key. Read at scrape time; hosts first called
    /// later appear then.
    pub fn register(&self, registry: &mut Registry) {
        let s = &self.shared;
        registry.register_collector(Box::new(s.breakers.clone()));
        registry.register_collector(Box::new(s.retries.clone()));
        registry.register_collector(Box::new(s.fallbacks.clone()));
    }

    fn host(&self, key: &str) -> Arc<HostPolicies> {
        if let Some(h) = self.shared.hosts.get(key) {
            return Arc::clone(&h);
        }
        let s = &self.shared;
        let entry = s.hosts.entry(key.to_owned()).or_insert_with(|| {
            let h = host::build(key, &s.config, s.cache.as_ref(), s.observer.as_ref());
            s.breakers.add(h.breaker.clone());
            s.retries.add(&h.retry);
            if let Some(chain) = &h.fallback {
                s.fallbacks.add(chain);
            }
            Arc::new(h)
        });
        Arc::clone(&entry)
    }
}

/// A retryable status's `Retry-After`, if it has a readable one.
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    // An HTTP-date Retry-After is wall-clock time, so it is judged against the wall clock.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    parse_retry_after(v, now)
}

/// What an attempt's result is, for the rules and the breaker.
fn attempted_of(rules: &Rules, r: Result<&Response, &AttemptError>) -> Attempted {
    match r {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let ra = if rules.retries_status(code) {
                retry_after(resp)
            } else {
                None
            };
            Attempted::Status(code, ra)
        }
        Err(e) => e.attempted(),
    }
}

fn transport(e: reqwest_middleware::Error) -> AttemptError {
    let attempted = match &e {
        reqwest_middleware::Error::Reqwest(r) => {
            kind_of(r).map_or(Attempted::Other, Attempted::Failed)
        }
        reqwest_middleware::Error::Middleware(_) => Attempted::Other,
    };
    AttemptError::Transport(e, attempted)
}

// Written out rather than through `#[async_trait]` (the trait's own
// signature): the host, the fallback's URL and the retry loop are set up
// before the future is made, so the request is not carried in it twice.
impl Middleware for Resilience {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let host = match extensions.get::<BreakerKey>() {
            Some(k) => self.host(&k.0),
            None => self.host(host::key_of(req.url())),
        };
        // Only a fallback answer needs the URL after the request is spent
        // (boxed: the future keeps 8 bytes for it, not a whole URL).
        let url = host.fallback.as_ref().map(|_| Box::new(req.url().clone()));
        // Only a GET's answer can stand in for a later GET of the same URL.
        let cache_key: Option<Arc<str>> = (self.shared.cache.is_some()
            && req.method() == http::Method::GET)
            .then(|| Arc::from(req.url().as_str()));
        let idempotent = idempotent(req.method());
        // Outside the retry loop's future, which then stays small enough
        // for the allocator's fast path when it is boxed.
        // Boxed: the retry loop sits inline in this call's future, and with
        // the request beside it the future would outgrow the allocator's
        // per-thread cache (about 1 KB) and take `malloc`'s slow path.
        let request = Box::new(Mutex::new(Some(req)));
        // One clock read for the call's deadline and its first attempt's limit.
        let started = Instant::now();
        let deadline = match started.checked_add(host.timeout) {
            Some(at) if host.timeout < NEAR_FUTURE => Deadline::at(at),
            // The core caps a budget past the clock's range.
            _ => Deadline::after(host.timeout),
        };
        Box::pin(async move {
            let exts = Mutex::new(std::mem::take(extensions));
            let result = deadline
                .scope(self.attempts(
                    &host,
                    &request,
                    &exts,
                    next,
                    idempotent,
                    cache_key.as_ref(),
                    started,
                ))
                .await;
            *extensions = exts.into_inner().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(resp) if !failed_status(&self.shared.rules, resp.status().as_u16()) => Ok(resp),
                // Boxed: only a failed call pays for the fallback's future.
                result => Box::pin(self.finish(&host, result, cache_key, url.as_deref())).await,
            }
        })
    }
}

impl Resilience {
    /// The retry loop over attempts through the breaker; the call began at `started`.
    #[allow(clippy::too_many_arguments)]
    fn attempts<'a>(
        &'a self,
        host: &'a HostPolicies,
        request: &'a Mutex<Option<Request>>,
        exts: &'a Mutex<Extensions>,
        next: Next<'a>,
        idempotent: bool,
        cache_key: Option<&'a Arc<str>>,
        started: Instant,
    ) -> impl Future<Output = Result<Response, RetryError<AttemptError>>> + Send + 'a {
        let rules = &self.shared.rules;
        let policy = move |r: Result<&Response, &AttemptError>| -> Decision {
            decide(rules, idempotent, attempted_of(rules, r))
        };
        let mut n: u32 = 0;
        host.retry.call_with(policy, move || {
            n += 1;
            // The first attempt starts with the call: its clock read serves.
            let at = if n == 1 { Some(started) } else { None };
            self.attempt(host, n, at, request, exts, next.clone(), cache_key)
        })
    }

    /// One attempt: through the breaker, within its time, recorded.
    /// `started`: when it began, if the caller has just read the clock.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        host: &HostPolicies,
        n: u32,
        started: Option<Instant>,
        request: &Mutex<Option<Request>>,
        exts: &Mutex<Extensions>,
        next: Next<'_>,
        cache_key: Option<&Arc<str>>,
    ) -> Result<Response, AttemptError> {
        let req = {
            let mut slot = request.lock().unwrap_or_else(|p| p.into_inner());
            let Some(req) = slot.take() else {
                return Err(AttemptError::NotReplayable);
            };
            // A copy for the next attempt before this one consumes the
            // request; the last attempt has no next one.
            if n < host.max_attempts {
                *slot = replay::copy_for_retry(&req);
            }
            req
        };
        let rules = &self.shared.rules;
        let started = started.unwrap_or_else(Instant::now);
        // What the deadline leaves, measured from `started`: no second clock read.
        let limit = match Deadline::current() {
            Some(d) => host
                .attempt_timeout
                .min(d.instant().saturating_duration_since(started)),
            None => host.attempt_timeout,
        };
        let permit = match host.breaker.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                self.report(
                    host,
                    n,
                    AttemptOutcome::Refused(host.breaker.state()),
                    started,
                );
                return Err(AttemptError::Refused);
            }
        };
        let mut ext = std::mem::take(&mut *exts.lock().unwrap_or_else(|p| p.into_inner()));
        // In its own block, so that this future does not keep room for the
        // request once `next` has taken it.
        let sending = {
            let mut req = req;
            // The attempt's own limit is the usual one: its header is made once.
            let value = if limit == host.attempt_timeout {
                host.attempt_header.clone()
            } else {
                HeaderValue::from(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX))
            };
            req.headers_mut().insert(deadline::HEADER, value);
            next.run(req, &mut ext)
        };
        // Timed from `started`, as the limit was (one clock read less).
        let until = started.checked_add(limit);
        let sent = match until {
            Some(until) => tokio::time::timeout_at(until, sending).await,
            None => tokio::time::timeout(limit, sending).await,
        };
        // A good answer to keep for the cache fallback is read whole within
        // what is left of the same limit. In its own boxed future: reading and
        // storing the body makes a large future, which every call without a
        // cache would otherwise carry and move around.
        let sent = match (sent, &self.shared.cache, cache_key) {
            (Ok(Ok(resp)), Some(cache), Some(k)) if resp.status().is_success() => {
                let keep = Box::pin(async {
                    let (resp, stored) = answer::buffer(resp).await?;
                    cache.store(Arc::clone(k), stored).await;
                    Ok(resp)
                });
                match until {
                    Some(until) => tokio::time::timeout_at(until, keep).await,
                    None => tokio::time::timeout(limit, keep).await,
                }
            }
            (sent, _, _) => sent,
        };
        *exts.lock().unwrap_or_else(|p| p.into_inner()) = ext;
        let result = match sent {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(transport(e)),
            Err(_) => Err(AttemptError::TimedOut(limit)),
        };
        let attempted = attempted_of(rules, result.as_ref());
        permit.record(breaker_outcome(rules, attempted));
        if self.shared.observer.is_some() {
            let outcome = match &result {
                Ok(resp) => AttemptOutcome::Status(resp.status().as_u16()),
                Err(AttemptError::TimedOut(limit)) => AttemptOutcome::TimedOut(*limit),
                Err(AttemptError::Transport(e, Attempted::Failed(kind))) => {
                    AttemptOutcome::Failed(*kind, error_chain(e))
                }
                Err(AttemptError::Transport(e, _)) => AttemptOutcome::Other(error_chain(e)),
                Err(e) => AttemptOutcome::Other(format!("{e:?}")),
            };
            self.report(host, n, outcome, started);
        }
        result
    }

    fn report(&self, host: &HostPolicies, n: u32, outcome: AttemptOutcome, started: Instant) {
        if let Some(o) = &self.shared.observer {
            o.on_attempt(&AttemptReport {
                key: &host.key,
                attempt: n,
                outcome,
                elapsed: started.elapsed(),
                breaker: host.breaker.state(),
            });
        }
    }

    /// The call's answer: the last attempt's, or a fallback's when it failed.
    async fn finish(
        &self,
        host: &HostPolicies,
        result: Result<Response, RetryError<AttemptError>>,
        cache_key: Option<Arc<str>>,
        url: Option<&reqwest::Url>,
    ) -> reqwest_middleware::Result<Response> {
        let failed = match result {
            Ok(resp) if !failed_status(&self.shared.rules, resp.status().as_u16()) => {
                return Ok(resp);
            }
            Ok(resp) => Ok(resp),
            Err(e) => Err(e),
        };
        let answerable = match &failed {
            Ok(_) => true,
            Err(e) => match e {
                RetryError::Exhausted { error, .. }
                | RetryError::NotRetried { error, .. }
                | RetryError::BudgetExhausted { error, .. } => {
                    !matches!(error.attempted(), Attempted::Other)
                }
                _ => true,
            },
        };
        if answerable
            && let (Some(chain), Some(url)) = (&host.fallback, url)
            && let Ok(answer) = chain.recover(Failure { cache_key }).await
        {
            let (resp, kind) = fallback_response(answer.value, answer.mode, url);
            if let Some(o) = &self.shared.observer {
                o.on_fallback(&host.key, kind);
            }
            return Ok(resp);
        }
        match failed {
            Ok(resp) => Ok(resp),
            Err(e) => Err(self.error(host, e)),
        }
    }

    fn error(&self, host: &HostPolicies, e: RetryError<AttemptError>) -> reqwest_middleware::Error {
        let key = host.key.to_string();
        let last = match e {
            RetryError::TimedOut { limit, .. } => {
                return ClientError::TimedOut { key, limit }.into();
            }
            other => other.into_inner(),
        };
        match last {
            Some(AttemptError::Transport(e, _)) => e,
            Some(AttemptError::TimedOut(limit)) => ClientError::TimedOut { key, limit }.into(),
            Some(AttemptError::Refused) => ClientError::CircuitOpen { key }.into(),
            Some(AttemptError::NotReplayable) | None => ClientError::NotReplayable.into(),
        }
    }
}

impl From<ClientError> for reqwest_middleware::Error {
    fn from(e: ClientError) -> Self {
        reqwest_middleware::Error::middleware(e)
    }
}

/// An error and its causes on one line (reqwest's own text stops at "error
/// sending request"), each cause once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
