//! The request path: one client request through the gateway to an upstream.
//!
//! In order (ARCHITECTURE.md draws it): request id and client IP → route →
//! body limit → the service's bulkhead → its circuit breaker → attempts
//! (host choice, per-try timeout, retries for idempotent requests) within the
//! service's total timeout → the outcome recorded on the breaker and the host
//! → on failure, the fallback: a degraded 503 JSON body with `Retry-After`.
//!
//! The total timeout (shortened, never lengthened, by the client's
//! `x-request-timeout-ms`) bounds every phase: reading the request body,
//! the attempts, and streaming the answer back ([`DeadlineBody`]); the
//! connection's write deadline ([`crate::client_conn`]) covers a client that
//! stops reading. The bulkhead slot and the breaker's permit ride the answer's
//! body to its end, so a body cut off mid-way is a failure.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use ipnet::IpNet;
use rempart::CircuitBreaker;
use rempart::bulkhead::Bulkhead;
use rempart::circuit_breaker::{CircuitBreakerBuilder, SlidingWindow};
use rempart::clock::{Clock, Instant};
use rempart::deadline::Deadline;
use rempart::rng::{Rng, SplitMix64};

use crate::cacheable;
use crate::client::{UpstreamBody, UpstreamClient, UpstreamRequest, is_idempotent};
use crate::client_conn::ClientConn;
use crate::client_limit::ClientLimiter;
use crate::config::{BackoffKind, CacheBackend, GatewayConfig, JitterKind, RetryOn, ServiceConfig};
use crate::deadline_body::DeadlineBody;
use crate::headers;
use crate::health_check::HealthCheck;
use crate::metrics::{LatencyWindow, Metrics, Outcome, RouteMetrics, ServiceCounters};
use crate::redis_backend::RedisBackend;
use crate::router::Router;
use crate::stale::{StaleAnswer, StaleResponses};
use crate::upstream::Upstreams;
use rempart::retry::{Backoff, Jitter, RetryBudget, parse_retry_after};

/// The body of every response the gateway sends: either one it made (errors,
/// fallbacks) or an upstream's, streamed through.
pub type Body = Either<Full<Bytes>, DeadlineBody<UpstreamBody>>;

/// A downstream service as the gateway runs it.
#[derive(Debug)]
pub struct Service {
    /// Its configuration.
    pub config: ServiceConfig,
    /// Its circuit breaker.
    pub breaker: CircuitBreaker,
    /// Its hosts.
    pub upstreams: Arc<Upstreams>,
    /// Its recent latencies, for the dashboard.
    pub latency: Arc<LatencyWindow>,
    counters: ServiceCounters,
    bulkhead: Option<Bulkhead>,
    retry_budget: Option<Arc<RetryBudget>>,
    health_check: Option<Arc<HealthCheck>>,
}

