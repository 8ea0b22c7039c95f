//! A plain tower service for `/health` and `/ready`, for servers that do not
//! use axum (a hyper server, the gateway).

use std::convert::Infallible;
use std::task::{Context, Poll};

use super::HealthRegistry;
use crate::fallback::BoxFuture;

/// Answers `GET /health` (liveness) and `GET /ready` (readiness); any other
/// path gets 404 and any other method on those paths 405, so it can sit in
/// front of an application service or be routed to directly.
///
/// ```
/// use rempart::health::{HealthRegistry, HealthService};
/// use tower_service::Service;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let mut svc = HealthService::new(HealthRegistry::new().check("redis", || async { Ok(()) }));
/// let req = http::Request::get("/ready").body(()).unwrap();
/// let resp = svc.call(req).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// assert!(resp.body().contains(r#""status":"ready""#));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct HealthService {
    health: HealthRegistry,
}

impl HealthService {
    /// Serves `health`'s reports.
    pub fn new(health: HealthRegistry) -> Self {
        HealthService { health }
    }

    /// The paths this service answers: a router can send these here.
    pub fn handles(path: &str) -> bool {
        matches!(path, "/health" | "/ready")
    }
}

fn plain(status: http::StatusCode) -> http::Response<String> {
    let mut resp = http::Response::new(String::new());
    *resp.status_mut() = status;
    resp
}

impl<B> tower_service::Service<http::Request<B>> for HealthService {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let health = self.health.clone();
        let path = req.uri().path().to_owned();
        // HEAD answers like GET; load balancers use both.
        let readable = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
        Box::pin(async move {
            Ok(match (path.as_str(), readable) {
                ("/health", true) => health.liveness().into_response(),
                ("/ready", true) => health.readiness().await.into_response(),
                ("/health" | "/ready", false) => {
                    let mut resp = plain(http::StatusCode::METHOD_NOT_ALLOWED);
                    resp.headers_mut().insert(
                        http::header::ALLOW,
                        http::HeaderValue::from_static("GET, HEAD"),
                    );
                    resp
                }
                _ => plain(http::StatusCode::NOT_FOUND),
            })
        })
    }
}
