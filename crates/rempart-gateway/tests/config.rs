//! The gateway config: what a user writes, and what they are told when it is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use rempart_gateway::config::{
    BackoffKind, CacheBackend, ConfigError, GatewayConfig, JitterKind, Problem, RetryOn,
};

const MINIMAL: &str = r#"
[[services]]
name = "users"
upstreams = [ "http://127.0.0.1:7001" ]

[[routes]]
path_prefix = "/users"
service = "users"
"#;

fn problems(text: &str) -> Vec<Problem> {
    match GatewayConfig::parse(text, "gw.toml") {
        Ok(c) => panic!("expected problems, got {c:#?}"),
        Err(e) => e.problems().to_vec(),
    }
}

fn one_problem(text: &str) -> Problem {
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    p.into_iter().next().unwrap()
}

#[test]
fn the_shipped_example_config_parses_to_the_seed_settings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateway.toml");
    let c = GatewayConfig::from_file(path).unwrap();
    assert_eq!(
        c.server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    let rl = c.rate_limit.as_ref().unwrap();
    assert_eq!((rl.rate, rl.burst), (10, 20));
    assert_eq!(rl.ipv6_prefix, 64);
    assert_eq!(
        c.server.trusted_proxies,
        vec!["127.0.0.1/32".parse().unwrap()]
    );
    assert_eq!(c.server.drain_delay, Duration::from_secs(5));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.cache.backend, CacheBackend::Memory);
    assert_eq!(c.cache.ttl, Duration::from_secs(300));

    let reporting = c.service("reporting").unwrap();
    assert_eq!(reporting.timeout, Duration::from_secs(15));
    assert_eq!(reporting.bulkhead.max_concurrent, 3);
    assert_eq!(reporting.bulkhead.max_wait, Duration::ZERO);
    assert_eq!(reporting.circuit_breaker.error_threshold_percentage, 50);
    assert_eq!(reporting.circuit_breaker.volume_threshold, 10);
    assert_eq!(
        reporting.circuit_breaker.rolling_window,
        Duration::from_secs(10)
    );
    assert_eq!(reporting.circuit_breaker.rolling_buckets, 10);
    assert_eq!(
        reporting.circuit_breaker.reset_timeout,
        Duration::from_secs(30)
    );
    let retry = reporting.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 2);
    assert_eq!(retry.backoff, BackoffKind::Exponential);
    assert_eq!(retry.jitter, JitterKind::Full);
    assert_eq!(
        (retry.initial, retry.max),
        (Duration::from_millis(100), Duration::from_secs(2))
    );
    assert_eq!(
        retry.on,
        vec![
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(504),
            RetryOn::Connect
        ]
    );
    assert!(reporting.fallback.stale_cache);
    assert!(
        reporting
            .fallback
            .message
            .starts_with("Le service de rapports")
    );
    // Retry-After on the degraded 503 defaults to the breaker's open period.
    assert_eq!(reporting.fallback.retry_after, Duration::from_secs(30));

    let catalogue = c.service("catalogue").unwrap();
    let weights: Vec<u32> = catalogue.upstreams.iter().map(|u| u.weight).collect();
    assert_eq!(weights, vec![90, 10]);
    assert_eq!(c.routes.len(), 4);
}

#[test]
fn omitted_keys_take_documented_defaults() {
    let c = GatewayConfig::parse(MINIMAL, "gw.toml").unwrap();
    assert_eq!(
        c.server.admin_listen,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.max_header_bytes, 16 * 1024);
    assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(c.rate_limit, None);
    let users = &c.services[0];
    assert_eq!(users.timeout, Duration::from_secs(3));
    assert_eq!(users.upstreams[0].weight, 1);
    assert_eq!(users.bulkhead.max_concurrent, 100);
    assert_eq!(users.retry, None);
    assert!(!c.routes[0].retry_non_idempotent);
}

