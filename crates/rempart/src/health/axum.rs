//! axum handlers for `/health` and `/ready` (cargo feature `axum`).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::HealthRegistry;

/// `GET /health`: 200 with `{"status":"ok","timestamp":...}`.
pub async fn liveness(State(health): State<HealthRegistry>) -> Response {
    health.liveness().into_response().into_response()
}

/// `GET /ready`: runs the checks; 200 if all pass, else 503, with the report.
pub async fn readiness(State(health): State<HealthRegistry>) -> Response {
    health.readiness().await.into_response().into_response()
}

/// A router serving [`liveness`] at `/health` and [`readiness`] at `/ready`.
pub fn router<S>(health: HealthRegistry) -> Router<S> {
    Router::new()
        .route("/health", get(liveness))
        .route("/ready", get(readiness))
        .with_state(health)
}
