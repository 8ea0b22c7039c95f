//! The client's configuration as plain values, with seed 003's defaults.

use std::time::Duration;

use crate::classify::ErrorKind;

/// Retries, timeouts and backoff: `[retry]` (and each `[retry.hosts."..."]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// `enabled`: false sends each request once.
    pub enabled: bool,
    /// `max_retries`: retries after the first attempt (seed: 3).
    pub max_retries: u32,
    /// `initial_delay`: the first pause (seed: 1 s).
    pub initial_delay: Duration,
    /// `max_delay`: the cap on a pause, a `Retry-After` included (seed: 30 s).
    pub max_delay: Duration,
    /// `multiplier`: the growth of the pause (seed: 2.0).
    pub multiplier: f64,
    /// `jitter`: `true` spreads each pause by ±10 % (the seed's rule).
    pub jitter: bool,
    /// `attempt_timeout` (new): the limit on one attempt (default 10 s).
    pub attempt_timeout: Duration,
    /// `timeout` (new): the limit on the whole call, pauses included (default 60 s).
    pub timeout: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            max_retries: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: true,
            attempt_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }
}

/// The breaker: `[retry.circuit_breaker]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// `enabled`: false lets every call through (the state stays Closed).
    pub enabled: bool,
    /// `failure_threshold`: consecutive failed attempts that open it (seed: 5).
    pub failure_threshold: u32,
    /// `success_threshold`: trial successes that close it again (seed: 3).
    pub success_threshold: u32,
    /// `timeout`: how long it stays open before trial calls (seed: 60 s).
    pub timeout: Duration,
    /// `half_open_max_calls` (new): trial calls in flight at once (default: `success_threshold`).
    pub half_open_max_calls: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            failure_threshold: 5,
            success_threshold: 3,
            timeout: Duration::from_secs(60),
            half_open_max_calls: 3,
        }
    }
}

/// What is retried: `[retry.policy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRules {
    /// `retryable_status_codes` (seed: 429, 500, 502, 503, 504).
    pub statuses: Vec<u16>,
    /// `retryable_errors`. The seed's file lists two; absent, all five kinds
    /// its prose names are retried.
    pub errors: Vec<ErrorKind>,
    /// `retry_non_idempotent` (new, default false): whether a POST or PATCH
    /// is retried after it may have reached the server. Without it, such a
    /// request is retried only when it surely was not sent (DNS, refused,
    /// connect timeout).
    pub non_idempotent: bool,
}

impl Default for RetryRules {
    fn default() -> Self {
        RetryRules {
            statuses: vec![429, 500, 502, 503, 504],
            errors: ErrorKind::ALL.to_vec(),
            non_idempotent: false,
        }
    }
}

/// A fallback step, in the order `strategy` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `"cache"`: the last good answer to the same GET, within `cache_ttl`.
    Cache,
    /// `"default_value"`: a fixed answer (`default_body`).
    DefaultValue,
    /// `"degraded"`: a fixed degraded answer (`degraded_body`); always answers.
    Degraded,
}

impl Strategy {
    /// The names `strategy` takes.
    pub const NAMES: [&'static str; 3] = ["cache", "default_value", "degraded"];

    /// Its name in the file.
    pub fn name(self) -> &'static str {
        Strategy::NAMES[self as usize]
    }
}

/// A fixed answer a fallback gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canned {
    /// Its status.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Its body.
    pub body: String,
}

/// `[retry.fallback]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackSettings {
    /// `enabled` (default false when the table is absent, true when present).
    pub enabled: bool,
    /// `strategy`: one name or a list, tried in order (default `"cache"`).
    pub strategies: Vec<Strategy>,
    /// `cache_ttl`: how long a good answer may stand in (seed: 1 h).
    pub cache_ttl: Duration,
    /// `cache_max_entries` (new, default 10,000): answers kept.
    pub cache_max_entries: u64,
    /// `default_status`, `default_content_type`, `default_body` (new).
    pub default_answer: Option<Canned>,
    /// `degraded_status`, `degraded_content_type`, `degraded_body` (new;
    /// default 200 with an empty body, marked `X-Degraded-Mode: true`).
    pub degraded_answer: Canned,
}

impl Default for FallbackSettings {
    fn default() -> Self {
        FallbackSettings {
            enabled: false,
            strategies: vec![Strategy::Cache],
            cache_ttl: Duration::from_secs(3600),
            cache_max_entries: 10_000,
            default_answer: None,
            degraded_answer: Canned {
                status: 200,
                content_type: None,
                body: String::new(),
            },
        }
    }
}

/// `[retry.budget]` (new): retries may add `percent` % to the requests,
/// plus a reserve of `reserve` retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// `percent` (default 20).
    pub percent: u32,
    /// `reserve` (default 10).
    pub reserve: u32,
}

/// `[retry.hosts."host:port"]` (new): retry and breaker settings for one
/// host (or one key set on the request), each unset value taken from the top.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOverride {
    /// The host, as `host` or `host:port`, or a key a request carries.
    pub key: String,
    /// Its retry settings.
    pub retry: RetrySettings,
    /// Its breaker settings.
    pub breaker: BreakerSettings,
}

/// The whole client configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// `[retry]`.
    pub retry: RetrySettings,
    /// `[retry.circuit_breaker]`.
    pub breaker: BreakerSettings,
    /// `[retry.policy]`.
    pub rules: RetryRules,
    /// `[retry.fallback]`.
    pub fallback: FallbackSettings,
    /// `[retry.budget]`; none when absent.
    pub budget: Option<BudgetSettings>,
    /// `retry.connect_timeout` (new, default 5 s): the limit on connecting.
    pub connect_timeout: Duration,
    /// `[retry.hosts."..."]`.
    pub hosts: Vec<HostOverride>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
            rules: RetryRules::default(),
            fallback: FallbackSettings::default(),
            budget: None,
            connect_timeout: Duration::from_secs(5),
            hosts: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// The settings for `key`: its override, or the top level's.
    pub fn for_key(&self, key: &str) -> (&RetrySettings, &BreakerSettings) {
        match self.hosts.iter().find(|h| h.key == key) {
            Some(h) => (&h.retry, &h.breaker),
            None => (&self.retry, &self.breaker),
        }
    }
}