impl Service {
    /// The service for `config`, keeping from `previous` (the same service
    /// before a reload) each piece whose settings did not change.
    fn new(
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
        previous: Option<&Service>,
        metrics: &Metrics,
    ) -> Result<Service, String> {
        let b = &config.circuit_breaker;
        let breaker = match previous.filter(|o| o.config.circuit_breaker == *b) {
            Some(old) => old.breaker.clone(),
            None => {
                let breaker = CircuitBreakerBuilder::default()
                    .name(config.name.as_str())
                    // opossum's model: only the error percentage trips, not a run of failures.
                    .failure_threshold(0)
                    .failure_rate(f64::from(b.error_threshold_percentage))
                    .sliding_window(SlidingWindow::Time {
                        period: b.rolling_window,
                        buckets: b.rolling_buckets,
                    })
                    .minimum_calls(b.volume_threshold)
                    .open_timeout(b.reset_timeout)
                    .half_open_max_calls(b.half_open_max_calls)
                    .success_threshold(b.success_threshold)
                    .clock(Arc::clone(&clock))
                    .build()
                    .map_err(|e| format!("service {:?}: {e}", config.name))?;
                if !b.enabled {
                    breaker.disable();
                }
                breaker
            }
        };
        let upstreams = match previous.filter(|o| o.config.upstreams == config.upstreams) {
            Some(old) => Arc::clone(&old.upstreams),
            None => Arc::new(Upstreams::new(&config.upstreams, Arc::clone(&clock))),
        };
        let bulkhead = match previous.filter(|o| o.config.bulkhead == config.bulkhead) {
            Some(old) => old.bulkhead.clone(),
            None if config.bulkhead.enabled => Some(
                Bulkhead::builder()
                    .name(config.name.as_str())
                    .max_concurrent(config.bulkhead.max_concurrent)
                    .max_wait(config.bulkhead.max_wait)
                    .build()
                    .map_err(|e| format!("service {:?}: {e}", config.name))?,
            ),
            None => None,
        };
        let percent = config.retry.as_ref().map(|r| r.budget_percent);
        let retry_budget = match previous
            .filter(|o| o.config.retry.as_ref().map(|r| r.budget_percent) == percent)
        {
            Some(old) => old.retry_budget.clone(),
            None => percent
                .and_then(|p| RetryBudget::new(p, RETRY_RESERVE).ok())
                .map(Arc::new),
        };
        // The checks follow their hosts: kept when neither changed, so a
        // reload does not forget which hosts are out.
        let health_check = match previous.filter(|o| {
            o.config.health_check == config.health_check && Arc::ptr_eq(&o.upstreams, &upstreams)
        }) {
            Some(old) => old.health_check.clone(),
            None => config.health_check.clone().map(|hc| {
                let check = HealthCheck::new(hc, Arc::clone(&upstreams));
                check.start();
                check
            }),
        };
        if health_check.is_none() {
            // Checks removed by a reload: their verdicts go with them.
            for i in 0..upstreams.hosts().len() {
                upstreams.set_probed_healthy(i, true);
            }
        }
        Ok(Service {
            health_check,
            retry_budget,
            latency: previous.map_or_else(Arc::default, |o| Arc::clone(&o.latency)),
            counters: metrics.service(&config.name),
            breaker,
            upstreams,
            bulkhead,
            config,
        })
    }

    /// Its active health checks, when configured.
    pub fn health_check(&self) -> Option<&Arc<HealthCheck>> {
        self.health_check.as_ref()
    }

    /// Requests in flight now (0 when the bulkhead is off: nothing counts them).
    pub fn in_flight(&self) -> usize {
        self.bulkhead.as_ref().map_or(0, |b| b.in_flight() as usize)
    }
}

/// The gateway's request handler: cheap to clone, shared by every connection.
///
/// Its routes and services can be replaced while it serves
/// ([`reload`](Gateway::reload)): a request runs to its end on the
/// configuration it started with, and new requests take the new one.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<State>,
    client: UpstreamClient,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// The Redis connection when `cache.backend = "redis"` (fixed at start:
    /// a reload that changes it is reported as needing a restart).
    redis: Option<Arc<RedisBackend>>,
    /// Last good answers, for fallbacks.
    stale: StaleResponses,
}

#[derive(Debug)]
struct State {
    config: GatewayConfig,
    trusted: Vec<IpNet>,
    router: Router,
    /// By route id.
    route_metrics: Vec<RouteMetrics>,
    services: Vec<Arc<Service>>,
    limiter: Option<Arc<ClientLimiter>>,
}

/// What a reload kept and what it replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Services whose circuit breaker (and its state) carried over.
    pub breakers_kept: Vec<String>,
    /// Services whose breaker was rebuilt because its settings changed, or
    /// that are new.
    pub breakers_new: Vec<String>,
    /// Services that are gone.
    pub removed: Vec<String>,
    /// Settings that only take effect on restart (the listeners).
    pub needs_restart: Vec<String>,
}

/// Marks an answer the gateway made up for a failing service.
const X_DEGRADED_MODE: http::HeaderName = http::HeaderName::from_static("x-degraded-mode");

/// Retries a service keeps in reserve beyond its `budget_percent`.
const RETRY_RESERVE: u32 = 10;

/// Why the gateway answered for the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Open,
    BulkheadFull,
    Timeout,
    Unreachable,
}

