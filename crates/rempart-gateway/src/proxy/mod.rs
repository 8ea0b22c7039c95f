//! The request path: one client request through the gateway to an upstream.
//!
//! Each decision has its file, read in this order (ARCHITECTURE.md draws it):
//!
//! - `admission`: request id, client address, per-client rate limit, path
//!   normalisation, route; the request's deadline and body;
//! - `attempts`: retry → circuit breaker → bulkhead → per-try timeout, the
//!   library's order (`rempart::pipeline`), applied to every attempt;
//! - this file: from the last attempt to the answer: streamed under the
//!   deadline with its permit and slot, or read whole and kept for later
//!   fallbacks when it may be shared;
//! - `fallback`: the last good answer marked degraded, or a degraded JSON
//!   503/504 with `Retry-After`;
//! - `reload`: which running state a new configuration keeps.
//!
//! The total timeout (shortened, never lengthened, by the client's
//! `x-request-timeout-ms`) bounds every phase: reading the request body,
//! the attempts, and streaming the answer back ([`DeadlineBody`]); the
//! connection's write deadline ([`crate::client_conn`]) covers a client that
//! stops reading. The bulkhead slot and the breaker's permit ride the answer's
//! body to its end, so a body cut off mid-way is a failure.

mod admission;
mod attempts;
mod defer;
mod fallback;
mod reload;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use ipnet::IpNet;
use rempart::CircuitBreaker;
use rempart::bulkhead::{Bulkhead, OwnedBulkheadPermit};
use rempart::circuit_breaker::OwnedPermit;
use rempart::clock::Clock;
use rempart::retry::RetryBudget;

use crate::cacheable;
use crate::client::{UpstreamBody, UpstreamClient};
use crate::client_conn::ClientConn;
use crate::client_limit::ClientLimiter;
use crate::config::{CacheBackend, GatewayConfig, ServiceConfig};
use crate::deadline_body::DeadlineBody;
use crate::headers;
use crate::health_check::HealthCheck;
use crate::metrics::{LatencyWindow, Metrics, Outcome, RouteMetrics, ServiceCounters};
use crate::queue::service::ServiceQueue;
use crate::redis_backend::RedisBackend;
use crate::router::{Route, Router};
use crate::stale::{StaleAnswer, StaleResponses};
use crate::upstream::Upstreams;
use attempts::{Attempt, Tried};
use fallback::Refusal;

pub use defer::ServiceReplayer;
pub use reload::ReloadReport;

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
    queue: Option<Arc<ServiceQueue>>,
}

impl Service {
    /// Its active health checks, when configured.
    pub fn health_check(&self) -> Option<&Arc<HealthCheck>> {
        self.health_check.as_ref()
    }

    /// Its queue, when requests to it may be deferred.
    pub fn queue(&self) -> Option<&Arc<ServiceQueue>> {
        self.queue.as_ref()
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

    /// A request routed to `service`: its deadline and body, the attempts,
    /// then the answer or the fallback.
    async fn forward(
        &self,
        state: &State,
        service: &Service,
        route: &Route,
        mut parts: http::request::Parts,
        body: Incoming,
        client: headers::ClientAddr,
    ) -> Response<Body> {
        let s = &*self.shared;
        let budget = admission::budget(service, &parts.headers);
        let deadline = s.clock.now().saturating_add(budget);
        // The same instant on tokio's clock, for the timers.
        let wall_deadline = tokio::time::Instant::now() + budget;
        let limit = state.config.server.max_body_bytes;
        let body = match admission::read_body(body, &parts.headers, limit, wall_deadline).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };

        // Where this request's last good answer is kept, if it may have one
        // (`cacheable` decides: never another user's). HEAD reads GET's
        // answer; only a GET's answer is stored.
        let stale_key = if service.config.fallback.stale_cache {
            cacheable::request_key(
                &service.config.name,
                &parts.method,
                &parts.uri,
                &parts.headers,
                service.config.fallback.stale_cache_private,
            )
        } else {
            None
        };

        let upstream_host = parts.headers.get(header::HOST).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::append_forwarded(&mut parts.headers, &client, upstream_host.as_ref());

        let tried = self
            .attempts(service, route, &mut parts, &body, deadline, wall_deadline)
            .await;
        let stale_key = stale_key.as_ref();
        let refusal = match tried {
            // A 5xx on a route that defers is queued rather than passed on.
            Tried::Sent {
                outcome: Attempt::Answered(resp),
                permit,
                slot,
            } if !(resp.status().is_server_error()
                && self.defers(state, service, route, &parts)) =>
            {
                return self
                    .deliver(
                        service,
                        &parts,
                        stale_key,
                        resp,
                        permit,
                        slot,
                        wall_deadline,
                    )
                    .await;
            }
            Tried::Sent {
                outcome: Attempt::Timeout,
                ..
            } => {
                // The upstream may have acted on it: not deferred, not replayed.
                service.counters.count(Outcome::Timeout);
                return self
                    .fallback(
                        service,
                        Refusal::Timeout,
                        stale_key.map(String::as_str),
                        &parts.headers,
                    )
                    .await;
            }
            Tried::Sent { .. } | Tried::Refused(Refusal::Unreachable) => {
                service.counters.count(Outcome::Failure);
                Refusal::Unreachable
            }
            Tried::Refused(why) => why,
        };
        let methods = &state.config.routes[route.id].queue_methods;
        if let Some(accepted) = self
            .try_defer(service, methods, &parts, &body, &client)
            .await
        {
            return accepted;
        }
        self.fallback(
            service,
            refusal,
            stale_key.map(String::as_str),
            &parts.headers,
        )
        .await
    }

