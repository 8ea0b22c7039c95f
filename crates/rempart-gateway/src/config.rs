//! The gateway's configuration, parsed once into plain structs.
//!
//! [`GatewayConfig::parse`] reads TOML text (testable from a string, with no
//! file), checks every key and every value, and either returns the whole
//! configuration or *every* problem it found, each with its line, column and
//! key path and what would be valid. A typo in a key is reported with the
//! closest known key, so `timout = "3s"` does not silently fall back to the
//! default timeout. The keys are documented in `docs/gateway-config.md`.
//!
//! ```
//! use rempart_gateway::config::GatewayConfig;
//!
//! let config = GatewayConfig::parse(r#"
//! [[services]]
//! name = "reporting"
//! upstreams = [ { url = "http://127.0.0.1:7003" } ]
//! timeout = "15s"
//!
//! [[routes]]
//! path_prefix = "/reports"
//! service = "reporting"
//! "#, "gateway.toml").unwrap();
//! assert_eq!(config.services[0].timeout, std::time::Duration::from_secs(15));
//!
//! let err = GatewayConfig::parse("[server]\nlisten = 8080\n", "bad.toml").unwrap_err();
//! assert!(err.to_string().contains("bad.toml:2:10: `server.listen`"));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use toml_edit::{Item, TableLike};

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
}

/// One thing wrong in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Where in the document, e.g. `services[0].bulkhead.max_concurrent`.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, in document order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "cannot read config file {}: {source}", file.display())
            }
            ConfigError::Invalid { file, problems } => {
                let n = problems.len();
                write!(
                    f,
                    "{} has {n} problem{}:",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    write!(
                        f,
                        "\n  {}:{}:{}: `{}`: {}",
                        file.display(),
                        p.line,
                        p.column,
                        p.key,
                        p.message
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}

impl GatewayConfig {
    /// Reads and checks the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<GatewayConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        GatewayConfig::parse(&text, path)
    }

    /// Checks `text`; `file` only names it in errors.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<GatewayConfig, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: file.as_ref().to_owned(),
            problems,
        };
        let doc = toml_edit::Document::parse(text).map_err(|e| {
            let (line, column) = position(text, e.span().map_or(0, |s| s.start));
            invalid(vec![Problem {
                line,
                column,
                key: "(syntax)".into(),
                message: format!("not valid TOML: {}", e.message()),
            }])
        })?;
        let mut r = Reader {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
            unnamed_service: false,
        };
        let mut config = r.document(doc.as_table());
        if r.problems.is_empty() {
            let file = file.as_ref().display();
            config.warnings = r
                .warnings
                .iter()
                .map(|p| format!("{file}:{}:{}: `{}`: {}", p.line, p.column, p.key, p.message))
                .collect();
            Ok(config)
        } else {
            r.problems.sort_by_key(|p| (p.line, p.column));
            Err(invalid(r.problems))
        }
    }

    /// The service a route names.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A table being read: its entries, where it is, and its path for messages.
#[derive(Clone, Copy)]
struct Section<'a> {
    table: &'a dyn TableLike,
    at: usize,
    path: &'a str,
}

struct Reader<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    /// Accepted but deprecated, in document order.
    warnings: Vec<Problem>,
    /// A `[[services]]` entry had no usable name: a route naming it would
    /// only repeat that problem, so unknown-service errors are held back.
    unnamed_service: bool,
}