impl State {
    /// The state for `config`, keeping from `previous` every piece whose
    /// settings did not change: a breaker keeps its state, a host its
    /// ejection, a bulkhead its in-flight count.
    fn build(
        config: &GatewayConfig,
        clock: &Arc<dyn Clock>,
        metrics: &Metrics,
        redis: Option<&Arc<RedisBackend>>,
        previous: Option<&State>,
        report: &mut ReloadReport,
    ) -> Result<State, String> {
        let mut services = Vec::with_capacity(config.services.len());
        for sc in &config.services {
            let old = previous.and_then(|p| p.services.iter().find(|s| s.config.name == sc.name));
            let svc = Service::new(sc.clone(), Arc::clone(clock), old.map(|s| &**s), metrics)?;
            if old.is_some_and(|o| o.breaker.ptr_eq(&svc.breaker)) {
                report.breakers_kept.push(sc.name.clone());
            } else {
                report.breakers_new.push(sc.name.clone());
            }
            services.push(Arc::new(svc));
        }
        if let Some(p) = previous {
            for old in &p.services {
                if config.service(&old.config.name).is_none() {
                    report.removed.push(old.config.name.clone());
                }
            }
            if p.config.server.listen != config.server.listen {
                report.needs_restart.push("server.listen".into());
            }
            if p.config.server.admin_listen != config.server.admin_listen {
                report.needs_restart.push("server.admin_listen".into());
            }
            if p.config.cache != config.cache {
                report.needs_restart.push("cache".into());
            }
        }
        // The per-client limiter keeps its counts unless its settings change.
        let limiter = match &config.rate_limit {
            None => None,
            Some(rl) => match previous.and_then(|p| {
                let old = p.config.rate_limit.as_ref()?;
                ClientLimiter::same_settings(old, rl).then(|| p.limiter.clone())?
            }) {
                Some(kept) => Some(kept),
                None => {
                    let l = match redis {
                        Some(r) => ClientLimiter::shared(rl, Arc::clone(r))?,
                        None => ClientLimiter::local(rl, Arc::clone(clock))?,
                    };
                    if let ClientLimiter::Local(k) = &l {
                        metrics.add_rate_limiter(k);
                    }
                    Some(Arc::new(l))
                }
            },
        };
        let router = Router::new(&config.routes, |name| {
            config.services.iter().position(|s| s.name == name)
        });
        let route_metrics = config
            .routes
            .iter()
            .map(|r| metrics.route(&r.path_prefix))
            .collect();
        Ok(State {
            route_metrics,
            config: config.clone(),
            trusted: config.server.trusted_proxies.clone(),
            router,
            services,
            limiter,
        })
    }
}

