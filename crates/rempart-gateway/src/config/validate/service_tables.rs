//! A service's inline sub-tables: `bulkhead`, `circuit_breaker` (a window
//! of at least 1 ms per bucket), `retry` (`max` at least `initial`; what
//! `on` retries), `fallback` (its `retry_after` defaults to the breaker's
//! `reset_timeout`) and `health_check` (a probe `timeout` within its
//! `interval`). Each absent table takes its defaults.

use std::time::Duration;

use crate::config::reader::{OkOrDefault, Reader, Section, describe, join, start};
use crate::config::{
    BackoffKind, BreakerConfig, BulkheadConfig, FallbackConfig, HealthCheckConfig, JitterKind,
    RetryConfig, RetryOn,
};

impl Reader<'_> {
    pub(super) fn bulkhead(&mut self, s: Section<'_>) -> BulkheadConfig {
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

    pub(super) fn breaker(&mut self, s: Section<'_>) -> BreakerConfig {
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

    pub(super) fn retry(&mut self, s: Section<'_>) -> Option<RetryConfig> {
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

    pub(super) fn fallback(&mut self, s: Section<'_>, reset_timeout: Duration) -> FallbackConfig {
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

    pub(super) fn health_check(&mut self, s: Section<'_>) -> Option<HealthCheckConfig> {
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
}
