//! The configuration the rest of the gateway reads: plain structs and enums,
//! with the defaults in their docs. Nothing here parses or checks; a value of
//! these types has already passed validation (`super::validate`).

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

/// Everything the gateway runs from.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Listeners, shutdown and request limits (`[server]`).
    pub server: ServerConfig,
    /// Per-client-IP rate limit (`[rate_limit]`); `None` when the section is absent.
    pub rate_limit: Option<RateLimitConfig>,
    /// Where stale responses for fallbacks are kept (`[cache]`).
    pub cache: CacheConfig,
    /// The upstream services, in file order (`[[services]]`).
    pub services: Vec<ServiceConfig>,
    /// Path prefixes routed to services, in file order (`[[routes]]`).
    pub routes: Vec<RouteConfig>,
    /// What the file should change but that still works (deprecated keys),
    /// each as `file:line:column: `key`: message`; logged at start and reload.
    pub warnings: Vec<String>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where clients connect. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where `/health`, `/ready`, `/metrics`, the dashboard and the admin API
    /// listen. Default `127.0.0.1:9901`.
    pub admin_listen: SocketAddr,
    /// Bearer token the admin listener demands; required when it is bound to a
    /// non-loopback address.
    pub admin_token: Option<String>,
    /// How long in-flight requests get to finish after SIGTERM. Default 30 s.
    pub shutdown_grace: Duration,
    /// Largest request head (request line and headers) accepted. Default 16 KiB.
    pub max_header_bytes: u64,
    /// Largest request body accepted. Default 10 MiB.
    pub max_body_bytes: u64,
    /// Time a client gets to send the whole request head (slowloris), and
    /// how long a keep-alive connection may wait idle for its next request
    /// (hyper starts this timer as soon as it waits). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time the client gets to take the gateway's own answers (errors,
    /// fallbacks, stale answers); an upstream's answer has what is left of
    /// its service's `timeout` instead. Default 10 s.
    pub write_timeout: Duration,
    /// Client connections open at once; past it a connection gets a 503 and
    /// is closed. Default 10,000.
    pub max_connections: usize,
    /// Threads serving requests; 0 (the default) means one per CPU.
    pub worker_threads: usize,
    /// Connections from these networks may name the client in
    /// `X-Forwarded-For`; from anywhere else the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// After SIGTERM, how long `/ready` answers 503 while the gateway still
    /// accepts, so load balancers stop sending before the listener closes.
    /// Default 5 s; 0 closes at once.
    pub drain_delay: Duration,
}

/// `[rate_limit]`: a token bucket per client IP.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per second refilled into each client's bucket.
    pub rate: u32,
    /// Bucket size: requests a client may send at once. Default `rate`.
    pub burst: u32,
    /// IPv6 clients share one bucket per network of this prefix length
    /// (a host gets a whole /64, so per address it could rotate). Default 64.
    pub ipv6_prefix: u8,
}

/// `[cache]`: the stale-if-error store.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Where entries live.
    pub backend: CacheBackend,
    /// How long a good response may be served stale. Default 5 min.
    pub ttl: Duration,
}

/// `cache.backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// In this process only (default).
    Memory,
    /// In Redis, shared by every gateway instance that names the same server.
    Redis {
        /// `redis://host:port[/db]`; default `redis://127.0.0.1:6379`.
        url: String,
    },
}

/// One `[[services]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name, used in metric labels and the admin API.
    pub name: String,
    /// Where requests go, chosen by weight.
    pub upstreams: Vec<UpstreamConfig>,
    /// Total time a request may take, retries included. Default 3 s.
    pub timeout: Duration,
    /// Time one attempt may take; default: the total timeout.
    pub per_try_timeout: Option<Duration>,
    /// Concurrency isolation.
    pub bulkhead: BulkheadConfig,
    /// When to stop calling the service.
    pub circuit_breaker: BreakerConfig,
    /// Retries; `None` means a failed attempt is final.
    pub retry: Option<RetryConfig>,
    /// What clients get when the service cannot answer.
    pub fallback: FallbackConfig,
    /// Active probes of each upstream host; `None`: passive ejection only.
    pub health_check: Option<HealthCheckConfig>,
    /// Deferring requests to a queue (202 Accepted); `None`: never deferred.
    pub queue: Option<QueueConfig>,
}

/// `queue = { ... }`: requests the service cannot answer now are kept in
/// RabbitMQ and replayed by a worker (seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// The broker, `amqp://user:password@host:port/vhost`. Required.
    pub amqp_url: String,
    /// The work queue; the dead letters go to `NAME.dlq`, the waits to
    /// `NAME.delay.N`. Default `SERVICE-jobs`.
    pub name: String,
    /// Replays in all before the job is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// `backoff.initial`: the first wait. Default 1 s.
    pub backoff_initial: Duration,
    /// `backoff.max`: the largest wait. Default 60 s.
    pub backoff_max: Duration,
    /// How long a result (or a dead job) is kept for polls. Default 24 h.
    pub result_ttl: Duration,
    /// Where results are kept. Default memory.
    pub results: ResultsBackend,
    /// Whether `rempart gateway` replays this queue's jobs itself. Default
    /// true; false when a separate `rempart worker` does.
    pub worker: bool,
    /// `owner_cookies`: the cookies that say who a client is (its session),
    /// so that cookies which change between requests (analytics, CSRF) do
    /// not make a client a stranger to its own job. Empty (the default):
    /// the whole `Cookie` header counts.
    pub owner_cookies: Vec<String>,
}