    /// Whether a request on `route` may be deferred to `service`'s queue.
    fn defers(
        &self,
        state: &State,
        service: &Service,
        route: &Route,
        parts: &http::request::Parts,
    ) -> bool {
        service.queue.is_some()
            && state.config.routes[route.id]
                .queue_methods
                .contains(&parts.method)
    }

    /// The upstream's answer to the client. A 5xx gives way to a kept good
    /// answer when there is one. A shareable 200 small enough to keep is read
    /// whole (by the deadline) and kept for later fallbacks; anything else
    /// streams through under the deadline, its permit and slot riding the body.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        service: &Service,
        request: &http::request::Parts,
        stale_key: Option<&String>,
        resp: Response<UpstreamBody>,
        mut permit: Option<OwnedPermit>,
        slot: Option<OwnedBulkheadPermit>,
        wall_deadline: tokio::time::Instant,
    ) -> Response<Body> {
        let s = &*self.shared;
        if resp.status().is_server_error() {
            service.counters.count(Outcome::Failure);
            // A kept good answer beats a 5xx; without one, the 5xx goes to
            // the client as the upstream sent it.
            if let Some(key) = stale_key
                && let Some(stale) = self.stale_answer(key, &request.headers).await
            {
                service.counters.count(Outcome::Fallback);
                return stale;
            }
        } else {
            service.counters.count(Outcome::Success);
        }
        // The client has already dropped the hop-by-hop fields.
        let (rparts, rbody) = resp.into_parts();
        let keepable = rparts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= crate::stale::MAX_BODY);
        let keep = match stale_key {
            Some(_) if request.method == Method::GET && keepable => cacheable::response_keep(
                &request.headers,
                rparts.status,
                &rparts.headers,
                service.config.fallback.stale_cache_private,
            ),
            _ => None,
        };
        if let Some(base) = stale_key
            && let Some(keep) = keep
            && s.stale.wants(base, &keep, &request.headers).await
        {
            return match tokio::time::timeout_at(wall_deadline, rbody.collect()).await {
                Ok(Ok(collected)) => {
                    if let Some(p) = permit.take() {
                        p.success();
                    }
                    let body = collected.to_bytes();
                    let answer = StaleAnswer::new(200, &rparts.headers, body.clone());
                    s.stale.put(base, &keep, &request.headers, answer).await;
                    drop(slot);
                    Response::from_parts(rparts, Either::Left(Full::new(body)))
                }
                Ok(Err(_)) => {
                    if let Some(p) = permit.take() {
                        p.failure();
                    }
                    self.fallback(service, Refusal::Unreachable, None, &request.headers)
                        .await
                }
                Err(_) => {
                    if let Some(p) = permit.take() {
                        p.failure();
                    }
                    self.fallback(service, Refusal::Timeout, None, &request.headers)
                        .await
                }
            };
        }
        let body = DeadlineBody::new(rbody, wall_deadline, slot, permit);
        Response::from_parts(rparts, Either::Right(body))
    }
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