#[test]
fn every_problem_is_reported_at_once_in_document_order_with_line_and_column() {
    let text = r#"
[server]
listen = 8080
shutdown_grace = "soon"

[[services]]
name = "reporting"
upstreams = [ { url = "ftp://10.0.0.1" } ]
timeout = "15s"
bulkhead = { max_concurrent = 0 }

[[routes]]
path_prefix = "reports"
service = "reporting"
"#;
    let p = problems(text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "server.listen",
            "server.shutdown_grace",
            "services[0].upstreams[0].url",
            "services[0].bulkhead.max_concurrent",
            "routes[0].path_prefix",
        ]
    );
    assert_eq!((p[0].line, p[0].column), (3, 10));
    assert!(
        p[0].message.contains("\"127.0.0.1:8080\""),
        "{}",
        p[0].message
    );
    assert!(p[1].message.contains("\"15s\""), "{}", p[1].message);
    assert!(
        p[2].message.contains("scheme must be http"),
        "{}",
        p[2].message
    );
    assert!(p[3].message.contains("from 1 to"), "{}", p[3].message);
    assert!(
        p[4].message.contains("starting with '/'"),
        "{}",
        p[4].message
    );
}

#[test]
fn the_error_text_names_file_line_column_and_key() {
    let err =
        GatewayConfig::parse("[server]\nlisten = 8080\n", "/etc/rempart/gw.toml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("/etc/rempart/gw.toml has 3 problems:"),
        "{text}"
    );
    assert!(
        text.contains("/etc/rempart/gw.toml:2:10: `server.listen`: expected an address such as \"127.0.0.1:8080\", got integer 8080"),
        "{text}"
    );
}

#[test]
fn a_misspelt_key_is_an_error_that_suggests_the_right_one() {
    let text = MINIMAL.replace("upstreams = [", "timout = \"15s\"\nupstreams = [");
    let p = one_problem(&text);
    assert_eq!(p.key, "services[0].timout");
    assert!(
        p.message.contains("did you mean `timeout`?"),
        "{}",
        p.message
    );
}

#[test]
fn a_route_to_an_unknown_service_suggests_the_closest_name() {
    let text = MINIMAL.replace("service = \"users\"", "service = \"user\"");
    let p = one_problem(&text);
    assert_eq!(p.key, "routes[0].service");
    assert!(
        p.message.contains("did you mean \"users\"?"),
        "{}",
        p.message
    );
}

#[test]
fn duplicate_service_names_and_route_prefixes_are_refused() {
    let text = format!("{MINIMAL}{MINIMAL}");
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec!["services[1].name", "routes[1].path_prefix"]);
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let text = format!("[server]\nadmin_listen = \"0.0.0.0:9901\"\n{MINIMAL}");
    let p = one_problem(&text);
    assert_eq!(p.key, "server.admin_listen");
    assert!(p.message.contains("admin_token"), "{}", p.message);
    let with_token =
        format!("[server]\nadmin_listen = \"0.0.0.0:9901\"\nadmin_token = \"s3cret\"\n{MINIMAL}");
    assert!(GatewayConfig::parse(&with_token, "gw.toml").is_ok());
}

#[test]
fn retry_delays_must_grow_and_statuses_must_be_errors() {
    let text = MINIMAL.replace(
        "upstreams = [",
        "retry = { initial = \"5s\", max = \"1s\", on = [200, \"dns\", 503] }\nupstreams = [",
    );
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "services[0].retry.max",
            "services[0].retry.on[0]",
            "services[0].retry.on[1]"
        ]
    );
    assert!(
        p[0].message.contains("at least `initial`"),
        "{}",
        p[0].message
    );
}

#[test]
fn a_per_try_timeout_longer_than_the_total_is_refused() {
    let text = MINIMAL.replace("upstreams = [", "per_try_timeout = \"5s\"\nupstreams = [");
    let p = one_problem(&text);
    assert_eq!(p.key, "services[0].per_try_timeout");
}

#[test]
fn upstreams_need_a_positive_weight_somewhere() {
    let text = MINIMAL.replace(
        "upstreams = [ \"http://127.0.0.1:7001\" ]",
        "upstreams = [ { url = \"http://127.0.0.1:7001\", weight = 0 } ]",
    );
    let p = one_problem(&text);
    assert_eq!(p.key, "services[0].upstreams");
    assert!(p.message.contains("weight 0"), "{}", p.message);
}

#[test]
fn a_syntax_error_is_one_problem_at_its_position() {
    let p = one_problem("[server]\nlisten = \"127.0.0.1:8080\n");
    assert_eq!(p.key, "(syntax)");
    assert_eq!(p.line, 2);
    assert!(p.message.starts_with("not valid TOML"), "{}", p.message);
}

