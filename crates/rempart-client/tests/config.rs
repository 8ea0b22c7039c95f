//! The client's configuration: seed 003's file as written, the new keys, and
//! every problem of a bad file reported with its line, column and key.

use std::time::Duration;

use rempart_client::config::{ClientConfig, Strategy};
use rempart_client::{ConfigError, ErrorKind, ResilientClient};

/// Seed 003's "Retry Configuration", character for character.
const SEED: &str = r#"
[retry]
enabled = true
max_retries = 3
initial_delay = "1s"
max_delay = "30s"
multiplier = 2.0
jitter = true

[retry.circuit_breaker]
enabled = true
failure_threshold = 5
success_threshold = 3
timeout = "60s"

[retry.policy]
retryable_status_codes = [429, 500, 502, 503, 504]
retryable_errors = ["connection_timeout", "dns_resolution"]

[retry.fallback]
enabled = true
strategy = "cache"  # cache, default_value, degraded
cache_ttl = "1h"
"#;

#[test]
fn the_seeds_file_loads_unchanged_with_its_values() {
    let c = ClientConfig::parse(SEED, "seed003.toml").unwrap();
    let s = Duration::from_secs(1);
    assert!(c.retry.enabled);
    assert_eq!(c.retry.max_retries, 3);
    assert_eq!((c.retry.initial_delay, c.retry.max_delay), (s, 30 * s));
    assert_eq!(c.retry.multiplier, 2.0);
    assert!(c.retry.jitter);
    assert!(c.breaker.enabled);
    assert_eq!(
        (
            c.breaker.failure_threshold,
            c.breaker.success_threshold,
            c.breaker.timeout
        ),
        (5, 3, 60 * s)
    );
    assert_eq!(c.rules.statuses, [429, 500, 502, 503, 504]);
    assert_eq!(c.rules.errors, [ErrorKind::ConnectTimeout, ErrorKind::Dns]);
    assert!(c.fallback.enabled);
    assert_eq!(c.fallback.strategies, [Strategy::Cache]);
    assert_eq!(c.fallback.cache_ttl, 3600 * s);
    assert!(ResilientClient::from_toml_str(SEED).is_ok());
}

#[test]
fn the_shipped_example_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/client.toml");
    let c = ClientConfig::from_file(path).unwrap();
    assert_eq!(c.retry.max_retries, 3);
    assert!(c.budget.is_some());
    assert!(!c.hosts.is_empty());
}

#[test]
fn the_new_keys_are_read() {
    let c = ClientConfig::parse(
        r#"
[retry]
attempt_timeout = "3s"
timeout = "20s"
connect_timeout = "500ms"

[retry.budget]
percent = 10
reserve = 5

[retry.fallback]
strategy = ["cache", "default_value", "degraded"]
default_body = "[]"
degraded_status = 503

[retry.hosts."api.example.com"]
max_retries = 1
[retry.hosts."api.example.com".circuit_breaker]
failure_threshold = 2
"#,
        "new.toml",
    )
    .unwrap();
    assert_eq!(c.retry.attempt_timeout, Duration::from_secs(3));
    assert_eq!(c.retry.timeout, Duration::from_secs(20));
    assert_eq!(c.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.budget.map(|b| (b.percent, b.reserve)), Some((10, 5)));
    assert_eq!(
        c.fallback.strategies,
        [Strategy::Cache, Strategy::DefaultValue, Strategy::Degraded]
    );
    assert_eq!(c.fallback.degraded_answer.status, 503);
    let (retry, breaker) = c.for_key("api.example.com");
    assert_eq!((retry.max_retries, breaker.failure_threshold), (1, 2));
    assert_eq!(
        retry.timeout,
        Duration::from_secs(20),
        "inherited from [retry]"
    );
    assert_eq!(c.for_key("other").0.max_retries, 3);
}

#[test]
fn every_problem_is_reported_with_line_column_key_and_a_suggestion() {
    let text = r#"[retry]
max_retry = 3
initial_delay = "soon"
multiplier = 0.5

[retry.circuit_breaker]
failure_treshold = 5

[retry.policy]
retryable_status_codes = [429, 700]
retryable_errors = ["dns_resolutoin"]

[retry.fallback]
strategy = "default_value"
"#;
    let err = ClientConfig::parse(text, "bad.toml").unwrap_err();
    let found: Vec<(usize, usize, &str)> = err
        .problems()
        .iter()
        .map(|p| (p.line, p.column, p.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (2, 1, "retry.max_retry"),
            (3, 17, "retry.initial_delay"),
            (4, 14, "retry.multiplier"),
            (7, 1, "retry.circuit_breaker.failure_treshold"),
            (10, 32, "retry.policy.retryable_status_codes[1]"),
            (11, 21, "retry.policy.retryable_errors[0]"),
            (14, 12, "retry.fallback.strategy"),
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with("bad.toml has 7 problems:"), "{text}");
    for expected in [
        "bad.toml:2:1: `retry.max_retry`: unknown key; did you mean `max_retries`?",
        "did you mean `failure_threshold`?",
        "did you mean \"dns_resolution\"?",
        "expected a number of at least 1.0, got float 0.5",
        "needs `default_body`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_syntax_error_and_an_unreadable_file_say_where() {
    let err = ClientConfig::parse("[retry]\nmax_retries = \n", "broken.toml").unwrap_err();
    assert_eq!(err.problems()[0].line, 2);
    assert!(err.to_string().contains("not valid TOML"));
    let err = ClientConfig::from_file("/no/such/client.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/no/such/client.toml"));
}

#[test]
fn a_max_delay_below_the_initial_delay_is_refused() {
    let err = ClientConfig::parse(
        "[retry]\ninitial_delay = \"5s\"\nmax_delay = \"1s\"\n",
        "c.toml",
    )
    .unwrap_err();
    assert_eq!(err.problems()[0].key, "retry.max_delay");
    assert_eq!(err.problems()[0].line, 3);
}