/// `queue.results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsBackend {
    /// In this process only: a separate `rempart worker` cannot share them.
    Memory,
    /// In Redis at `[cache].redis_url`, shared by gateways and workers.
    Redis,
}

/// `health_check = { ... }`: a `GET` to each upstream host every `interval`.
///
/// A host that fails `unhealthy_threshold` probes in a row takes no traffic
/// until it passes `healthy_threshold` in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Path probed (after the upstream URL's own path). Default `/health`.
    pub path: String,
    /// Time between two rounds of probes. Default 5 s.
    pub interval: Duration,
    /// Time a probe may take before it counts as failed. Default 1 s.
    pub timeout: Duration,
    /// Failed probes in a row that take a host out. Default 3.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that bring it back. Default 2.
    pub healthy_threshold: u32,
    /// Statuses that pass, inclusive. Default 200 to 399.
    pub expected_status: (u16, u16),
}

/// One upstream of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `http://host:port` (a path prefix is allowed).
    pub url: Uri,
    /// Share of traffic relative to the service's other upstreams. Default 1.
    pub weight: u32,
}

/// `bulkhead = { ... }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Off: no concurrency limit at all. Default on.
    pub enabled: bool,
    /// Requests in flight at once. Default 100.
    pub max_concurrent: u32,
    /// How long a request waits for a slot before it is refused. Default 0 s.
    pub max_wait: Duration,
}

/// `circuit_breaker = { ... }`: opossum-style error percentage over a rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Off: calls are neither judged nor refused. Default on.
    pub enabled: bool,
    /// Open when this percentage of the window's calls failed. Default 50.
    pub error_threshold_percentage: u8,
    /// Calls the window must hold before the percentage is judged. Default 10.
    pub volume_threshold: u32,
    /// Length of the rolling window. Default 10 s.
    pub rolling_window: Duration,
    /// Slices of the rolling window. Default 10.
    pub rolling_buckets: u32,
    /// Time Open before trial requests are let through. Default 30 s.
    pub reset_timeout: Duration,
    /// Trial requests in flight at once while HalfOpen. Default 1.
    pub half_open_max_calls: u32,
    /// Trial successes that close the circuit. Default 1.
    pub success_threshold: u32,
}

/// `retry = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first one included (2 = one retry).
    pub attempts: u32,
    /// How the delay grows between attempts. Default exponential.
    pub backoff: BackoffKind,
    /// First delay. Default 100 ms.
    pub initial: Duration,
    /// Largest delay. Default 2 s.
    pub max: Duration,
    /// Randomisation of each delay. Default full.
    pub jitter: JitterKind,
    /// What is retried. Default `[502, 503, 504, "connect"]`.
    pub on: Vec<RetryOn>,
    /// Retries allowed as a percentage of recent requests. Default 20.
    pub budget_percent: u32,
}

/// `retry.backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// The same delay every time.
    Constant,
    /// `initial × attempt`.
    Linear,
    /// `initial × 2^(attempt-1)`.
    Exponential,
}

/// `retry.jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterKind {
    /// The computed delay as is.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// `d/2 + uniform[0, d/2]`.
    Equal,
    /// AWS's decorrelated jitter.
    Decorrelated,
}

/// One entry of `retry.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// The upstream answered with this status.
    Status(u16),
    /// The connection could not be made (refused, DNS, connect timeout).
    Connect,
    /// The attempt timed out (`per_try_timeout`).
    Timeout,
    /// The connection broke mid-request.
    Reset,
}

/// `fallback = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackConfig {
    /// Serve the last good response for the same request, marked
    /// `X-Degraded-Mode: true`. Default true.
    pub stale_cache: bool,
    /// Also keep answers to requests carrying `Authorization` or `Cookie`,
    /// and answers marked `private` or setting a cookie to such requests,
    /// each keyed by a digest of the request's credentials so only the same
    /// credentials get it back. Default false: such answers are never kept.
    pub stale_cache_private: bool,
    /// The `message` of the 503 JSON body when nothing stale is at hand.
    pub message: String,
    /// `Retry-After` on that 503; default the breaker's `reset_timeout`.
    pub retry_after: Duration,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Requests whose path starts with this go to `service`; the longest prefix wins.
    pub path_prefix: String,
    /// The service's name.
    pub service: String,
    /// Retry POST/PATCH (non-idempotent) requests too. Default false.
    pub retry_non_idempotent: bool,
    /// Remove `path_prefix` from the path sent upstream. Default false.
    pub strip_prefix: bool,
    /// Methods that may be deferred to the service's `queue`. Default none.
    pub queue_methods: Vec<http::Method>,
}
