//! Which service a request goes to: the longest matching path prefix.
//!
//! A prefix matches on path-segment boundaries: `/reports` takes `/reports`,
//! `/reports/2026` and `/reports?x=1`, but not `/reportsfoo` (nginx's plain
//! string prefix would, which surprises people when `/api` swallows `/apix`).
//! A prefix ending in `/` matches everything under it.

use crate::config::RouteConfig;

/// A route, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its position in the config's `[[routes]]`.
    pub id: usize,
    /// The prefix it matched on.
    pub path_prefix: String,
    /// Index of the service in the gateway's service list.
    pub service: usize,
    /// Retry non-idempotent methods too.
    pub retry_non_idempotent: bool,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
}

/// Routes sorted longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the router; `service_index` maps a service name to its index
    /// (config validation guarantees every route's service exists).
    pub fn new(routes: &[RouteConfig], service_index: impl Fn(&str) -> Option<usize>) -> Router {
        let mut routes: Vec<Route> = routes
            .iter()
            .enumerate()
            .filter_map(|(id, r)| {
                Some(Route {
                    id,
                    path_prefix: r.path_prefix.clone(),
                    service: service_index(&r.service)?,
                    retry_non_idempotent: r.retry_non_idempotent,
                    strip_prefix: r.strip_prefix,
                })
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        Router { routes }
    }

    /// The route for `path` (without query), if any.
    ///
    /// ```
    /// use rempart_gateway::config::RouteConfig;
    /// use rempart_gateway::router::Router;
    ///
    /// let route = |p: &str, s: &str| RouteConfig {
    ///     path_prefix: p.into(), service: s.into(),
    ///     retry_non_idempotent: false, strip_prefix: false, queue_methods: Vec::new(),
    /// };
    /// let names = ["api", "reports"];
    /// let router = Router::new(
    ///     &[route("/api", "api"), route("/api/reports", "reports")],
    ///     |n| names.iter().position(|x| *x == n),
    /// );
    /// assert_eq!(router.route("/api/reports/7").unwrap().service, 1);
    /// assert_eq!(router.route("/api/users").unwrap().service, 0);
    /// assert!(router.route("/apix").is_none());
    /// ```
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| matches(&r.path_prefix, path))
    }

    /// The path to send upstream for `path` on `route`.
    pub fn upstream_path<'p>(route: &Route, path: &'p str) -> std::borrow::Cow<'p, str> {
        if !route.strip_prefix {
            return path.into();
        }
        let prefix = route.path_prefix.trim_end_matches('/');
        let rest = &path[prefix.len().min(path.len())..];
        if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        }
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(prefixes: &[&str]) -> Router {
        let routes: Vec<RouteConfig> = prefixes
            .iter()
            .map(|p| RouteConfig {
                path_prefix: (*p).into(),
                service: (*p).into(),
                retry_non_idempotent: false,
                strip_prefix: true,
                queue_methods: Vec::new(),
            })
            .collect();
        Router::new(&routes, |n| prefixes.iter().position(|p| *p == n))
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_file_order() {
        let r = router(&["/", "/api", "/api/v2"]);
        assert_eq!(r.route("/api/v2/x").unwrap().path_prefix, "/api/v2");
        assert_eq!(r.route("/api/v1").unwrap().path_prefix, "/api");
        assert_eq!(r.route("/other").unwrap().path_prefix, "/");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let r = router(&["/reports", "/static/"]);
        assert!(r.route("/reports").is_some());
        assert!(r.route("/reports/1").is_some());
        assert!(r.route("/reportsx").is_none());
        assert!(r.route("/static/app.js").is_some());
        assert!(r.route("/static").is_none());
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let r = router(&["/reports"]);
        let route = r.route("/reports/7").unwrap();
        assert_eq!(Router::upstream_path(route, "/reports/7"), "/7");
        assert_eq!(Router::upstream_path(route, "/reports"), "/");
    }
}
