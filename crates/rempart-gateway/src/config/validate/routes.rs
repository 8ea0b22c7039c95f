//! `[[routes]]`: each prefix a path (once only), each naming a defined
//! service (with a did-you-mean), and what the route allows.

use std::collections::HashSet;

use crate::config::reader::{Reader, Section, closest, join};
use crate::config::{RouteConfig, ServiceConfig};

impl Reader<'_> {
    /// The `[[routes]]` entries; `unnamed_service`: a service had no usable
    /// name, so a route naming an unknown service is not reported again.
    pub(super) fn routes(
        &mut self,
        top: Section<'_>,
        services: &[ServiceConfig],
        unnamed_service: bool,
    ) -> Vec<RouteConfig> {
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
                    "queue_methods",
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
                && !unnamed_service
            {
                let sat = self.entry(s, "service").map_or(at, |e| e.1);
                let message = match closest(name, &names) {
                    Some(n) => format!("no service named {name:?}; did you mean {n:?}?"),
                    None if names.is_empty() => {
                        format!("no service named {name:?}; no services are defined")
                    }
                    None => format!("no service named {name:?}; defined: {}", names.join(", ")),
                };
                self.problem(sat, join(&path, "service"), message);
            }
            let retry_non_idempotent = self.bool(s, "retry_non_idempotent", false);
            let strip_prefix = self.bool(s, "strip_prefix", false);
            let queued = service
                .as_deref()
                .and_then(|n| services.iter().find(|svc| svc.name == n))
                .map(|svc| svc.queue.is_some());
            let queue_methods = self.queue_methods(s, queued);
            if let (Some(path_prefix), Some(service)) = (prefix, service) {
                out.push(RouteConfig {
                    path_prefix,
                    service,
                    retry_non_idempotent,
                    strip_prefix,
                    queue_methods,
                });
            }
        }
        out
    }
}
