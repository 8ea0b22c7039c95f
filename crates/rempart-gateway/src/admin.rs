//! The admin listener: `/health`, `/ready`, `/metrics`, a JSON status API and
//! breaker controls. Loopback by default; a bearer token guards it otherwise.
//!
//! Every `POST` also needs `X-Rempart-Admin: 1` (or the bearer token): a web
//! page the operator visits can make the browser POST to the loopback admin
//! port, but cannot add a custom header without a CORS preflight, which
//! this listener never grants. The `?token=` query parameter is accepted on
//! the dashboard page alone, since a browser cannot put a header on a page
//! it navigates to; anywhere else it would end up in logs and histories.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rempart::health::HealthRegistry;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Gateway;
use crate::queue::topology::QueueNames;
use crate::server::Live;

/// The header every admin `POST` carries (or the bearer token).
pub const ADMIN_HEADER: &str = "x-rempart-admin";

#[derive(Clone)]
struct Admin {
    gateway: Gateway,
    live: Arc<Live>,
    health: HealthRegistry,
}

/// The admin routes for `gateway`, demanding `token` as a bearer token if
/// set; `POST /reload` re-reads `config_path`.
pub fn router(gateway: Gateway, token: Option<String>, config_path: Option<PathBuf>) -> Router {
    let mut server = gateway.config().server;
    server.admin_token = token;
    let live = Arc::new(Live {
        server: arc_swap::ArcSwap::from_pointee(server),
        config_path,
    });
    let health = crate::server::readiness(&gateway);
    routes(Admin {
        gateway,
        live,
        health,
    })
}

fn routes(state: Admin) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/breakers/{name}/trip", post(trip))
        .route("/breakers/{name}/reset", post(reset))
        .route("/reload", post(reload))
        .layer(middleware::from_fn_with_state(state.clone(), bearer))
        .with_state(state)
}

pub(crate) async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    live: Arc<Live>,
    health: HealthRegistry,
    mut stopped: watch::Receiver<bool>,
) {
    let app = routes(Admin {
        gateway,
        live,
        health,
    });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await;
}

async fn bearer(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    // Read per request: a reload that changes the token applies to the next one.
    let server = admin.live.server.load();
    let mut authorised = false;
    if let Some(token) = &server.admin_token {
        let from_query = (req.method() == axum::http::Method::GET
            && is_dashboard(req.uri().path()))
        .then(|| req.uri().query())
        .flatten()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or(from_query);
        // Length first, then every byte: no early exit on the first difference.
        let ok = presented.is_some_and(|p| {
            p.len() == token.len()
                && p.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            let message = if is_dashboard(req.uri().path()) {
                "the admin API needs `Authorization: Bearer <admin_token>` (the dashboard page also takes `?token=<admin_token>`)"
            } else {
                "the admin API needs `Authorization: Bearer <admin_token>`; `?token=` is accepted on the dashboard page only"
            };
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "unauthorized", "message": message})),
            )
                .into_response();
        }
        // Only a header proves intent: a token from the query does not.
        authorised = req.headers().contains_key(header::AUTHORIZATION);
    }
    if req.method() == axum::http::Method::POST
        && !authorised
        && req.headers().get(ADMIN_HEADER).map(|v| v.as_bytes()) != Some(b"1")
    {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({
                "error": "admin_header_missing",
                "message": "admin POST requests need the header `X-Rempart-Admin: 1` (or `Authorization: Bearer <admin_token>`); \
                            it guards against cross-site requests from pages open in a browser",
            })),
        )
            .into_response();
    }
    next.run(req).await
}

/// The paths that serve the dashboard page.
fn is_dashboard(path: &str) -> bool {
    matches!(path, "/" | "/dashboard")
}