#[test]
fn an_empty_file_says_what_is_missing() {
    let keys: Vec<String> = problems("").into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec!["services", "routes"]);
}

#[test]
fn trusted_proxies_accept_networks_and_bare_addresses() {
    let text = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"proxy.local\"]\n{MINIMAL}"
    );
    let p = one_problem(&text);
    assert_eq!(p.key, "server.trusted_proxies[2]");
    let ok = format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n{MINIMAL}");
    let c = GatewayConfig::parse(&ok, "gw.toml").unwrap();
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert!(c.rate_limit.is_none(), "trusted proxies need no rate limit");
}

#[test]
fn the_old_trusted_proxies_key_still_works_with_a_deprecation_warning() {
    let text = format!("[rate_limit]\nrate = 5\ntrusted_proxies = [\"10.0.0.0/8\"]\n{MINIMAL}");
    let c = GatewayConfig::parse(&text, "gw.toml").unwrap();
    assert_eq!(
        c.rate_limit.as_ref().unwrap().burst,
        5,
        "burst defaults to rate"
    );
    assert_eq!(
        c.server.trusted_proxies,
        vec!["10.0.0.0/8".parse().unwrap()]
    );
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("gw.toml:3:19: `rate_limit.trusted_proxies`: deprecated"),
        "{}",
        c.warnings[0]
    );
    assert!(c.warnings[0].contains("`[server]`"), "{}", c.warnings[0]);

    // Both, agreeing: accepted (still with the warning); disagreeing: refused.
    let same = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         [rate_limit]\nrate = 5\ntrusted_proxies = [\"10.0.0.0/8\"]\n{MINIMAL}"
    );
    assert_eq!(
        GatewayConfig::parse(&same, "gw.toml")
            .unwrap()
            .warnings
            .len(),
        1
    );
    let differ = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         [rate_limit]\nrate = 5\ntrusted_proxies = [\"127.0.0.1\"]\n{MINIMAL}"
    );
    let p = one_problem(&differ);
    assert_eq!((p.line, p.key.as_str()), (5, "rate_limit.trusted_proxies"));
    assert!(
        p.message.contains("server.trusted_proxies"),
        "{}",
        p.message
    );
}

#[test]
fn the_ipv6_prefix_and_the_drain_delay_are_checked() {
    let ok = format!(
        "[server]\ndrain_delay = \"0s\"\n[rate_limit]\nrate = 5\nipv6_prefix = 48\n{MINIMAL}"
    );
    let c = GatewayConfig::parse(&ok, "gw.toml").unwrap();
    assert_eq!(c.rate_limit.unwrap().ipv6_prefix, 48);
    assert_eq!(c.server.drain_delay, Duration::ZERO);
    for bad in ["0", "129", "\"64\""] {
        let p = one_problem(&format!(
            "[rate_limit]\nrate = 5\nipv6_prefix = {bad}\n{MINIMAL}"
        ));
        assert_eq!(p.key, "rate_limit.ipv6_prefix");
        assert!(p.message.contains("from 1 to 128"), "{}", p.message);
    }
    let p = one_problem(&format!("[server]\ndrain_delay = 5\n{MINIMAL}"));
    assert_eq!((p.line, p.key.as_str()), (2, "server.drain_delay"));
    let p = one_problem(&format!("[server]\ndrain_dealy = \"5s\"\n{MINIMAL}"));
    assert!(
        p.message.contains("did you mean `drain_delay`?"),
        "{}",
        p.message
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_file() {
    let err = GatewayConfig::from_file("/nonexistent/gw.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/gw.toml"), "{err}");
}

#[test]
fn health_checks_are_off_unless_asked_for_and_take_documented_defaults() {
    let c = GatewayConfig::parse(MINIMAL, "gw.toml").unwrap();
    assert_eq!(c.service("users").unwrap().health_check, None);
    let text = MINIMAL.replace(
        "upstreams = [",
        "health_check = { unhealthy_threshold = 5 }\nupstreams = [",
    );
    let c = GatewayConfig::parse(&text, "gw.toml").unwrap();
    let h = c.service("users").unwrap().health_check.clone().unwrap();
    assert_eq!(h.path, "/health");
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!((h.unhealthy_threshold, h.healthy_threshold), (5, 2));
    assert_eq!(h.expected_status, (200, 399));
    let text = MINIMAL.replace(
        "upstreams = [",
        "health_check = { path = \"/ping?deep=1\", expected_status = 204 }\nupstreams = [",
    );
    let c = GatewayConfig::parse(&text, "gw.toml").unwrap();
    let h = c.service("users").unwrap().health_check.clone().unwrap();
    assert_eq!(
        (h.path.as_str(), h.expected_status),
        ("/ping?deep=1", (204, 204))
    );
}

#[test]
fn bad_health_check_settings_are_each_named_with_what_would_do() {
    let text = MINIMAL.replace(
        "upstreams = [",
        "health_check = { path = \"health\", interval = \"5s\", timeout = \"10s\", healthy_threshold = 0, expected_status = \"399-200\", every = \"5s\" }\nupstreams = [",
    );
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "services[0].health_check.path",
        "services[0].health_check.timeout",
        "services[0].health_check.healthy_threshold",
        "services[0].health_check.expected_status",
        "services[0].health_check.every",
    ] {
        assert!(keys.contains(&key), "{key} not reported: {p:#?}");
    }
    let timeout = p.iter().find(|p| p.key.ends_with(".timeout")).unwrap();
    assert!(
        timeout.message.contains("at most the `interval` (5s)"),
        "{}",
        timeout.message
    );
    assert_eq!(timeout.line, 4, "{timeout:?}");
    let path = p.iter().find(|p| p.key.ends_with(".path")).unwrap();
    assert!(
        path.message.contains("starting with '/'"),
        "{}",
        path.message
    );
}

