//! Health checks: liveness (`/health`: the process answers) and readiness
//! (`/ready`: every dependency answers), from a registry of named checks run
//! concurrently, each within its own timeout (2 s by default, as in seed 002).
//!
//! Bodies follow seeds 000 and 002: `status`, `timestamp` (RFC 3339, read
//! from an injectable wall [`Clock`]), one entry per dependency with its
//! latency, and a `failed` map of name to reason; readiness answers 200 or 503.
//! [`HealthService`] serves both routes as a plain tower service (for hyper);
//! with the cargo feature `axum`, `health::axum::router` serves them in axum.
//!
//! ```
//! use rempart::health::HealthRegistry;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let health = HealthRegistry::new()
//!     .check("redis", || async { Ok(()) })
//!     .check("minio", || async { Err("connection refused".to_owned()) });
//! let report = health.readiness().await;
//! assert!(!report.is_ready());
//! assert_eq!(report.failed["minio"], "connection refused");
//! assert_eq!(report.status_code(), 503);
//! # });
//! ```

#[cfg(feature = "axum")]
pub mod axum;
mod rfc3339;
mod service;

pub use service::HealthService;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Clock, UnixClock};

/// A dependency check: `Ok(())` if it answers, `Err(reason)` if not.
///
/// Closures `Fn() -> impl Future<Output = Result<(), String>>` implement it.
pub trait HealthCheck: Send + Sync + 'static {
    /// Checks the dependency once.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

impl<F, Fut> HealthCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self())
    }
}

/// The default time a check may take (seed 002).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct Entry {
    name: String,
    check: Arc<dyn HealthCheck>,
    timeout: Duration,
}

struct Shared {
    checks: Vec<Entry>,
    default_timeout: Duration,
    wall: Arc<dyn Clock>,
    accepting: AtomicBool,
    shutdown: Option<crate::shutdown::Shutdown>,
}

/// Named dependency checks. Cheap to clone; clones share the checks and the
/// ready flag.
#[derive(Clone)]
pub struct HealthRegistry {
    shared: Arc<Shared>,
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.shared.checks.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("HealthRegistry")
            .field("checks", &names)
            .field("accepting", &self.accepting())
            .finish()
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// One dependency's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DependencyStatus {
    /// `true` if it answered in time.
    pub ok: bool,
    /// How long the check took (the timeout, if it timed out), in milliseconds.
    pub latency_ms: f64,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The readiness body: `{"status": "ready" | "not ready", "timestamp", "dependencies", "failed"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadinessReport {
    /// `ready` or `not ready` (seed 002's words).
    pub status: &'static str,
    /// When the checks ran, RFC 3339 in UTC.
    pub timestamp: String,
    /// Every dependency, by name.
    pub dependencies: BTreeMap<String, DependencyStatus>,
    /// The failed ones, name to reason; `shutdown` while shutting down.
    pub failed: BTreeMap<String, String>,
}

impl ReadinessReport {
    /// `true` if every dependency answered and the process still accepts work.
    pub fn is_ready(&self) -> bool {
        self.failed.is_empty()
    }

    /// 200 if ready, else 503.
    pub fn status_code(&self) -> u16 {
        if self.is_ready() { 200 } else { 503 }
    }

    /// The body as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// An `application/json` response with the status code.
    pub fn into_response(self) -> http::Response<String> {
        json_response(self.status_code(), self.to_json())
    }
}

/// The liveness body: `{"status": "ok", "timestamp"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LivenessReport {
    /// Always `ok`: answering at all is the proof of life.
    pub status: &'static str,
    /// When it answered, RFC 3339 in UTC.
    pub timestamp: String,
}

impl LivenessReport {
    /// A 200 `application/json` response.
    pub fn into_response(self) -> http::Response<String> {
        json_response(200, serde_json::to_string(&self).unwrap_or_default())
    }
}

fn json_response(code: u16, body: String) -> http::Response<String> {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

impl HealthRegistry {
    /// No checks, a 2 s timeout each, timestamps from the system's wall clock.
    pub fn new() -> Self {
        HealthRegistry {
            shared: Arc::new(Shared {
                checks: Vec::new(),
                default_timeout: DEFAULT_CHECK_TIMEOUT,
                wall: Arc::new(UnixClock::new()),
                accepting: AtomicBool::new(true),
                shutdown: None,
            }),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Shared)) -> Self {
        // Builders run before the registry is shared; copy if a clone exists.
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|s| Shared {
            checks: s
                .checks
                .iter()
                .map(|e| Entry {
                    name: e.name.clone(),
                    check: e.check.clone(),
                    timeout: e.timeout,
                })
                .collect(),
            default_timeout: s.default_timeout,
            wall: s.wall.clone(),
            accepting: AtomicBool::new(s.accepting.load(Ordering::Relaxed)),
            shutdown: s.shutdown.clone(),
        });
        f(&mut shared);
        HealthRegistry {
            shared: Arc::new(shared),
        }
    }

    /// Adds a check with the default timeout.
    pub fn check(self, name: impl Into<String>, check: impl HealthCheck) -> Self {
        let name = name.into();
        self.edit(|s| {
            let timeout = s.default_timeout;
            s.checks.push(Entry {
                name,
                check: Arc::new(check),
                timeout,
            });
        })
    }

    /// Adds a check with its own timeout.
    pub fn check_with_timeout(
        self,
        name: impl Into<String>,
        timeout: Duration,
        check: impl HealthCheck,
    ) -> Self {
        let name = name.into();
        self.edit(|s| {
            s.checks.push(Entry {
                name,
                check: Arc::new(check),
                timeout,
            })
        })
    }

    /// The timeout for checks added after this call.
    pub fn default_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.default_timeout = timeout)
    }