impl Gateway {
    /// Builds the handler for `config`, with time read from `clock`.
    pub fn new(config: &GatewayConfig, clock: Arc<dyn Clock>) -> Result<Gateway, String> {
        let metrics = Metrics::new();
        let redis = match &config.cache.backend {
            CacheBackend::Redis { url } => {
                let r = RedisBackend::new(url)?;
                if tokio::runtime::Handle::try_current().is_ok() {
                    drop(r.spawn_probe());
                }
                Some(r)
            }
            CacheBackend::Memory => None,
        };
        let state = State::build(
            config,
            &clock,
            &metrics,
            redis.as_ref(),
            None,
            &mut ReloadReport::default(),
        )?;
        let client = UpstreamClient::new(Duration::from_secs(5));
        metrics.set_breakers(state.services.iter().map(|s| s.breaker.clone()));
        metrics.set_bulkheads(state.services.iter().filter_map(|s| s.bulkhead.as_ref()));
        Ok(Gateway {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(state),
                client,
                metrics,
                clock,
                stale: StaleResponses::new(config.cache.ttl, redis.clone()),
                redis,
            }),
        })
    }

    /// Serves `config` from now on. In-flight requests finish on the old one.
    /// A service whose breaker settings are unchanged keeps its breaker, state
    /// included; listener changes are reported as needing a restart.
    pub fn reload(&self, config: &GatewayConfig) -> Result<ReloadReport, String> {
        let previous = self.shared.current.load_full();
        let mut report = ReloadReport::default();
        let state = State::build(
            config,
            &self.shared.clock,
            &self.shared.metrics,
            self.shared.redis.as_ref(),
            Some(&previous),
            &mut report,
        )?;
        self.shared
            .metrics
            .set_breakers(state.services.iter().map(|s| s.breaker.clone()));
        self.shared
            .metrics
            .set_bulkheads(state.services.iter().filter_map(|s| s.bulkhead.as_ref()));
        crate::health_check::stop_replaced(&previous.services, &state.services);
        self.shared.current.store(Arc::new(state));
        tracing::info!(?report, "configuration reloaded");
        Ok(report)
    }

    /// The configuration being served.
    pub fn config(&self) -> GatewayConfig {
        self.shared.current.load().config.clone()
    }

    /// The services, in config order.
    pub fn services(&self) -> Vec<Arc<Service>> {
        self.shared.current.load().services.clone()
    }

    /// The Prometheus registry behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The Redis connection, when the config's cache backend is Redis.
    pub fn redis(&self) -> Option<&Arc<RedisBackend>> {
        self.shared.redis.as_ref()
    }

    /// Answers one client request that arrived from `peer`.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        self.serve(req, peer, None).await
    }

    /// Answers one client request that arrived from `peer` on `conn`, whose
    /// writes then get the answer's deadline.
    pub async fn handle_on(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn: &ClientConn,
    ) -> Result<Response<Body>, Infallible> {
        self.serve(req, peer, Some(conn)).await
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn: Option<&ClientConn>,
    ) -> Result<Response<Body>, Infallible> {
        let s = &*self.shared;
        let state = s.current.load_full();
        let started = s.clock.now();
        let (mut parts, body) = req.into_parts();
        let request_id = headers::request_id(&mut parts.headers);
        let client = headers::ClientAddr::of(peer, &parts.headers, &state.trusted);

        // Per-client rate limit, before anything else costs us work.
        if let Some(limiter) = &state.limiter
            && let Some(rl) = &state.config.rate_limit
            && let Err(refused) = limiter.check(client.rate_key(rl.ipv6_prefix)).await
        {
            tracing::debug!(client = %client.client, "rate limited");
            let mut resp: Response<Body> = refused
                .to_response::<String>()
                .map(|text| Either::Left(Full::new(Bytes::from(text))));
            resp.headers_mut().insert(headers::REQUEST_ID, request_id);
            bound_writes(conn, &resp, state.config.server.write_timeout);
            return Ok(resp);
        }

        // Routed and forwarded as normalised, so `..` cannot leave a route.
        if let Err(e) = crate::path::normalise_uri(&mut parts.uri) {
            let mut resp = json_error(StatusCode::BAD_REQUEST, "bad_path", &e.to_string());
            resp.headers_mut().insert(headers::REQUEST_ID, request_id);
            return Ok(resp);
        }
        let Some(route) = state.router.route(parts.uri.path()).cloned() else {
            let mut resp = json_error(
                StatusCode::NOT_FOUND,
                "no_route",
                &format!("no route for {}", parts.uri.path()),
            );
            resp.headers_mut().insert(headers::REQUEST_ID, request_id);
            bound_writes(conn, &resp, state.config.server.write_timeout);
            return Ok(resp);
        };
        let service = &state.services[route.service];
        // Boxed: the request path's state is a few KiB, and hyper moves the
        // handler's future into place; moving a pointer is cheaper than
        // moving the state, one allocation included.
        let mut resp = Box::pin(self.forward(&state, service, &route, parts, body, client)).await;
        resp.headers_mut().insert(headers::REQUEST_ID, request_id);
        bound_writes(conn, &resp, state.config.server.write_timeout);
        let elapsed = s.clock.now().saturating_duration_since(started);
        service.latency.record(elapsed);
        state.route_metrics[route.id].observe(resp.status().as_u16(), elapsed);
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        state: &State,
        service: &Service,
        route: &crate::router::Route,
        mut parts: http::request::Parts,
        body: Incoming,
        client: headers::ClientAddr,
    ) -> Response<Body> {
        let s = &*self.shared;
        // The total time this request may take, from now: the service's
        // `timeout`, or less if the client says it will wait less.
        let budget = match Deadline::from_headers(&parts.headers) {
            Some(theirs) => theirs.remaining().min(service.config.timeout),
            None => service.config.timeout,
        };
        let deadline = s.clock.now().saturating_add(budget);
        // The same instant on tokio's clock, for the timers.
        let wall_deadline = tokio::time::Instant::now() + budget;

        // The body is read whole, within the limit and the deadline, so that an attempt can be
        // replayed on retry; a declared length over the limit is refused unread.
        let limit = state.config.server.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large(limit);
        }
        // Most requests (GET, HEAD) have no body: skip the collection machinery.
        let body = if hyper::body::Body::is_end_stream(&body) {
            Bytes::new()
        } else {
            let read = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect();
            match tokio::time::timeout_at(wall_deadline, read).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return too_large(limit);
                }
                Err(_) => {
                    return json_error(
                        StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        "the request body did not arrive within the service's timeout",
                    );
                }
                Ok(Err(_)) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        "the request body could not be read",
                    );
                }
            }
        };

        // Where this request's last good answer is kept, if it may have one
        // (`cacheable` decides: never another user's). HEAD reads GET's
        // answer; only a GET's answer is stored.
        let is_get = parts.method == Method::GET;
        let fallback_config = &service.config.fallback;
        let stale_key = if fallback_config.stale_cache {
            cacheable::request_key(
                &service.config.name,
                &parts.method,
                &parts.uri,
                &parts.headers,
                fallback_config.stale_cache_private,
            )
        } else {
            None
        };

        // Bulkhead: a slot, or a refusal after `max_wait`. The slot travels
        // with the response body, so a streamed answer keeps it until it ends.
        let slot = match &service.bulkhead {
            Some(bulkhead) => match bulkhead.acquire_owned().await {
                Ok(slot) => Some(slot),
                Err(_) => {
                    service.counters.count(Outcome::BulkheadFull);
                    return self
                        .fallback(
                            service,
                            Refusal::BulkheadFull,
                            stale_key.as_deref(),
                            &parts.headers,
                        )
                        .await;
                }
            },
            None => None,
        };

        // Circuit breaker: a permit, or the fallback at once. Owned: a good
        // answer's permit is judged at the end of its body.
        let permit = match service.breaker.try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                service.counters.count(Outcome::Rejected);
                return self
                    .fallback(service, Refusal::Open, stale_key.as_deref(), &parts.headers)
                    .await;
            }
        };

        let upstream_host = parts.headers.get(header::HOST).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::append_forwarded(&mut parts.headers, &client, upstream_host.as_ref());

        // The client's path and query as is (no copy) unless the route
        // strips its prefix or the upstream URL has a base path.
        let path_and_query: Option<String> = if route.strip_prefix {
            let path = Router::upstream_path(route, parts.uri.path());
            Some(match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            })
        } else {
            None
        };
        let retry = service
            .config
            .retry
            .as_ref()
            .filter(|_| route.retry_non_idempotent || is_idempotent(&parts.method));
        let attempts = retry.map_or(1, |r| r.attempts.max(1));
        let mut rng: Option<SplitMix64> = None; // seeded only if a retry needs jitter
        let mut prev_delay = retry.map_or(Duration::ZERO, |r| r.initial);

        if let Some(b) = &service.retry_budget {
            b.deposit();
        }
        let mut attempt = 1;
        let result = loop {
            let Some(host) = service.upstreams.pick() else {
                break Err(Refusal::Unreachable);
            };
            let left = remaining(deadline, s.clock.now());
            let try_limit = service.config.per_try_timeout.map_or(left, |t| t.min(left));
            let base = &service.upstreams.hosts()[host].url;
            let Some(authority) = base.authority() else {
                break Err(Refusal::Unreachable);
            };
            let target = upstream_target(base, path_and_query.as_deref(), &parts.uri);
            // The upstream learns how long this attempt may take (any value the
            // client sent is replaced: it was honoured above).
            parts.headers.insert(
                rempart::deadline::HEADER,
                HeaderValue::from(u64::try_from(try_limit.as_millis()).unwrap_or(u64::MAX)),
            );
            let req = UpstreamRequest {
                method: &parts.method,
                target: &target,
                headers: &parts.headers,
                body: &body,
            };
            let outcome = match tokio::time::timeout(try_limit, s.client.send(authority, req)).await
            {
                Ok(Ok(resp)) => {
                    if resp.status().is_server_error() {
                        service.upstreams.failure(host);
                    } else {
                        service.upstreams.success(host);
                    }
                    Attempt::Answered(resp)
                }
                Ok(Err(e)) => {
                    service.upstreams.failure(host);
                    if e.is_connect() {
                        Attempt::Connect
                    } else {
                        Attempt::Reset
                    }
                }
                Err(_) => {
                    service.upstreams.failure(host);
                    Attempt::Timeout
                }
            };
            let retryable = retry.is_some_and(|r| outcome.matches(&r.on));
            if !retryable || attempt >= attempts {
                break Ok(outcome);
            }
            // The budget refuses: this outcome stands rather than add load.
            if service.retry_budget.as_ref().is_some_and(|b| !b.withdraw()) {
                service.counters.count(Outcome::BudgetExhausted);
                break Ok(outcome);
            }
            let r = retry.expect("retryable implies a retry policy");
            let backoff = backoff_delay(
                r,
                attempt,
                prev_delay,
                rng.get_or_insert_with(SplitMix64::from_entropy),
            );
            let (status, retry_after) = match &outcome {
                Attempt::Answered(resp) => (Some(resp.status().as_u16()), retry_after(resp)),
                _ => (None, None),
            };
            let left = remaining(deadline, s.clock.now());
            // No time left for the pause and another try: this outcome stands.
            let Some(delay) = crate::retry_pause::pause(status, retry_after, backoff, left) else {
                break Ok(outcome);
            };
            prev_delay = delay;
            tokio::time::sleep(delay).await;
            attempt += 1;
        };

        match result {
            Ok(Attempt::Answered(resp)) => {
                // A good answer's permit is judged when its body ends.
                let mut permit = Some(permit);
                if resp.status().is_server_error() {
                    if let Some(p) = permit.take() {
                        p.failure();
                    }
                    service.counters.count(Outcome::Failure);
                    // A kept good answer beats a 5xx; without one, the 5xx goes
                    // to the client as the upstream sent it.
                    if let Some(key) = stale_key.as_deref()
                        && let Some(stale) = self.stale_answer(key, &parts.headers).await
                    {
                        service.counters.count(Outcome::Fallback);
                        return stale;
                    }
                } else {
                    service.counters.count(Outcome::Success);
                }
                // The client has already dropped the hop-by-hop fields.
                let (rparts, rbody) = resp.into_parts();
                // A shareable 200 small enough to keep is read whole and kept
                // for later fallbacks; anything else streams through.
                let keepable = rparts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|n| n <= crate::stale::MAX_BODY);
                let keep = match &stale_key {
                    Some(_) if is_get && keepable => cacheable::response_keep(
                        &parts.headers,
                        rparts.status,
                        &rparts.headers,
                        fallback_config.stale_cache_private,
                    ),
                    _ => None,
                };
                if let Some(base) = stale_key.as_ref()
                    && let Some(keep) = keep
                    && s.stale.wants(base, &keep, &parts.headers).await
                {
                    return match tokio::time::timeout_at(wall_deadline, rbody.collect()).await {
                        Ok(Ok(collected)) => {
                            if let Some(p) = permit.take() {
                                p.success();
                            }
                            let body = collected.to_bytes();
                            let answer = StaleAnswer::new(200, &rparts.headers, body.clone());
                            s.stale.put(base, &keep, &parts.headers, answer).await;
                            drop(slot);
                            Response::from_parts(rparts, Either::Left(Full::new(body)))
                        }
                        Ok(Err(_)) => {
                            if let Some(p) = permit.take() {
                                p.failure();
                            }
                            self.fallback(service, Refusal::Unreachable, None, &parts.headers)
                                .await
                        }
                        Err(_) => {
                            if let Some(p) = permit.take() {
                                p.failure();
                            }
                            self.fallback(service, Refusal::Timeout, None, &parts.headers)
                                .await
                        }
                    };
                }
                let body = DeadlineBody::new(rbody, wall_deadline, slot, permit);
                Response::from_parts(rparts, Either::Right(body))
            }
            Ok(Attempt::Timeout) => {
                permit.failure();
                service.counters.count(Outcome::Timeout);
                self.fallback(
                    service,
                    Refusal::Timeout,
                    stale_key.as_deref(),
                    &parts.headers,
                )
                .await
            }
            Ok(Attempt::Connect | Attempt::Reset) | Err(_) => {
                permit.failure();
                service.counters.count(Outcome::Failure);
                self.fallback(
                    service,
                    Refusal::Unreachable,
                    stale_key.as_deref(),
                    &parts.headers,
                )
                .await
            }
        }
    }

    /// The answer kept under `key` for a request with `request` headers,
    /// marked degraded, with its `Age`.
    async fn stale_answer(&self, key: &str, request: &http::HeaderMap) -> Option<Response<Body>> {
        let (answer, age) = self.shared.stale.get(key, request).await?;
        let mut resp = Response::new(Either::Left(Full::new(answer.body)));
        *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        let h = resp.headers_mut();
        for (name, value) in answer.headers {
            h.append(name, value);
        }
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
        h.insert(X_DEGRADED_MODE, HeaderValue::from_static("true"));
        Some(resp)
    }

    /// What the client gets when the service cannot answer: the last good
    /// answer to the same request if one is kept, else the degraded JSON.
    async fn fallback(
        &self,
        service: &Service,
        why: Refusal,
        stale_key: Option<&str>,
        request: &http::HeaderMap,
    ) -> Response<Body> {
        service.counters.count(Outcome::Fallback);
        if let Some(key) = stale_key
            && let Some(resp) = self.stale_answer(key, request).await
        {
            return resp;
        }
        let (status, code) = match why {
            Refusal::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Refusal::Open => (StatusCode::SERVICE_UNAVAILABLE, "circuit_open"),
            Refusal::BulkheadFull => (StatusCode::SERVICE_UNAVAILABLE, "service_busy"),
            Refusal::Unreachable => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
        };
        let mut resp = json_response(
            status,
            &ErrorBody {
                error: code,
                service: Some(&service.config.name),
                message: &service.config.fallback.message,
            },
        );
        let secs = service.config.fallback.retry_after.as_secs().max(1);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp.headers_mut()
            .insert(X_DEGRADED_MODE, HeaderValue::from_static("true"));
        resp
    }
}