#[test]
fn health_check_problems_name_line_column_key_and_a_suggestion() {
    let text = r#"
[[services]]
name = "users"
upstreams = [ "http://127.0.0.1:7001" ]
health_check = { intervall = "5s", unhealthy_threshold = 0 }

[[routes]]
path_prefix = "/users"
service = "users"
"#;
    let p = problems(text);
    let typo = p
        .iter()
        .find(|p| p.key == "services[0].health_check.intervall")
        .unwrap_or_else(|| panic!("{p:#?}"));
    assert_eq!((typo.line, typo.column), (5, 18), "{typo:?}");
    assert!(
        typo.message.contains("did you mean `interval`?"),
        "{}",
        typo.message
    );
    let zero = p
        .iter()
        .find(|p| p.key == "services[0].health_check.unhealthy_threshold")
        .unwrap_or_else(|| panic!("{p:#?}"));
    assert_eq!((zero.line, zero.column), (5, 58), "{zero:?}");
    let err = GatewayConfig::parse(text, "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gw.toml:5:58")
            && err.contains("services[0].health_check.unhealthy_threshold"),
        "{err}"
    );
}

#[test]
fn health_checks_may_be_a_sub_table_and_must_be_a_table() {
    let text = MINIMAL.replace(
        "\n[[routes]]",
        "[services.health_check]\npath = \"/live\"\ninterval = \"10s\"\ntimeout = \"2s\"\nexpected_status = \"200-299\"\n\n[[routes]]",
    );
    let c = GatewayConfig::parse(&text, "gw.toml").unwrap();
    let h = c.service("users").unwrap().health_check.clone().unwrap();
    assert_eq!(h.path, "/live");
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_secs(10), Duration::from_secs(2))
    );
    assert_eq!(h.expected_status, (200, 299));

    let p = one_problem(&MINIMAL.replace("upstreams = [", "health_check = true\nupstreams = ["));
    assert_eq!(p.key, "services[0].health_check");
    assert_eq!(p.line, 4, "{p:?}");
}

#[test]
fn health_checks_are_not_sent_more_often_than_every_100ms() {
    let p = one_problem(&MINIMAL.replace(
        "upstreams = [",
        "health_check = { interval = \"50ms\", timeout = \"10ms\" }\nupstreams = [",
    ));
    assert_eq!(p.key, "services[0].health_check.interval");
    assert!(p.message.contains("at least 100ms"), "{}", p.message);
}