/// Byte offset → 1-based (line, column in chars).
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn start(span: Option<Range<usize>>) -> Option<usize> {
    span.map(|s| s.start)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'t> Reader<'t> {
    fn problem(&mut self, at: usize, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = position(self.text, at);
        self.problems.push(Problem {
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Flags keys of `s` not in `known`, suggesting the closest known one.
    fn known_keys(&mut self, s: Section<'_>, known: &[&str]) {
        for (key, _) in s.table.iter() {
            if known.contains(&key) {
                continue;
            }
            let at = s
                .table
                .get_key_value(key)
                .and_then(|(k, _)| start(k.span()))
                .unwrap_or(s.at);
            let closest = known
                .iter()
                .map(|k| (strsim::damerau_levenshtein(key, k), *k))
                .min()
                .filter(|(d, _)| *d <= 3);
            let message = match closest {
                Some((_, k)) => format!("unknown key; did you mean `{k}`?"),
                None => format!("unknown key; expected one of: {}", known.join(", ")),
            };
            self.problem(at, join(s.path, key), message);
        }
    }

    /// The value at `key`, its offset and its full path; `None` if absent.
    fn entry<'a>(&self, s: Section<'a>, key: &str) -> Option<(&'a Item, usize, String)> {
        let item = s.table.get(key)?;
        let at = start(item.span()).unwrap_or(s.at);
        Some((item, at, join(s.path, key)))
    }

    fn missing(&mut self, s: Section<'_>, key: &str, what: &str) {
        let where_ = if s.path.is_empty() {
            "the top level".to_owned()
        } else {
            format!("`{}`", s.path)
        };
        self.problem(
            s.at,
            join(s.path, key),
            format!("missing: {where_} needs `{key}` ({what})"),
        );
    }

    /// Reads `key` with `parse`; reports and returns `None` on absence (when
    /// `required`) or on a bad value.
    fn value<T>(
        &mut self,
        s: Section<'_>,
        key: &str,
        expected: &str,
        required: bool,
        parse: impl FnOnce(&Item) -> Result<T, String>,
    ) -> Option<T> {
        let Some((item, at, path)) = self.entry(s, key) else {
            if required {
                self.missing(s, key, expected);
            }
            return None;
        };
        match parse(item) {
            Ok(v) => Some(v),
            Err(why) => {
                let got = describe(item);
                self.problem(at, path, format!("expected {expected}, got {got}{why}"));
                None
            }
        }
    }

    fn string(
        &mut self,
        s: Section<'_>,
        key: &str,
        expected: &str,
        required: bool,
    ) -> Option<String> {
        self.value(s, key, expected, required, |i| {
            i.as_str().map(str::to_owned).ok_or_default()
        })
    }

    fn bool(&mut self, s: Section<'_>, key: &str, default: bool) -> bool {
        self.value(s, key, "true or false", false, |i| {
            i.as_bool().ok_or_default()
        })
        .unwrap_or(default)
    }

    /// An integer in `min..=max`.
    fn int(&mut self, s: Section<'_>, key: &str, min: i64, max: i64, default: i64) -> i64 {
        let expected = format!("a whole number from {min} to {max}");
        self.value(s, key, &expected, false, |i| match i.as_integer() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(_) => Err(String::new()),
            None => Err(String::new()),
        })
        .unwrap_or(default)
    }

    fn duration(&mut self, s: Section<'_>, key: &str, default: Duration) -> Duration {
        self.duration_opt(s, key).unwrap_or(default)
    }

    fn duration_opt(&mut self, s: Section<'_>, key: &str) -> Option<Duration> {
        self.value(
            s,
            key,
            "a duration string such as \"250ms\", \"15s\" or \"5m\"",
            false,
            |i| {
                let text = i.as_str().ok_or_default()?;
                humantime::parse_duration(text).map_err(|e| format!(" ({e})"))
            },
        )
    }

    fn bytes(&mut self, s: Section<'_>, key: &str, default: u64) -> u64 {
        self.value(
            s,
            key,
            "a size: a number of bytes or a string such as \"16KiB\" or \"10MiB\"",
            false,
            |i| match (i.as_integer(), i.as_str()) {
                (Some(n), _) if n > 0 => Ok(n as u64),
                (_, Some(t)) => parse_size(t),
                _ => Err(String::new()),
            },
        )
        .unwrap_or(default)
    }

    fn socket(&mut self, s: Section<'_>, key: &str, default: SocketAddr) -> SocketAddr {
        self.value(
            s,
            key,
            "an address such as \"127.0.0.1:8080\"",
            false,
            |i| {
                let text = i.as_str().ok_or_default()?;
                text.parse::<SocketAddr>().map_err(|e| format!(" ({e})"))
            },
        )
        .unwrap_or(default)
    }

    /// The sub-table at `key` (a `[section]` or an inline `{ ... }`), with its path.
    fn table<'a>(
        &mut self,
        s: Section<'a>,
        key: &str,
    ) -> Option<(&'a dyn TableLike, usize, String)> {
        let (item, at, path) = self.entry(s, key)?;
        match item.as_table_like() {
            Some(t) => Some((t, at, path)),
            None => {
                let got = describe(item);
                self.problem(at, path, format!("expected a table, got {got}"));
                None
            }
        }
    }

    /// `[[key]]` entries, or an array of inline tables.
    fn tables<'a>(&mut self, s: Section<'a>, key: &str) -> Vec<(&'a dyn TableLike, usize)> {
        let Some((item, at, path)) = self.entry(s, key) else {
            return Vec::new();
        };
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .map(|t| (t as &dyn TableLike, start(t.span()).unwrap_or(at)))
                .collect();
        }
        if let Some(array) = item.as_array() {
            let mut out = Vec::new();
            for (i, v) in array.iter().enumerate() {
                let vat = start(v.span()).unwrap_or(at);
                match v.as_inline_table() {
                    Some(t) => out.push((t as &dyn TableLike, vat)),
                    None => self.problem(
                        vat,
                        format!("{path}[{i}]"),
                        format!("expected a table, got {}", v.type_name()),
                    ),
                }
            }
            return out;
        }
        let got = describe(item);
        self.problem(
            at,
            path,
            format!("expected an array of tables (`[[{key}]]`), got {got}"),
        );
        Vec::new()
    }

    fn document(&mut self, root: &toml_edit::Table) -> GatewayConfig {
        let top = Section {
            table: root,
            at: 0,
            path: "",
        };
        self.known_keys(
            top,
            &["server", "rate_limit", "cache", "services", "routes"],
        );
        let (mut server, trusted_set) = self.server(top);
        let (rate_limit, old_trusted) = match self.rate_limit(top) {
            Some((rl, old)) => (Some(rl), old),
            None => (None, None),
        };
        // `rate_limit.trusted_proxies` predates `server.trusted_proxies`:
        // still read, with a warning, and refused if the two disagree.
        if let Some((nets, at)) = old_trusted {
            let (line, column) = position(self.text, at);
            self.warnings.push(Problem {
                line,
                column,
                key: "rate_limit.trusted_proxies".into(),
                message: "deprecated: the trusted proxies apply with or without a rate \
                          limit; move this key to `[server]`"
                    .into(),
            });
            if trusted_set && server.trusted_proxies != nets {
                self.problem(
                    at,
                    "rate_limit.trusted_proxies",
                    "differs from `server.trusted_proxies`; keep only `server.trusted_proxies`",
                );
            } else {
                server.trusted_proxies = nets;
            }
        }
        let cache = self.cache(top);
        let services = self.services(top);
        let routes = self.routes(top, &services);
        GatewayConfig {
            server,
            rate_limit,
            cache,
            services,
            routes,
            warnings: Vec::new(),
        }
    }

    /// `[server]`, and whether it set `trusted_proxies`.
    fn server(&mut self, top: Section<'_>) -> (ServerConfig, bool) {
        let defaults = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin_token: None,
            shutdown_grace: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            worker_threads: 0,
            trusted_proxies: Vec::new(),
            drain_delay: Duration::from_secs(5),
        };
        let Some((table, at, path)) = self.table(top, "server") else {
            return (defaults, false);
        };
        let s = Section {
            table,
            at,
            path: &path,
        };
        self.known_keys(
            s,
            &[
                "listen",
                "admin_listen",
                "admin_token",
                "shutdown_grace",
                "max_header_bytes",
                "max_body_bytes",
                "header_read_timeout",
                "write_timeout",
                "max_connections",
                "worker_threads",
                "trusted_proxies",
                "drain_delay",
            ],
        );
        let listen = self.socket(s, "listen", defaults.listen);
        let admin_listen = self.socket(s, "admin_listen", defaults.admin_listen);
        let admin_token = self.string(s, "admin_token", "a string", false);
        if !admin_listen.ip().is_loopback() && admin_token.as_deref().is_none_or(str::is_empty) {
            let at = self.entry(s, "admin_listen").map_or(at, |e| e.1);
            self.problem(
                at,
                join(&path, "admin_listen"),
                "the admin listener is bound to a non-loopback address, so it needs \
                 `admin_token` (its bearer token); set one or bind to 127.0.0.1",
            );
        }
        if listen == admin_listen && listen.port() != 0 {
            let at = self.entry(s, "admin_listen").map_or(at, |e| e.1);
            self.problem(
                at,
                join(&path, "admin_listen"),
                "the admin listener must not share `listen`'s address; pick another port",
            );
        }
        let trusted = self.nets(s, "trusted_proxies");
        let config = ServerConfig {
            listen,
            admin_listen,
            admin_token,
            shutdown_grace: self.duration(s, "shutdown_grace", defaults.shutdown_grace),
            max_header_bytes: self.bytes(s, "max_header_bytes", defaults.max_header_bytes),
            max_body_bytes: self.bytes(s, "max_body_bytes", defaults.max_body_bytes),
            header_read_timeout: self.duration(
                s,
                "header_read_timeout",
                defaults.header_read_timeout,
            ),
            write_timeout: self.duration(s, "write_timeout", defaults.write_timeout),
            max_connections: self.int(
                s,
                "max_connections",
                1,
                1_000_000,
                defaults.max_connections as i64,
            ) as usize,
            worker_threads: self.int(s, "worker_threads", 0, 1024, 0) as usize,
            trusted_proxies: trusted.clone().map(|t| t.0).unwrap_or_default(),
            drain_delay: self.duration(s, "drain_delay", defaults.drain_delay),
        };
        (config, trusted.is_some())
    }

    /// A list of networks or addresses at `key`, and where it is; `None` if absent.
    fn nets(&mut self, s: Section<'_>, key: &str) -> Option<(Vec<IpNet>, usize)> {
        let (item, iat, ipath) = self.entry(s, key)?;
        let mut nets = Vec::new();
        match item.as_array() {
            Some(array) => {
                for (i, v) in array.iter().enumerate() {
                    let vat = start(v.span()).unwrap_or(iat);
                    match v.as_str().map(parse_net) {
                        Some(Ok(net)) => nets.push(net),
                        Some(Err(e)) => self.problem(
                            vat,
                            format!("{ipath}[{i}]"),
                            format!("expected a network such as \"10.0.0.0/8\" or an address such as \"127.0.0.1\" ({e})"),
                        ),
                        None => self.problem(
                            vat,
                            format!("{ipath}[{i}]"),
                            format!("expected a string such as \"10.0.0.0/8\", got {}", v.type_name()),
                        ),
                    }
                }
            }
            None => {
                let got = describe(item);
                self.problem(
                    iat,
                    ipath,
                    format!("expected an array such as [\"127.0.0.1/32\"], got {got}"),
                );
            }
        }
        Some((nets, iat))
    }

    /// `[rate_limit]`, and its deprecated `trusted_proxies` with where it is.
    #[allow(clippy::type_complexity)]
    fn rate_limit(
        &mut self,
        top: Section<'_>,
    ) -> Option<(RateLimitConfig, Option<(Vec<IpNet>, usize)>)> {
        let (table, at, path) = self.table(top, "rate_limit")?;
        let s = Section {
            table,
            at,
            path: &path,
        };
        self.known_keys(s, &["rate", "burst", "ipv6_prefix", "trusted_proxies"]);
        let rate = self.value(
            s,
            "rate",
            "requests per second, a whole number from 1 to 1000000",
            true,
            |i| match i.as_integer() {
                Some(n) if (1..=1_000_000).contains(&n) => Ok(n as u32),
                _ => Err(String::new()),
            },
        );
        let burst = self.int(s, "burst", 1, 1_000_000, i64::from(rate.unwrap_or(1))) as u32;
        let ipv6_prefix = self.int(s, "ipv6_prefix", 1, 128, 64) as u8;
        let old_trusted = self.nets(s, "trusted_proxies");
        Some((
            RateLimitConfig {
                rate: rate.unwrap_or(1),
                burst,
                ipv6_prefix,
            },
            old_trusted,
        ))
    }

    fn cache(&mut self, top: Section<'_>) -> CacheConfig {
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

    fn services(&mut self, top: Section<'_>) -> Vec<ServiceConfig> {
        let entries = self.tables(top, "services");
        if entries.is_empty() && top.table.get("services").is_none() {
            self.problem(
                0,
                "services",
                "no [[services]]: the gateway has nowhere to send requests; add at least one",
            );
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, (table, at)) in entries.into_iter().enumerate() {
            let path = format!("services[{i}]");
            let s = Section {
                table,
                at,
                path: &path,
            };
            let svc = self.service(s);
            self.unnamed_service |= svc.is_none();
            if let Some(svc) = svc {
                if !seen.insert(svc.name.clone()) {
                    let nat = self.entry(s, "name").map_or(at, |e| e.1);
                    self.problem(
                        nat,
                        join(&path, "name"),
                        format!(
                            "a service named {:?} is already defined; names must be unique",
                            svc.name
                        ),
                    );
                }
                out.push(svc);
            }
        }
        out
    }

    fn service(&mut self, s: Section<'_>) -> Option<ServiceConfig> {
        self.known_keys(
            s,
            &[
                "name",
                "upstreams",
                "timeout",
                "per_try_timeout",
                "bulkhead",
                "circuit_breaker",
                "retry",
                "fallback",
                "health_check",
            ],
        );
        let expected_name = "a name of letters, digits, '-' or '_' (it labels metrics)";
        let name = self.value(s, "name", expected_name, true, |i| {
            let t = i.as_str().ok_or_default()?;
            let ok = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if ok {
                Ok(t.to_owned())
            } else {
                Err(String::new())
            }
        });
        let upstreams = self.upstreams(s);
        let timeout = self.duration(s, "timeout", Duration::from_secs(3));
        let per_try_timeout = self.duration_opt(s, "per_try_timeout");
        if let Some(t) = per_try_timeout
            && t > timeout
        {
            let at = self.entry(s, "per_try_timeout").map_or(s.at, |e| e.1);
            self.problem(
                at,
                join(s.path, "per_try_timeout"),
                format!(
                    "{} is longer than the service's total `timeout` ({}); it can be at most that",
                    humantime::format_duration(t),
                    humantime::format_duration(timeout)
                ),
            );
        }
        if timeout.is_zero() {
            let at = self.entry(s, "timeout").map_or(s.at, |e| e.1);
            self.problem(at, join(s.path, "timeout"), "must be longer than 0s");
        }
        let bulkhead = self.bulkhead(s);
        let circuit_breaker = self.breaker(s);
        let retry = self.retry(s);
        let fallback = self.fallback(s, circuit_breaker.reset_timeout);
        let health_check = self.health_check(s);
        Some(ServiceConfig {
            name: name?,
            upstreams,
            timeout,
            per_try_timeout,
            bulkhead,
            circuit_breaker,
            retry,
            fallback,
            health_check,
        })
    }

    fn health_check(&mut self, s: Section<'_>) -> Option<HealthCheckConfig> {
        let mut path = String::new();
        let h = self.sub(s, "health_check", &mut path)?;
        self.known_keys(
            h,
            &[
                "path",
                "interval",
                "timeout",
                "unhealthy_threshold",
                "healthy_threshold",
                "expected_status",
            ],
        );
        let probe_path = self
            .value(
                h,
                "path",
                "a path starting with '/', e.g. \"/health\"",
                false,
                |i| {
                    let p = i.as_str().ok_or_default()?;
                    if p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok() {
                        Ok(p.to_owned())
                    } else {
                        Err(String::new())
                    }
                },
            )
            .unwrap_or_else(|| "/health".to_owned());
        let interval = self.duration(h, "interval", Duration::from_secs(5));
        let timeout = self.duration(h, "timeout", Duration::from_secs(1));
        if interval < Duration::from_millis(100) {
            let at = self.entry(h, "interval").map_or(h.at, |e| e.1);
            self.problem(
                at,
                join(h.path, "interval"),
                "must be at least 100ms: probes more often than that load the upstream more than they tell",
            );
        }
        if timeout.is_zero() || timeout > interval {
            let at = self.entry(h, "timeout").map_or(h.at, |e| e.1);
            self.problem(
                at,
                join(h.path, "timeout"),
                format!(
                    "must be longer than 0s and at most the `interval` ({}), so that one round ends before the next",
                    humantime::format_duration(interval)
                ),
            );
        }
        let unhealthy_threshold = self.int(h, "unhealthy_threshold", 1, 100, 3) as u32;
        let healthy_threshold = self.int(h, "healthy_threshold", 1, 100, 2) as u32;
        let expected_status = self
            .value(
                h,
                "expected_status",
                "a status such as 200, or an inclusive range such as \"200-399\"",
                false,
                |i| {
                    let valid = |n: i64| (100..=599).contains(&n).then_some(n as u16);
                    if let Some(n) = i.as_integer() {
                        return valid(n).map(|n| (n, n)).ok_or_default();
                    }
                    let text = i.as_str().ok_or_default()?;
                    let (lo, hi) = text.split_once('-').ok_or_default()?;
                    let lo = lo.trim().parse::<i64>().ok().and_then(valid);
                    let hi = hi.trim().parse::<i64>().ok().and_then(valid);
                    match (lo, hi) {
                        (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                        _ => Err(String::new()),
                    }
                },
            )
            .unwrap_or((200, 399));
        Some(HealthCheckConfig {
            path: probe_path,
            interval,
            timeout,
            unhealthy_threshold,
            healthy_threshold,
            expected_status,
        })
    }

    fn upstreams(&mut self, s: Section<'_>) -> Vec<UpstreamConfig> {
        let Some((item, at, path)) = self.entry(s, "upstreams") else {
            self.missing(
                s,
                "upstreams",
                "e.g. [ { url = \"http://127.0.0.1:7003\", weight = 100 } ]",
            );
            return Vec::new();
        };
        let Some(array) = item.as_array() else {
            let got = describe(item);
            self.problem(
                at,
                path,
                format!(
                    "expected an array such as [ {{ url = \"http://127.0.0.1:7003\" }} ], got {got}"
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            let vat = start(v.span()).unwrap_or(at);
            let upath = format!("{path}[{i}]");
            // A bare string is an upstream of weight 1.
            if let Some(text) = v.as_str() {
                if let Some(url) = self.upstream_url(vat, &upath, text) {
                    out.push(UpstreamConfig { url, weight: 1 });
                }
                continue;
            }
            let Some(t) = v.as_inline_table() else {
                self.problem(
                    vat,
                    upath,
                    format!(
                        "expected {{ url = \"http://host:port\", weight = N }}, got {}",
                        v.type_name()
                    ),
                );
                continue;
            };
            let us = Section {
                table: t,
                at: vat,
                path: &upath,
            };
            self.known_keys(us, &["url", "weight"]);
            let url = self
                .string(us, "url", "a URL such as \"http://127.0.0.1:7003\"", true)
                .and_then(|text| {
                    let uat = self.entry(us, "url").map_or(vat, |e| e.1);
                    self.upstream_url(uat, &join(&upath, "url"), &text)
                });
            let weight = self.int(us, "weight", 0, 1_000_000, 1) as u32;
            if let Some(url) = url {
                out.push(UpstreamConfig { url, weight });
            }
        }
        if array.is_empty() {
            self.problem(at, path, "needs at least one upstream");
        } else if !out.is_empty() && out.iter().all(|u| u.weight == 0) {
            self.problem(at, path, "every upstream has weight 0, so none would get traffic; give one a positive weight");
        }
        out
    }

    fn upstream_url(&mut self, at: usize, path: &str, text: &str) -> Option<Uri> {
        let why = match text.parse::<Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.host()) {
                (Some("http"), Some(_)) if uri.query().is_none() => return Some(uri),
                (Some("http"), Some(_)) => "an upstream URL cannot carry a query".to_owned(),
                (Some("https"), _) => {
                    "https upstreams are not supported yet; use http://".to_owned()
                }
                (Some(other), _) => format!("the scheme must be http, not {other}"),
                (None, _) => "it needs a scheme and a host, as in http://127.0.0.1:7003".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        self.problem(
            at,
            path,
            format!("expected a URL such as \"http://127.0.0.1:7003\", got {text:?} ({why})"),
        );
        None
    }

    /// An optional inline sub-table, as a section.
    fn sub<'a>(&mut self, s: Section<'a>, key: &str, path: &'a mut String) -> Option<Section<'a>> {
        let (table, at, p) = self.table(s, key)?;
        *path = p;
        Some(Section { table, at, path })
    }

    fn bulkhead(&mut self, s: Section<'_>) -> BulkheadConfig {
        let mut path = String::new();
        let default = BulkheadConfig {
            enabled: true,
            max_concurrent: 100,
            max_wait: Duration::ZERO,
        };
        let Some(b) = self.sub(s, "bulkhead", &mut path) else {
            return default;
        };
        self.known_keys(b, &["enabled", "max_concurrent", "max_wait"]);
        BulkheadConfig {
            enabled: self.bool(b, "enabled", true),
            max_concurrent: self.int(b, "max_concurrent", 1, 1_000_000, 100) as u32,
            max_wait: self.duration(b, "max_wait", Duration::ZERO),
        }
    }

    fn breaker(&mut self, s: Section<'_>) -> BreakerConfig {
        let mut path = String::new();
        let d = BreakerConfig {
            enabled: true,
            error_threshold_percentage: 50,
            volume_threshold: 10,
            rolling_window: Duration::from_secs(10),
            rolling_buckets: 10,
            reset_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
            success_threshold: 1,
        };
        let Some(b) = self.sub(s, "circuit_breaker", &mut path) else {
            return d;
        };
        self.known_keys(
            b,
            &[
                "enabled",
                "error_threshold_percentage",
                "volume_threshold",
                "rolling_window",
                "rolling_buckets",
                "reset_timeout",
                "half_open_max_calls",
                "success_threshold",
            ],
        );
        let c = BreakerConfig {
            enabled: self.bool(b, "enabled", true),
            error_threshold_percentage: self.int(b, "error_threshold_percentage", 1, 100, 50) as u8,
            volume_threshold: self.int(b, "volume_threshold", 1, 1_000_000, 10) as u32,
            rolling_window: self.duration(b, "rolling_window", d.rolling_window),
            rolling_buckets: self.int(b, "rolling_buckets", 1, 1000, 10) as u32,
            reset_timeout: self.duration(b, "reset_timeout", d.reset_timeout),
            half_open_max_calls: self.int(b, "half_open_max_calls", 1, 10_000, 1) as u32,
            success_threshold: self.int(b, "success_threshold", 1, 10_000, 1) as u32,
        };
        let bucket = c.rolling_window / c.rolling_buckets.max(1);
        if bucket < Duration::from_millis(1) {
            let at = self.entry(b, "rolling_window").map_or(b.at, |e| e.1);
            self.problem(
                at,
                join(b.path, "rolling_window"),
                format!(
                    "{} split into {} buckets leaves less than 1ms per bucket; use a longer window or fewer buckets",
                    humantime::format_duration(c.rolling_window),
                    c.rolling_buckets
                ),
            );
        }
        if c.reset_timeout.is_zero() {
            let at = self.entry(b, "reset_timeout").map_or(b.at, |e| e.1);
            self.problem(at, join(b.path, "reset_timeout"), "must be longer than 0s");
        }
        c
    }

    fn retry(&mut self, s: Section<'_>) -> Option<RetryConfig> {
        let mut path = String::new();
        let r = self.sub(s, "retry", &mut path)?;
        self.known_keys(
            r,
            &[
                "attempts",
                "backoff",
                "initial",
                "max",
                "jitter",
                "on",
                "budget_percent",
            ],
        );
        let attempts = self.int(r, "attempts", 1, 10, 2) as u32;
        let backoff = self
            .value(
                r,
                "backoff",
                "\"constant\", \"linear\" or \"exponential\"",
                false,
                |i| match i.as_str() {
                    Some("constant") => Ok(BackoffKind::Constant),
                    Some("linear") => Ok(BackoffKind::Linear),
                    Some("exponential") => Ok(BackoffKind::Exponential),
                    _ => Err(String::new()),
                },
            )
            .unwrap_or(BackoffKind::Exponential);
        let initial = self.duration(r, "initial", Duration::from_millis(100));
        let max = self.duration(r, "max", Duration::from_secs(2));
        if max < initial {
            let at = self.entry(r, "max").map_or(r.at, |e| e.1);
            self.problem(
                at,
                join(r.path, "max"),
                format!(
                    "the largest delay ({}) is shorter than the first one (`initial` = {}); make `max` at least `initial`",
                    humantime::format_duration(max),
                    humantime::format_duration(initial)
                ),
            );
        }
        let jitter = self
            .value(
                r,
                "jitter",
                "\"none\", \"full\", \"equal\" or \"decorrelated\"",
                false,
                |i| match i.as_str() {
                    Some("none") => Ok(JitterKind::None),
                    Some("full") => Ok(JitterKind::Full),
                    Some("equal") => Ok(JitterKind::Equal),
                    Some("decorrelated") => Ok(JitterKind::Decorrelated),
                    _ => Err(String::new()),
                },
            )
            .unwrap_or(JitterKind::Full);
        let on = self.retry_on(r);
        let budget_percent = self.int(r, "budget_percent", 0, 100, 20) as u32;
        Some(RetryConfig {
            attempts,
            backoff,
            initial,
            max,
            jitter,
            on,
            budget_percent,
        })
    }

    fn retry_on(&mut self, r: Section<'_>) -> Vec<RetryOn> {
        let default = vec![
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(504),
            RetryOn::Connect,
        ];
        let Some((item, at, path)) = self.entry(r, "on") else {
            return default;
        };
        let Some(array) = item.as_array() else {
            let got = describe(item);
            self.problem(
                at,
                path,
                format!("expected an array such as [502, 503, 504, \"connect\"], got {got}"),
            );
            return default;
        };
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            let vat = start(v.span()).unwrap_or(at);
            let parsed = match (v.as_integer(), v.as_str()) {
                (Some(code), _) if (400..=599).contains(&code) => {
                    Some(RetryOn::Status(code as u16))
                }
                (_, Some("connect")) => Some(RetryOn::Connect),
                (_, Some("timeout")) => Some(RetryOn::Timeout),
                (_, Some("reset")) => Some(RetryOn::Reset),
                _ => None,
            };
            match parsed {
                Some(p) => out.push(p),
                None => self.problem(
                    vat,
                    format!("{path}[{i}]"),
                    format!(
                        "expected a status from 400 to 599 or one of \"connect\", \"timeout\", \"reset\", got {}",
                        v.to_string().trim()
                    ),
                ),
            }
        }
        out
    }

    fn fallback(&mut self, s: Section<'_>, reset_timeout: Duration) -> FallbackConfig {
        let mut path = String::new();
        let default_message = "The service is temporarily unavailable.";
        let Some(f) = self.sub(s, "fallback", &mut path) else {
            return FallbackConfig {
                stale_cache: true,
                stale_cache_private: false,
                message: default_message.into(),
                retry_after: reset_timeout,
            };
        };
        self.known_keys(
            f,
            &[
                "stale_cache",
                "stale_cache_private",
                "message",
                "retry_after",
            ],
        );
        FallbackConfig {
            stale_cache: self.bool(f, "stale_cache", true),
            stale_cache_private: self.bool(f, "stale_cache_private", false),
            message: self
                .string(f, "message", "a string", false)
                .unwrap_or_else(|| default_message.into()),
            retry_after: self.duration(f, "retry_after", reset_timeout),
        }
    }

    fn routes(&mut self, top: Section<'_>, services: &[ServiceConfig]) -> Vec<RouteConfig> {
        let entries = self.tables(top, "routes");
        if entries.is_empty() && top.table.get("routes").is_none() {
            self.problem(
                0,
                "routes",
                "no [[routes]]: every request would get 404; add one with `path_prefix` and `service`",
            );
        }
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, (table, at)) in entries.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            let s = Section {
                table,
                at,
                path: &path,
            };
            self.known_keys(
                s,
                &[
                    "path_prefix",
                    "service",
                    "retry_non_idempotent",
                    "strip_prefix",
                ],
            );
            let prefix = self.value(
                s,
                "path_prefix",
                "a path starting with '/', such as \"/reports\"",
                true,
                |i| match i.as_str() {
                    Some(p) if p.starts_with('/') && !p.contains(['?', '#', ' ']) => {
                        Ok(p.to_owned())
                    }
                    _ => Err(String::new()),
                },
            );
            if let Some(p) = &prefix
                && !seen.insert(p.clone())
            {
                let pat = self.entry(s, "path_prefix").map_or(at, |e| e.1);
                self.problem(
                    pat,
                    join(&path, "path_prefix"),
                    format!(
                        "another route already has the prefix {p:?}; each prefix may appear once"
                    ),
                );
            }
            let service = self.string(s, "service", "the name of a [[services]] entry", true);
            if let Some(name) = &service
                && !names.contains(&name.as_str())
                && !self.unnamed_service
            {
                let sat = self.entry(s, "service").map_or(at, |e| e.1);
                let closest = names
                    .iter()
                    .map(|n| (strsim::damerau_levenshtein(name, n), *n))
                    .min()
                    .filter(|(d, _)| *d <= 3);
                let message = match closest {
                    Some((_, n)) => format!("no service named {name:?}; did you mean {n:?}?"),
                    None if names.is_empty() => {
                        format!("no service named {name:?}; no services are defined")
                    }
                    None => format!("no service named {name:?}; defined: {}", names.join(", ")),
                };
                self.problem(sat, join(&path, "service"), message);
            }
            let retry_non_idempotent = self.bool(s, "retry_non_idempotent", false);
            let strip_prefix = self.bool(s, "strip_prefix", false);
            if let (Some(path_prefix), Some(service)) = (prefix, service) {
                out.push(RouteConfig {
                    path_prefix,
                    service,
                    retry_non_idempotent,
                    strip_prefix,
                });
            }
        }
        out
    }
}

/// What an item is, for "expected X, got Y".
fn describe(item: &Item) -> String {
    match item.as_value() {
        Some(v) => {
            let shown = v.to_string();
            let shown = shown.trim();
            if shown.len() <= 40 {
                format!("{} {shown}", v.type_name())
            } else {
                v.type_name().to_owned()
            }
        }
        None => item.type_name().to_owned(),
    }
}

trait OkOrDefault<T> {
    /// `None` → `Err(String::new())`: the caller's "expected ..., got ..." says it all.
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!(" ({text:?} does not start with a number)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                " (unknown unit {other:?}: use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    match n.checked_mul(scale) {
        Some(0) | None => Err(" (it must be above zero and below 16 EiB)".into()),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        assert_eq!(position(text, text.find('=').unwrap()), (1, 3));
        // 'é' is two bytes but one column.
        assert_eq!(position(text, 6 + "bé ".len()), (2, 4));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("0B").is_err());
    }

    #[test]
    fn a_bare_address_is_a_single_host_network() {
        assert_eq!(parse_net("127.0.0.1"), Ok("127.0.0.1/32".parse().unwrap()));
        assert_eq!(parse_net("10.1.2.3/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert!(parse_net("localhost").is_err());
    }
}