// Lives on the stack for one attempt; boxing the common variant would cost an
// allocation per request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Answered(Response<UpstreamBody>),
    Connect,
    Reset,
    Timeout,
}

impl Attempt {
    fn matches(&self, on: &[RetryOn]) -> bool {
        on.iter().any(|o| match (o, self) {
            (RetryOn::Status(code), Attempt::Answered(r)) => r.status().as_u16() == *code,
            (RetryOn::Connect, Attempt::Connect)
            | (RetryOn::Reset, Attempt::Reset)
            | (RetryOn::Timeout, Attempt::Timeout) => true,
            _ => false,
        })
    }
}

fn remaining(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

/// The upstream's `Retry-After`, read only where the library heeds one.
fn retry_after(resp: &Response<UpstreamBody>) -> Option<Duration> {
    if !matches!(resp.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    // An HTTP-date is wall-clock time; delay-seconds (the usual form) is not.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    parse_retry_after(value, now)
}

/// Gives the connection's writes the answer's deadline: an upstream's
/// streamed answer has what is left of the request's; the gateway's own
/// answers get `write_timeout`.
fn bound_writes(conn: Option<&ClientConn>, resp: &Response<Body>, write_timeout: Duration) {
    if let Some(conn) = conn {
        conn.write_by(match resp.body() {
            Either::Right(streamed) => streamed.deadline(),
            Either::Left(_) => tokio::time::Instant::now() + write_timeout,
        });
    }
}

/// The library's backoff and jitter for a service's `retry` settings.
fn retry_schedule(r: &crate::config::RetryConfig) -> (Backoff, Jitter) {
    // The config checked `max >= initial`, so the constructors cannot refuse.
    let backoff = match r.backoff {
        BackoffKind::Constant => Backoff::constant(r.initial),
        BackoffKind::Linear => {
            Backoff::linear(r.initial, r.max).unwrap_or(Backoff::constant(r.initial))
        }
        BackoffKind::Exponential => {
            Backoff::exponential(r.initial, 2.0, r.max).unwrap_or(Backoff::constant(r.initial))
        }
    };
    let jitter = match r.jitter {
        JitterKind::None => Jitter::None,
        JitterKind::Full => Jitter::Full,
        JitterKind::Equal => Jitter::Equal,
        JitterKind::Decorrelated => Jitter::Decorrelated,
    };
    (backoff, jitter)
}

/// The pause before retry `attempt` (1-based), given the previous pause.
fn backoff_delay(
    r: &crate::config::RetryConfig,
    attempt: u32,
    prev: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let (backoff, jitter) = retry_schedule(r);
    jitter.apply(
        backoff.delay(attempt),
        prev,
        backoff.initial(),
        backoff.max(),
        rng,
    )
}

/// The request target upstream: `base`'s path as a prefix, then `rewritten`
/// (a stripped path) or else the client's own path and query. Borrowed from
/// the client's request in the common case of neither.
fn upstream_target<'a>(base: &Uri, rewritten: Option<&'a str>, client: &'a Uri) -> Cow<'a, str> {
    let prefix = base.path().trim_end_matches('/');
    let tail = rewritten.unwrap_or_else(|| client.path_and_query().map_or("/", |pq| pq.as_str()));
    if prefix.is_empty() {
        Cow::Borrowed(tail)
    } else {
        Cow::Owned(format!("{prefix}{tail}"))
    }
}

fn too_large(limit: u64) -> Response<Body> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than the gateway's limit of {limit} bytes"),
    )
}