/// The live dashboard: one self-contained page (no CDN) polling `/status`.
async fn dashboard() -> impl IntoResponse {
    axum::response::Html(include_str!("dashboard.html"))
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// The library's readiness report: the gateway's checks, and 503 from the
/// moment a drain starts.
async fn ready(State(admin): State<Admin>) -> Response {
    let (parts, body) = admin.health.readiness().await.into_response().into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The wait for the job queues' depths at a scrape: past it the scrape
/// shows the last depths read, rather than hang on a silent broker.
const DEPTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Each queued service's queue depths (`queue`, messages ready), read with
/// passive declares within [`DEPTH_DEADLINE`]; `None` for all when the
/// broker did not answer in time, an error per service that failed.
async fn queue_depths(
    gateway: &Gateway,
) -> Option<Vec<(String, Result<Vec<(String, u32)>, String>)>> {
    let reads = gateway.services().into_iter().filter_map(|s| {
        let queue = Arc::clone(s.queue()?);
        let service = s.config.name.clone();
        Some(async move { (service, queue.depths().await) })
    });
    tokio::time::timeout(DEPTH_DEADLINE, futures_util::future::join_all(reads))
        .await
        .ok()
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let gateway = &admin.gateway;
    for (service, depths) in queue_depths(gateway).await.unwrap_or_default() {
        match depths {
            Ok(depths) => {
                for (queue, n) in depths {
                    gateway.metrics().set_queue_depth(&service, &queue, n);
                }
            }
            Err(e) => tracing::debug!(%service, error = %e, "job queue depths not read"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.gateway.metrics().encode(),
    )
        .into_response()
}

async fn status(State(admin): State<Admin>) -> impl IntoResponse {
    let depths = queue_depths(&admin.gateway).await;
    let services: Vec<_> = admin
        .gateway
        .services()
        .iter()
        .map(|s| {
            // Deferred jobs beside the breaker: counters, and what waits in
            // each queue (null when the broker did not answer in time).
            let jobs = s.queue().map(|_| {
                let c = admin.gateway.metrics().jobs(&s.config.name);
                let read = depths.as_ref().and_then(|all| {
                    all.iter()
                        .find(|(name, _)| *name == s.config.name)
                        .and_then(|(_, d)| d.as_ref().ok())
                });
                let names = s.config.queue.as_ref().map(|q| QueueNames::new(&q.name));
                let waiting = read.zip(names).map(|(d, names)| {
                    let (mut work, mut delayed, mut dead) = (0u64, 0u64, 0u64);
                    for (queue, n) in d {
                        let slot = if *queue == names.work {
                            &mut work
                        } else if *queue == names.dead {
                            &mut dead
                        } else {
                            &mut delayed
                        };
                        *slot += u64::from(*n);
                    }
                    json!({ "work": work, "delayed": delayed, "dead": dead })
                });
                json!({
                    "queued": c.queued.get(),
                    "completed": c.completed.get(),
                    "retried": c.retried.get(),
                    "dead_lettered": c.dead_lettered.get(),
                    "waiting": waiting,
                })
            });
            let m = s.breaker.metrics();
            let [p50, p99] = s.latency.quantiles_ms([0.5, 0.99]);
            let now = s.upstreams.now();
            json!({
                "name": s.config.name,
                "circuit": s.breaker.state().to_string(),
                "calls": {
                    "successful": m.successful_calls,
                    "failed": m.failed_calls,
                    "rejected": m.rejected_calls,
                },
                "bulkhead": {
                    "in_flight": s.in_flight(),
                    "max_concurrent": s.config.bulkhead.max_concurrent,
                },
                "upstreams": s.upstreams.hosts().iter().map(|h| json!({
                    "url": h.url.to_string(),
                    "weight": h.weight,
                    "ejected": h.is_ejected(now),
                    "health_check": if s.health_check().is_none() {
                        "off"
                    } else if h.is_probed_unhealthy() {
                        "failing"
                    } else {
                        "passing"
                    },
                })).collect::<Vec<_>>(),
                "upstreams_available": s.upstreams.available(),
                "latency_ms": { "p50": p50, "p99": p99 },
                "jobs": jobs,
            })
        })
        .collect();
    axum::Json(json!({ "services": services }))
}

fn breaker_action(admin: &Admin, name: &str, trip: bool) -> Response {
    match admin
        .gateway
        .services()
        .iter()
        .find(|s| s.config.name == name)
    {
        Some(s) => {
            if trip {
                s.breaker.trip();
            } else {
                s.breaker.reset();
            }
            axum::Json(json!({"service": name, "circuit": s.breaker.state().to_string()}))
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no_such_service", "message": format!("no service named {name:?}")})),
        )
            .into_response(),
    }
}

async fn trip(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    breaker_action(&admin, &name, true)
}

async fn reset(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    breaker_action(&admin, &name, false)
}

async fn reload(State(admin): State<Admin>) -> Response {
    match crate::server::reload(&admin.live, &admin.gateway) {
        Ok(report) => axum::Json(json!({
            "status": "reloaded",
            "breakers_kept": report.breakers_kept,
            "breakers_new": report.breakers_new,
            "removed": report.removed,
            "needs_restart": report.needs_restart,
        }))
        .into_response(),
        Err(e) => {
            let problems: Vec<String> = match &e {
                crate::server::ReloadError::Config(c) => c
                    .problems()
                    .iter()
                    .map(|p| format!("{}:{}: `{}`: {}", p.line, p.column, p.key, p.message))
                    .collect(),
                _ => Vec::new(),
            };
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "reload_refused", "message": e.to_string(), "problems": problems})),
            )
                .into_response()
        }
    }
}
