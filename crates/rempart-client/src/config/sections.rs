//! Which keys each table of the client's file takes, and what values are valid.

use toml_edit::TableLike;

use super::model::{
    BreakerSettings, BudgetSettings, Canned, ClientConfig, FallbackSettings, HostOverride,
    RetryRules, RetrySettings, Strategy,
};
use super::reader::{Reader, Table, did_you_mean};
use crate::classify::ErrorKind;

const TOP: &[&str] = &["retry"];
/// `[retry]`'s own values, also taken by each `[retry.hosts."..."]`.
const RETRY_VALUES: &[&str] = &[
    "enabled",
    "max_retries",
    "initial_delay",
    "max_delay",
    "multiplier",
    "jitter",
    "attempt_timeout",
    "timeout",
];
const RETRY_TABLES: &[&str] = &[
    "circuit_breaker",
    "policy",
    "fallback",
    "budget",
    "hosts",
    "connect_timeout",
];
const BREAKER: &[&str] = &[
    "enabled",
    "failure_threshold",
    "success_threshold",
    "timeout",
    "half_open_max_calls",
];
const POLICY: &[&str] = &[
    "retryable_status_codes",
    "retryable_errors",
    "retry_non_idempotent",
];
const FALLBACK: &[&str] = &[
    "enabled",
    "strategy",
    "cache_ttl",
    "cache_max_entries",
    "default_status",
    "default_content_type",
    "default_body",
    "degraded_status",
    "degraded_content_type",
    "degraded_body",
];
const BUDGET: &[&str] = &["percent", "reserve"];

fn sub<'a>(entries: &'a dyn TableLike, offset: usize, path: &'a str) -> Table<'a> {
    Table {
        entries,
        offset,
        path,
    }
}

/// Reads the whole document.
pub(super) fn document(r: &mut Reader<'_>, root: Table<'_>) -> ClientConfig {
    let mut config = ClientConfig::default();
    r.only_keys(root, TOP);
    let Some((entries, offset, path)) = r.table(root, "retry") else {
        return config;
    };
    let t = sub(entries, offset, &path);
    let known: Vec<&str> = RETRY_VALUES.iter().chain(RETRY_TABLES).copied().collect();
    r.only_keys(t, &known);
    config.retry = retry(r, t, &RetrySettings::default());
    if let Some(d) = r.duration(t, "connect_timeout", false) {
        config.connect_timeout = d;
    }
    if let Some((e, o, p)) = r.table(t, "circuit_breaker") {
        config.breaker = breaker(r, sub(e, o, &p), &BreakerSettings::default());
    }
    if let Some((e, o, p)) = r.table(t, "policy") {
        config.rules = rules(r, sub(e, o, &p));
    }
    if let Some((e, o, p)) = r.table(t, "fallback") {
        config.fallback = fallback(r, sub(e, o, &p));
    }
    if let Some((e, o, p)) = r.table(t, "budget") {
        config.budget = Some(budget(r, sub(e, o, &p)));
    }
    if let Some((e, o, p)) = r.table(t, "hosts") {
        config.hosts = hosts(r, sub(e, o, &p), &config);
    }
    config
}