/// A JSON error body `{"error": code, "message": message}`.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &ErrorBody {
            error: code,
            service: None,
            message,
        },
    )
}

/// The gateway's JSON error body, fields in this order.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    message: &'a str,
}

fn json_response(status: StatusCode, body: &ErrorBody<'_>) -> Response<Body> {
    // Serializing three strings cannot fail; an empty object would be a bug, not a panic.
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;

    fn retry(backoff: BackoffKind, jitter: JitterKind) -> RetryConfig {
        RetryConfig {
            attempts: 5,
            backoff,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter,
            on: vec![],
            budget_percent: 20,
        }
    }

    #[test]
    fn exponential_delays_double_up_to_the_cap() {
        let r = retry(BackoffKind::Exponential, JitterKind::None);
        let mut rng = SplitMix64::seeded(1);
        let d: Vec<u64> = (1..=6)
            .map(|a| backoff_delay(&r, a, Duration::ZERO, &mut rng).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_stays_within_the_delay() {
        let r = retry(BackoffKind::Constant, JitterKind::Full);
        let mut rng = SplitMix64::seeded(2);
        for _ in 0..1000 {
            assert!(backoff_delay(&r, 1, Duration::ZERO, &mut rng) <= Duration::from_millis(100));
        }
    }

    #[test]
    fn json_error_bodies_keep_their_fields_in_order_and_escape_text() {
        let resp = json_error(StatusCode::BAD_REQUEST, "bad", "say \"hi\"\n");
        let Either::Left(full) = resp.into_body() else {
            panic!("a made-up body")
        };
        let body = futures_lite_body(full);
        assert_eq!(body, r#"{"error":"bad","message":"say \"hi\"\n"}"#);
    }

    fn futures_lite_body(full: Full<Bytes>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(full.collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn upstream_targets_keep_the_base_path() {
        let base: Uri = "http://127.0.0.1:7003/api/".parse().unwrap();
        let client: Uri = "/reports?x=1".parse().unwrap();
        assert_eq!(upstream_target(&base, None, &client), "/api/reports?x=1");
        let bare: Uri = "http://127.0.0.1:7003".parse().unwrap();
        assert_eq!(upstream_target(&bare, None, &client), "/reports?x=1");
        assert_eq!(upstream_target(&bare, Some("/7"), &client), "/7");
        assert_eq!(upstream_target(&base, Some("/7"), &client), "/api/7");
    }
}

#[cfg(test)]
mod size_probe {
    /// hyper moves each request's handler future into place: it must stay
    /// small (the request path is boxed behind it; it was 3.7 KiB unboxed).
    #[test]
    fn the_handler_future_stays_small() {
        fn size_of_ret<F: std::future::Future>(
            _f: impl Fn(http::Request<hyper::body::Incoming>) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cfg = crate::config::GatewayConfig::parse(
                "[[services]]\nname = \"a\"\nupstreams = [\"http://127.0.0.1:1\"]\n[[routes]]\npath_prefix = \"/\"\nservice = \"a\"\n",
                "x",
            )
            .unwrap();
            let gw = super::Gateway::new(&cfg, std::sync::Arc::new(rempart::clock::TokioClock::new())).unwrap();
            let n = size_of_ret(|r| gw.handle(r, "127.0.0.1:1".parse().unwrap()));
            assert!(n <= 1536, "the handler future grew to {n} bytes");
        });
    }
}
