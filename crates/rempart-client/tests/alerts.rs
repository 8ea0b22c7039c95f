//! The shipped alerts (examples/prometheus-alerts.yml): promtool's own tests
//! pass, and every metric they name is one the client exposes.

mod support;

use std::path::PathBuf;
use std::process::Command;

use prometheus_client::registry::Registry;
use support::{Act, Server, body, config, resilient, status};

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))
}

#[test]
fn promtool_passes_the_alerts_own_tests() {
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        // CI installs Debian's `prometheus` package (.ci/run); there, a missing promtool fails.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed: `apt-get install prometheus` provides it"
        );
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        return;
    };
    assert!(version.status.success());
    for args in [
        ["check", "rules", "prometheus-alerts.yml"],
        ["test", "rules", "prometheus-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(examples())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Metric names in the rules' expressions: identifiers directly followed
/// by `{` or `[`, or standing before a comparison.
fn metric_names(rules: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("expr:") {
            in_expr = true;
            scan(rest, &mut names);
        } else if in_expr
            && !t.is_empty()
            && t.chars().next().is_some_and(char::is_alphabetic)
            && t.contains(':')
        {
            in_expr = false;
        } else if in_expr {
            scan(t, &mut names);
        }
    }
    names.sort();
    names.dedup();
    names
}

fn scan(expr: &str, names: &mut Vec<String>) {
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        // A function is followed by `(`, a keyword by a space and `(`.
        let is_metric =
            word.contains('_') && !word.starts_with(|c: char| c.is_ascii_digit()) && c != '(';
        if is_metric && !["budget_refused"].contains(&word.as_str()) {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
}

#[tokio::test(start_paused = true)]
async fn every_metric_the_alerts_name_is_exposed_by_the_client() {
    let rules = std::fs::read_to_string(examples().join("prometheus-alerts.yml")).unwrap();
    let names = metric_names(&rules);
    assert_eq!(
        names,
        [
            "circuit_breaker_state",
            "fallback_activations_total",
            "retry_attempts_total",
            "retry_calls_total",
            "retry_delay_seconds_count",
            "retry_delay_seconds_sum",
        ]
    );

    // A call that is retried, then one that the fallback answers.
    let server = Server::start(vec![status(503), body(200, "ok")], Act::Hang).await;
    let (client, _) = resilient(&config(
        "max_retries = 1\n[retry.fallback]\nstrategy = \"degraded\"\n",
    ));
    let mut registry = Registry::default();
    client.register(&mut registry);
    client.get(server.url("/")).send().await.unwrap();
    client.get(server.url("/")).send().await.unwrap();
    let mut exposed = String::new();
    prometheus_client::encoding::text::encode(&mut exposed, &registry).unwrap();

    let key = server.key();
    for name in &names {
        let line = exposed
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        let line = line.unwrap_or_else(|| {
            panic!("the alerts name {name}, which the client does not expose:\n{exposed}")
        });
        assert!(line.contains(&format!("service=\"{key}\"")), "{line}");
    }
    assert!(
        exposed.contains(&format!("retry_attempts_total{{service=\"{key}\"}} 4")),
        "{exposed}"
    );
    assert!(
        exposed.contains(&format!(
            "fallback_activations_total{{service=\"{key}\",kind=\"degraded\"}} 1"
        )),
        "{exposed}"
    );
}
