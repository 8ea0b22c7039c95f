//! The admin listener: `/health`, `/ready`, `/metrics`, a JSON status API and
//! breaker controls. Loopback by default; a bearer token guards it otherwise.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Gateway;

#[derive(Clone)]
struct Admin {
    gateway: Gateway,
    token: Option<String>,
    config_path: Option<PathBuf>,
}

/// The admin routes, for `gateway`, demanding `token` as a bearer token if
/// set; `POST /reload` re-reads `config_path`.
pub fn router(gateway: Gateway, token: Option<String>, config_path: Option<PathBuf>) -> Router {
    let state = Admin {
        gateway,
        token,
        config_path,
    };
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
    token: Option<String>,
    config_path: Option<PathBuf>,
    mut stopped: watch::Receiver<bool>,
) {
    let app = router(gateway, token, config_path);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await;
}

async fn bearer(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    if let Some(token) = &admin.token {
        // A browser cannot put a header on a page it navigates to, so the
        // dashboard page (GET only) may carry the token as `?token=`.
        let from_query = (req.method() == axum::http::Method::GET)
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
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "unauthorized", "message": "the admin API needs `Authorization: Bearer <admin_token>`"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// The live dashboard: one self-contained page (no CDN) polling `/status`.
async fn dashboard() -> impl IntoResponse {
    axum::response::Html(include_str!("dashboard.html"))
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn ready(State(admin): State<Admin>) -> Response {
    let mut failed = serde_json::Map::new();
    for s in admin.gateway.services() {
        if s.upstreams.available() == 0 {
            failed.insert(
                s.config.name.clone(),
                json!("every upstream host is ejected or failing its health checks"),
            );
        }
    }
    if let Some(redis) = admin.gateway.redis()
        && !redis.is_healthy()
    {
        failed.insert(
            "cache".into(),
            json!(format!(
                "redis at {} is unreachable; serving with in-process fallbacks",
                redis.url()
            )),
        );
    }
    let ready = failed.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "failed": failed,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(admin): State<Admin>) -> Response {
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
    let services: Vec<_> = admin
        .gateway
        .services()
        .iter()
        .map(|s| {
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
    match crate::server::reload(&admin.gateway, admin.config_path.as_deref()) {
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