/// `[retry]`'s values (or a host's), each absent one taken from `base`.
fn retry(r: &mut Reader<'_>, t: Table<'_>, base: &RetrySettings) -> RetrySettings {
    let s = RetrySettings {
        enabled: r.bool(t, "enabled", base.enabled),
        max_retries: r
            .whole(t, "max_retries", 0, 100)
            .map_or(base.max_retries, |n| n as u32),
        initial_delay: r
            .duration(t, "initial_delay", true)
            .unwrap_or(base.initial_delay),
        max_delay: r.duration(t, "max_delay", true).unwrap_or(base.max_delay),
        multiplier: r.number(t, "multiplier", 1.0).unwrap_or(base.multiplier),
        jitter: r.bool(t, "jitter", base.jitter),
        attempt_timeout: r
            .duration(t, "attempt_timeout", false)
            .unwrap_or(base.attempt_timeout),
        timeout: r.duration(t, "timeout", false).unwrap_or(base.timeout),
    };
    if s.max_delay < s.initial_delay {
        let key = if t.entries.contains_key("max_delay") {
            "max_delay"
        } else {
            "initial_delay"
        };
        let offset = t
            .entries
            .get(key)
            .and_then(|i| i.span())
            .map_or(t.offset, |s| s.start);
        r.report(
            offset,
            format!("{}.{key}", t.path),
            format!(
                "max_delay ({:?}) is below initial_delay ({:?}); make max_delay at least initial_delay",
                s.max_delay, s.initial_delay
            ),
        );
    }
    s
}

fn breaker(r: &mut Reader<'_>, t: Table<'_>, base: &BreakerSettings) -> BreakerSettings {
    r.only_keys(t, BREAKER);
    let success_threshold = r
        .whole(t, "success_threshold", 1, 1000)
        .map_or(base.success_threshold, |n| n as u32);
    BreakerSettings {
        enabled: r.bool(t, "enabled", base.enabled),
        failure_threshold: r
            .whole(t, "failure_threshold", 1, 65_535)
            .map_or(base.failure_threshold, |n| n as u32),
        success_threshold,
        timeout: r.duration(t, "timeout", false).unwrap_or(base.timeout),
        half_open_max_calls: r
            .whole(t, "half_open_max_calls", 1, 1000)
            .map_or(success_threshold.max(base.half_open_max_calls), |n| {
                n as u32
            }),
    }
}

fn rules(r: &mut Reader<'_>, t: Table<'_>) -> RetryRules {
    r.only_keys(t, POLICY);
    let mut rules = RetryRules::default();
    if let Some(codes) = r.array(t, "retryable_status_codes", "a list of status codes") {
        rules.statuses.clear();
        for (v, offset, path) in codes {
            match v.as_integer() {
                Some(c @ 100..=599) => rules.statuses.push(c as u16),
                _ => r.report(
                    offset,
                    path,
                    format!(
                        "expected a status code from 100 to 599, got {}",
                        v.to_string().trim()
                    ),
                ),
            }
        }
    }
    if let Some(kinds) = r.array(t, "retryable_errors", "a list of error kinds") {
        rules.errors.clear();
        for (v, offset, path) in kinds {
            match v.as_str().map(|s| (s, ErrorKind::from_name(s))) {
                Some((_, Some(kind))) => rules.errors.push(kind),
                Some((name, None)) => {
                    let hint = match did_you_mean(name, &ErrorKind::NAMES) {
                        Some(k) => format!("did you mean \"{k}\"?"),
                        None => format!("use one of: {}", ErrorKind::NAMES.join(", ")),
                    };
                    r.report(offset, path, format!("unknown error kind {name:?}; {hint}"));
                }
                None => r.report(
                    offset,
                    path,
                    format!(
                        "expected an error kind such as \"dns_resolution\", got {}",
                        v.to_string().trim()
                    ),
                ),
            }
        }
    }
    rules.non_idempotent = r.bool(t, "retry_non_idempotent", false);
    rules
}

fn canned(r: &mut Reader<'_>, t: Table<'_>, prefix: &str, body_required: bool) -> Option<Canned> {
    let status = r
        .whole(t, &format!("{prefix}_status"), 100, 599)
        .map_or(200, |n| n as u16);
    let content_type = r.string(t, &format!("{prefix}_content_type"));
    let body = r.string(t, &format!("{prefix}_body"));
    if body.is_none() && body_required {
        return None;
    }
    Some(Canned {
        status,
        content_type,
        body: body.unwrap_or_default(),
    })
}

