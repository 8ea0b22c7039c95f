//! `queue = { ... }` on a service (a broker URL, queue names RabbitMQ
//! accepts, a backoff whose `max` is at least its `initial`, a results store
//! that exists) and `queue_methods` on a route (HTTP methods, only towards a
//! service that has a `queue`).

use std::time::Duration;

use crate::config::reader::{OkOrDefault, Reader, Section, join, start};
use crate::config::{QueueConfig, ResultsBackend};

impl Reader<'_> {
    pub(super) fn queue(
        &mut self,
        s: Section<'_>,
        service: &str,
        cache_in_redis: bool,
    ) -> Option<QueueConfig> {
        let mut path = String::new();
        let q = self.sub(s, "queue", &mut path)?;
        self.known_keys(
            q,
            &[
                "amqp_url",
                "name",
                "max_attempts",
                "backoff",
                "result_ttl",
                "results",
                "worker",
                "owner_cookies",
            ],
        );
        let amqp_url = self.value(
            q,
            "amqp_url",
            "a URL such as \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
            true,
            |i| {
                let t = i.as_str().ok_or_default()?;
                if t.starts_with("amqp://") || t.starts_with("amqps://") {
                    Ok(t.to_owned())
                } else {
                    Err(" (it must start with amqp:// or amqps://)".into())
                }
            },
        );
        // RabbitMQ names are at most 255 bytes, `amq.` is reserved, and the
        // delay queues add a suffix.
        let name = self
            .value(
                q,
                "name",
                "a queue name of at most 200 characters, not starting with \"amq.\"",
                false,
                |i| {
                    let t = i.as_str().ok_or_default()?;
                    if t.is_empty() || t.len() > 200 || t.starts_with("amq.") {
                        Err(String::new())
                    } else {
                        Ok(t.to_owned())
                    }
                },
            )
            .unwrap_or_else(|| format!("{service}-jobs"));
        let max_attempts = self.int(q, "max_attempts", 1, 100, 5) as u32;
        let (backoff_initial, backoff_max) = self.queue_backoff(q);
        let result_ttl = self.duration(q, "result_ttl", Duration::from_secs(86_400));
        if result_ttl.is_zero() {
            let at = self.entry(q, "result_ttl").map_or(q.at, |e| e.1);
            self.problem(
                at,
                join(q.path, "result_ttl"),
                "must be longer than 0s, or no client could read a result",
            );
        }
        let results = self
            .value(
                q,
                "results",
                "\"memory\" or \"redis\"",
                false,
                |i| match i.as_str() {
                    Some("memory") => Ok(ResultsBackend::Memory),
                    Some("redis") => Ok(ResultsBackend::Redis),
                    _ => Err(String::new()),
                },
            )
            .unwrap_or(ResultsBackend::Memory);
        if results == ResultsBackend::Redis && !cache_in_redis {
            let at = self.entry(q, "results").map_or(q.at, |e| e.1);
            self.problem(
                at,
                join(q.path, "results"),
                "\"redis\" keeps results in the [cache] Redis, but [cache] has no `backend = \"redis\"`; set it (with `redis_url`) or use \"memory\"",
            );
        }
        let worker = self.bool(q, "worker", true);
        let owner_cookies = self.owner_cookies(q);
        // A bad URL is already reported and fails the parse; the queue is kept
        // so its routes' `queue_methods` are not refused a second time.
        Some(QueueConfig {
            amqp_url: amqp_url.unwrap_or_default(),
            name,
            max_attempts,
            backoff_initial,
            backoff_max,
            result_ttl,
            results,
            worker,
            owner_cookies,
        })
    }

    /// `owner_cookies`: cookie names (RFC 6265 tokens), each at most once.
    fn owner_cookies(&mut self, q: Section<'_>) -> Vec<String> {
        let Some((array, at, path)) = self.array(q, "owner_cookies", "[\"session\"]") else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for (i, v) in array.iter().enumerate() {
            let vat = start(v.span()).unwrap_or(at);
            match v.as_str().filter(|n| is_cookie_name(n)) {
                Some(n) if out.iter().any(|o| o == n) => self.problem(
                    vat,
                    format!("{path}[{i}]"),
                    format!("{n:?} is listed twice; list each cookie once"),
                ),
                Some(n) => out.push(n.to_owned()),
                None => self.problem(
                    vat,
                    format!("{path}[{i}]"),
                    format!(
                        "expected a cookie name such as \"session\" (letters, digits and !#$%&'*+-.^_`|~), got {}",
                        v.to_string().trim()
                    ),
                ),
            }
        }
        out
    }

    fn queue_backoff(&mut self, q: Section<'_>) -> (Duration, Duration) {
        let mut path = String::new();
        let defaults = (Duration::from_secs(1), Duration::from_secs(60));
        let Some(b) = self.sub(q, "backoff", &mut path) else {
            return defaults;
        };
        self.known_keys(b, &["initial", "max"]);
        let initial = self.duration(b, "initial", defaults.0);
        let max = self.duration(b, "max", defaults.1);
        if initial.is_zero() || max < initial {
            let at = self.entry(b, "max").map_or(b.at, |e| e.1);
            self.problem(
                at,
                join(b.path, "max"),
                format!(
                    "the waits must start above 0s and grow: `initial` = {}, `max` = {}; make `max` at least `initial`",
                    humantime::format_duration(initial),
                    humantime::format_duration(max)
                ),
            );
        }
        (initial, max)
    }

    /// `queue_methods`; `queued`: whether the route's service has a `queue`
    /// (`None` when the service itself is unknown, already reported).
    pub(super) fn queue_methods(
        &mut self,
        s: Section<'_>,
        queued: Option<bool>,
    ) -> Vec<http::Method> {
        let Some((array, at, path)) = self.array(s, "queue_methods", "[\"POST\"]") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            let vat = start(v.span()).unwrap_or(at);
            let method = v
                .as_str()
                .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()))
                .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
            match method {
                Some(m) => out.push(m),
                None => self.problem(
                    vat,
                    format!("{path}[{i}]"),
                    format!(
                        "expected an HTTP method in capitals such as \"POST\", got {}",
                        v.to_string().trim()
                    ),
                ),
            }
        }
        if queued == Some(false) && !array.is_empty() {
            self.problem(
                at,
                path,
                "the route's service has no `queue`, so nothing can be deferred; add `queue = { amqp_url = ... }` to the service or remove this key",
            );
        }
        out
    }
}

