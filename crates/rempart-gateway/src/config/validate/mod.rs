//! What a valid configuration is: the top level's keys, and what holds across
//! sections (the deprecated `rate_limit.trusted_proxies` against
//! `server.trusted_proxies`; routes naming defined services). Each section's
//! own keys and checks are in the file named after it.

mod cache;
mod queue;
mod rate_limit;
mod routes;
mod server;
mod service;
mod service_tables;

use crate::config::reader::{Reader, Section, position};
use crate::config::{GatewayConfig, Problem};

impl Reader<'_> {
    /// The whole document, every section read and checked; problems and
    /// warnings are left in the reader.
    pub(super) fn document(&mut self, root: &toml_edit::Table) -> GatewayConfig {
        let top = Section {
            table: root,
            at: 0,
            path: "",
        };
        self.known_keys(
            top,
            &["server", "rate_limit", "cache", "services", "routes"],
        );
        let (mut server, trusted_set) = self.server(top);
        let (rate_limit, old_trusted) = match self.rate_limit(top) {
            Some((rl, old)) => (Some(rl), old),
            None => (None, None),
        };
        // `rate_limit.trusted_proxies` predates `server.trusted_proxies`:
        // still read, with a warning, and refused if the two disagree.
        if let Some((nets, at)) = old_trusted {
            let (line, column) = position(self.text, at);
            self.warnings.push(Problem {
                line,
                column,
                key: "rate_limit.trusted_proxies".into(),
                message: "deprecated: the trusted proxies apply with or without a rate \
                          limit; move this key to `[server]`"
                    .into(),
            });
            if trusted_set && server.trusted_proxies != nets {
                self.problem(
                    at,
                    "rate_limit.trusted_proxies",
                    "differs from `server.trusted_proxies`; keep only `server.trusted_proxies`",
                );
            } else {
                server.trusted_proxies = nets;
            }
        }
        let cache = self.cache(top);
        let cache_in_redis = matches!(cache.backend, crate::config::CacheBackend::Redis { .. });
        let (services, unnamed_service) = self.services(top, cache_in_redis);
        let routes = self.routes(top, &services, unnamed_service);
        GatewayConfig {
            server,
            rate_limit,
            cache,
            services,
            routes,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::GatewayConfig;

    #[test]
    fn a_route_to_a_service_whose_name_was_refused_is_not_reported_again() {
        let text = r#"
[[services]]
name = "bad name"
upstreams = ["http://127.0.0.1:7003"]

[[routes]]
path_prefix = "/a"
service = "bad name"
"#;
        let err = GatewayConfig::parse(text, "t.toml").unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["services[0].name"]);
    }
}