fn fallback(r: &mut Reader<'_>, t: Table<'_>) -> FallbackSettings {
    r.only_keys(t, FALLBACK);
    let mut s = FallbackSettings {
        enabled: r.bool(t, "enabled", true),
        ..FallbackSettings::default()
    };
    let strategy_at = t
        .entries
        .get("strategy")
        .and_then(|i| i.span())
        .map_or(t.offset, |s| s.start);
    if let Some(names) = strategies(r, t) {
        s.strategies = names;
    }
    if let Some(d) = r.duration(t, "cache_ttl", false) {
        s.cache_ttl = d;
    }
    if let Some(n) = r.whole(t, "cache_max_entries", 1, 100_000_000) {
        s.cache_max_entries = n as u64;
    }
    s.default_answer = canned(r, t, "default", true);
    if let Some(d) = canned(r, t, "degraded", false) {
        s.degraded_answer = d;
    }
    if s.strategies.contains(&Strategy::DefaultValue) && s.default_answer.is_none() {
        r.report(
            strategy_at,
            format!("{}.strategy", t.path),
            "the \"default_value\" strategy needs `default_body` (the answer's body; \
             `default_status` and `default_content_type` are optional)"
                .into(),
        );
    }
    s
}

/// `strategy`: one name or a list of names, each once.
fn strategies(r: &mut Reader<'_>, t: Table<'_>) -> Option<Vec<Strategy>> {
    let item = t.entries.get("strategy")?;
    let offset = item.span().map_or(t.offset, |s| s.start);
    let path = format!("{}.strategy", t.path);
    let values: Vec<(&toml_edit::Value, usize, String)> = match item.as_value() {
        Some(v) if v.is_str() => vec![(v, offset, path)],
        _ => r.array(
            t,
            "strategy",
            "\"cache\", \"default_value\", \"degraded\" or a list of them",
        )?,
    };
    let mut out = Vec::new();
    for (v, offset, path) in values {
        let name = v.as_str().unwrap_or_default();
        match Strategy::NAMES.iter().position(|n| *n == name) {
            Some(i) => {
                let s = [Strategy::Cache, Strategy::DefaultValue, Strategy::Degraded][i];
                if out.contains(&s) {
                    r.report(offset, path, format!("{name:?} is listed twice"));
                } else {
                    out.push(s);
                }
            }
            None => {
                let hint = match did_you_mean(name, &Strategy::NAMES) {
                    Some(k) => format!("did you mean \"{k}\"?"),
                    None => format!("use one of: {}", Strategy::NAMES.join(", ")),
                };
                r.report(
                    offset,
                    path,
                    format!("unknown strategy {}; {hint}", v.to_string().trim()),
                );
            }
        }
    }
    Some(out)
}

fn budget(r: &mut Reader<'_>, t: Table<'_>) -> BudgetSettings {
    r.only_keys(t, BUDGET);
    BudgetSettings {
        percent: r.whole(t, "percent", 0, 1000).map_or(20, |n| n as u32),
        reserve: r.whole(t, "reserve", 0, 1_000_000).map_or(10, |n| n as u32),
    }
}

fn hosts(r: &mut Reader<'_>, t: Table<'_>, top: &ClientConfig) -> Vec<HostOverride> {
    let mut out = Vec::new();
    let known: Vec<&str> = RETRY_VALUES
        .iter()
        .chain(&["circuit_breaker"])
        .copied()
        .collect();
    for (key, _) in t.entries.iter() {
        let Some((e, o, p)) = r.table(t, key) else {
            continue;
        };
        let h = sub(e, o, &p);
        r.only_keys(h, &known);
        let retry = retry(r, h, &top.retry);
        let breaker = match r.table(h, "circuit_breaker") {
            Some((e, o, p)) => breaker(r, sub(e, o, &p), &top.breaker),
            None => top.breaker.clone(),
        };
        out.push(HostOverride {
            key: key.to_owned(),
            retry,
            breaker,
        });
    }
    out
}