    /// Reads timestamps from `wall` (nanoseconds since the Unix epoch), e.g.
    /// a `ManualClock` in tests.
    pub fn wall_clock(self, wall: impl Clock) -> Self {
        self.edit(|s| s.wall = Arc::new(wall))
    }

    /// Marks the process as not ready (or ready again): during a graceful
    /// shutdown, readiness turns 503 so load balancers stop sending work.
    pub fn set_accepting(&self, accepting: bool) {
        self.shared.accepting.store(accepting, Ordering::Release);
    }

    /// Readiness turns 503 as soon as `shutdown` is triggered (by a signal
    /// or a call), with no task to spawn: the flag is read at each check.
    ///
    /// ```
    /// use rempart::health::HealthRegistry;
    /// use rempart::shutdown::Shutdown;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let shutdown = Shutdown::new();
    /// let health = HealthRegistry::new().follow_shutdown(&shutdown);
    /// assert!(health.readiness().await.is_ready());
    /// shutdown.trigger();
    /// assert_eq!(health.readiness().await.status_code(), 503);
    /// # });
    /// ```
    pub fn follow_shutdown(self, shutdown: &crate::shutdown::Shutdown) -> Self {
        let shutdown = shutdown.clone();
        self.edit(|s| s.shutdown = Some(shutdown))
    }

    fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Acquire)
            && !self
                .shared
                .shutdown
                .as_ref()
                .is_some_and(|s| s.is_triggered())
    }

    fn timestamp(&self) -> String {
        rfc3339::format_unix_nanos(self.shared.wall.now().as_nanos())
    }

    /// The liveness report (always `ok` while the process answers).
    pub fn liveness(&self) -> LivenessReport {
        LivenessReport {
            status: "ok",
            timestamp: self.timestamp(),
        }
    }

    /// Runs every check concurrently, each within its timeout.
    pub async fn readiness(&self) -> ReadinessReport {
        let timestamp = self.timestamp();
        let mut set = tokio::task::JoinSet::new();
        for (i, e) in self.shared.checks.iter().enumerate() {
            let check = e.check.clone();
            let timeout = e.timeout;
            set.spawn(async move {
                let start = tokio::time::Instant::now();
                let res = match tokio::time::timeout(timeout, check.check()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {}", fmt_duration(timeout))),
                };
                (i, res, start.elapsed())
            });
        }
        let mut dependencies = BTreeMap::new();
        let mut failed = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            let (i, res, took) = match joined {
                Ok(x) => x,
                // A panicking check fails its dependency, not the report; its
                // name is recovered below as "missing".
                Err(_) => continue,
            };
            let name = self.shared.checks[i].name.clone();
            if let Err(reason) = &res {
                failed.insert(name.clone(), reason.clone());
            }
            dependencies.insert(
                name,
                DependencyStatus {
                    ok: res.is_ok(),
                    latency_ms: took.as_secs_f64() * 1000.0,
                    error: res.err(),
                },
            );
        }
        for e in &self.shared.checks {
            if !dependencies.contains_key(&e.name) {
                failed.insert(e.name.clone(), "check panicked".to_owned());
                dependencies.insert(
                    e.name.clone(),
                    DependencyStatus {
                        ok: false,
                        latency_ms: 0.0,
                        error: Some("check panicked".into()),
                    },
                );
            }
        }
        if !self.accepting() {
            failed.insert("shutdown".to_owned(), "shutting down".to_owned());
        }
        for (name, reason) in &failed {
            tracing::warn!(dependency = %name, %reason, "health check failed");
        }
        ReadinessReport {
            status: if failed.is_empty() {
                "ready"
            } else {
                "not ready"
            },
            timestamp,
            dependencies,
            failed,
        }
    }
}

/// `2s`, `1.5s`, `250ms`: how a timeout reads in a failure reason.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