/// A cookie name as RFC 6265 allows it: a non-empty HTTP token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{GatewayConfig, QueueConfig, ResultsBackend};

    fn config(queue: &str, methods: &str, cache: &str) -> String {
        format!(
            r#"{cache}
[[services]]
name = "optimizer"
upstreams = ["http://127.0.0.1:7020"]
{queue}

[[routes]]
path_prefix = "/optimize"
service = "optimizer"
{methods}
"#
        )
    }

    /// (line, key, message) of each problem.
    fn problems(text: &str) -> Vec<(usize, String, String)> {
        GatewayConfig::parse(text, "t.toml")
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| (p.line, p.key.clone(), p.message.clone()))
            .collect()
    }

    #[test]
    fn the_issue_example_parses_with_defaults_filled_in() {
        let text = config(
            r#"queue = { amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f", max_attempts = 5, backoff = { initial = "1s", max = "60s" }, result_ttl = "24h", results = "memory" }"#,
            r#"queue_methods = ["POST"]"#,
            "",
        );
        let c = GatewayConfig::parse(&text, "t.toml").unwrap();
        assert_eq!(
            c.services[0].queue,
            Some(QueueConfig {
                amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                name: "optimizer-jobs".into(),
                max_attempts: 5,
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                result_ttl: Duration::from_secs(86_400),
                results: ResultsBackend::Memory,
                worker: true,
                owner_cookies: Vec::new(),
            })
        );
        assert_eq!(c.routes[0].queue_methods, [http::Method::POST]);
    }

    #[test]
    fn the_embedded_worker_can_be_left_to_a_separate_process() {
        let q = r#"queue = { amqp_url = "amqp://127.0.0.1", worker = false }"#;
        let c = GatewayConfig::parse(&config(q, "", ""), "t.toml").unwrap();
        assert!(!c.services[0].queue.as_ref().unwrap().worker);
        let p = problems(&config(
            r#"queue = { amqp_url = "amqp://127.0.0.1", worker = "no" }"#,
            "",
            "",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].0, p[0].1.as_str()), (5, "services[0].queue.worker"));
        let p = problems(&config(
            r#"queue = { amqp_url = "amqp://127.0.0.1", workers = false }"#,
            "",
            "",
        ));
        assert!(p[0].2.contains("did you mean `worker`"), "{}", p[0].2);
    }

    #[test]
    fn owner_cookies_name_the_session_cookies() {
        let q = r#"queue = { amqp_url = "amqp://127.0.0.1", owner_cookies = ["session", "__Host-id"] }"#;
        let c = GatewayConfig::parse(&config(q, "", ""), "t.toml").unwrap();
        assert_eq!(
            c.services[0].queue.as_ref().unwrap().owner_cookies,
            ["session", "__Host-id"]
        );
        let p = problems(&config(
            r#"queue = { amqp_url = "amqp://127.0.0.1", owner_cookies = ["session", "a b", "", 3, "session"] }"#,
            "",
            "",
        ));
        let keys: Vec<&str> = p.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "services[0].queue.owner_cookies[1]",
                "services[0].queue.owner_cookies[2]",
                "services[0].queue.owner_cookies[3]",
                "services[0].queue.owner_cookies[4]",
            ],
            "{p:?}"
        );
        assert!(p[0].2.contains("cookie name"), "{}", p[0].2);
        assert!(p[3].2.contains("listed twice"), "{}", p[3].2);
        let p = problems(&config(
            r#"queue = { amqp_url = "amqp://127.0.0.1", owner_cookies = "session" }"#,
            "",
            "",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].0, p[0].1.as_str()),
            (5, "services[0].queue.owner_cookies")
        );
        assert!(p[0].2.contains("expected an array"), "{}", p[0].2);
    }

    #[test]
    fn without_a_queue_nothing_is_deferred() {
        let c = GatewayConfig::parse(&config("", "", ""), "t.toml").unwrap();
        assert_eq!(c.services[0].queue, None);
        assert!(c.routes[0].queue_methods.is_empty());
    }

    #[test]
    fn a_missing_amqp_url_is_named_with_its_line() {
        let p = problems(&config(r#"queue = { name = "jobs" }"#, "", ""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].0, p[0].1.as_str()), (5, "services[0].queue.amqp_url"));
        assert!(p[0].2.contains("amqp://"), "{}", p[0].2);
    }

    #[test]
    fn an_unknown_results_backend_is_refused() {
        let p = problems(&config(
            r#"queue = { amqp_url = "amqp://127.0.0.1", results = "postgres" }"#,
            "",
            "",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].0, p[0].1.as_str()), (5, "services[0].queue.results"));
        assert!(p[0].2.contains("\"memory\" or \"redis\""), "{}", p[0].2);
    }

    #[test]
    fn redis_results_need_the_cache_in_redis() {
        let q = r#"queue = { amqp_url = "amqp://127.0.0.1", results = "redis" }"#;
        let p = problems(&config(q, "", ""));
        assert_eq!(p[0].1, "services[0].queue.results");
        assert!(p[0].2.contains("[cache]"), "{}", p[0].2);
        let cache = "[cache]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"";
        let c = GatewayConfig::parse(&config(q, "", cache), "t.toml").unwrap();
        assert_eq!(
            c.services[0].queue.as_ref().unwrap().results,
            ResultsBackend::Redis
        );
    }

    #[test]
    fn queue_methods_need_a_service_with_a_queue() {
        let p = problems(&config("", r#"queue_methods = ["POST"]"#, ""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].0, p[0].1.as_str()), (10, "routes[0].queue_methods"));
        assert!(p[0].2.contains("has no `queue`"), "{}", p[0].2);
    }

    #[test]
    fn bad_queue_values_are_each_reported() {
        let p = problems(&config(
            r#"queue = { amqp_url = "http://x", name = "amq.jobs", max_attempts = 0, backoff = { initial = "2s", max = "1s" }, result_ttl = "0s", result = "memory" }"#,
            r#"queue_methods = ["post", 3]"#,
            "",
        ));
        let keys: Vec<&str> = p.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "services[0].queue.amqp_url",
                "services[0].queue.name",
                "services[0].queue.max_attempts",
                "services[0].queue.backoff.max",
                "services[0].queue.result_ttl",
                "services[0].queue.result",
                "routes[0].queue_methods[0]",
                "routes[0].queue_methods[1]",
            ],
            "{p:?}"
        );
        assert!(p[5].2.contains("did you mean `results`"), "{}", p[5].2);
    }
}
