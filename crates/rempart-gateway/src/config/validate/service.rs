//! `[[services]]`: each entry's keys, its unique name, its upstreams (http
//! URLs with weights, not all zero) and its timeouts (`per_try_timeout` at
//! most `timeout`). The inline sub-tables are read in `service_tables`.

use std::collections::HashSet;
use std::time::Duration;

use http::Uri;

use crate::config::reader::{OkOrDefault, Reader, Section, describe, join, start};
use crate::config::{ServiceConfig, UpstreamConfig};

impl Reader<'_> {
    /// The `[[services]]` entries, and whether one had no usable name: a
    /// route naming it would only repeat that problem, so the routes hold
    /// back their unknown-service errors.
    pub(super) fn services(
        &mut self,
        top: Section<'_>,
        cache_in_redis: bool,
    ) -> (Vec<ServiceConfig>, bool) {
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
        let mut unnamed_service = false;
        for (i, (table, at)) in entries.into_iter().enumerate() {
            let path = format!("services[{i}]");
            let s = Section {
                table,
                at,
                path: &path,
            };
            let svc = self.service(s, cache_in_redis);
            unnamed_service |= svc.is_none();
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
        (out, unnamed_service)
    }

    fn service(&mut self, s: Section<'_>, cache_in_redis: bool) -> Option<ServiceConfig> {
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
                "queue",
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
        let queue = self.queue(s, name.as_deref().unwrap_or("service"), cache_in_redis);
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
            queue,
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
}
