//! `rempart events serve`: central's sync API over HTTP (axum).
//!
//! - `POST /v1/batches`: a register's [`PushBatch`] (JSON) → [`Ack`](rempart_events::sync::wire::Ack). Sending
//!   the same batch again adds nothing.
//! - `GET /v1/stores/{store}/events?after=N&limit=M`: shop `store`'s events
//!   after central position N → [`PullPage`](rempart_events::sync::wire::PullPage).
//! - `GET /health`: 200 once the store is open.
//!
//! Bodies are capped ([`MAX_BODY_BYTES`]: 413 past it); bad input gets a 4xx
//! with a JSON `{"error": …}` saying what is wrong and how to fix it; each
//! request has a deadline ([`REQUEST_DEADLINE`]: 503 past it, retried by the
//! register). A store failure is a 503 (retried), never a panic.
//!
//! Every `/v1` request is signed with the register's Ed25519 key
//! (`rempart_events::sync::auth`): a push by the key its batch carries (and
//! central holds a register to the key it first enrolled, 409 otherwise), a
//! pull by the enrolled key of a register of that very shop. Unsigned, badly
//! signed or stale requests get 401; another shop's events, 403. Enrolment is
//! trust on first use: the first push of a register id records its key, so
//! keys should be enrolled before a fleet goes live. What is not here:
//! transport encryption (put TLS in front).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rempart::clock::{Clock, UnixClock};
use rempart_events::sync::auth::{self, AuthError, SignedRequest};
use rempart_events::sync::wire::PushBatch;
use rempart_events::sync::{Central, MAX_PULL_EVENTS, SyncError};
use serde_json::json;

use crate::{EXIT_FAILURE, EXIT_USAGE};

/// The largest request body taken: 2 000 events of a few hundred bytes each,
/// with room to spare.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The limit on one request's work, the store's waits included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// The limit on opening the store at start.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(15);

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = answer(status, json!({ "error": message.into() }));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn sync_error(e: SyncError) -> Response {
    match e {
        SyncError::Rejected(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
        SyncError::Conflict(m) => error(StatusCode::CONFLICT, m),
        SyncError::Busy(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
        e => {
            tracing::warn!(error = %e, "sync request failed on the store");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("central's store failed: {e}; send again later"),
            )
        }
    }
}

async fn with_deadline(work: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, work).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("central did not finish within {REQUEST_DEADLINE:?}; send again later"),
        ),
    }
}

fn auth_error(e: AuthError) -> Response {
    let status = match e {
        AuthError::OtherShop { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    error(status, e.to_string())
}

fn signed(headers: &HeaderMap) -> Result<SignedRequest, AuthError> {
    SignedRequest::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
}

/// Central's wall clock in Unix milliseconds, to judge signing times.
fn now_ms() -> u64 {
    UnixClock::new().now().as_nanos() / 1_000_000
}

async fn push(State(central): State<Arc<Central>>, headers: HeaderMap, body: Bytes) -> Response {
    let signed = match signed(&headers) {
        Ok(s) => s,
        Err(e) => return auth_error(e),
    };
    let batch: PushBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a push batch (JSON with register_id, register_no, store_id, public_key, events): {e}"
                ),
            );
        }
    };
    if let Err(e) = auth::authorize_push(
        &batch.register_id,
        &batch.public_key,
        &signed,
        &body,
        now_ms(),
    ) {
        return auth_error(e);
    }
    match central.receive(batch).await {
        Ok(ack) => answer(StatusCode::OK, json!(ack)),
        Err(e) => sync_error(e),
    }
}

/// `after` and `limit` from a query string, or what is wrong with it.
fn pull_query(raw: Option<&str>) -> Result<(u64, u32), String> {
    let (mut after, mut limit) = (0u64, MAX_PULL_EVENTS);
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                after = v.parse().map_err(|_| {
                    format!("after={v:?}: give a central position, a whole number ≥ 0")
                })?
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PULL_EVENTS).contains(n))
                    .ok_or_else(|| {
                        format!("limit={v:?}: give a whole number from 1 to {MAX_PULL_EVENTS}")
                    })?
            }
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}; this takes `after` and `limit`"
                ));
            }
        }
    }
    Ok((after, limit))
}

async fn pull(
    State(central): State<Arc<Central>>,
    Path(store): Path<String>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let signed = match signed(&headers) {
        Ok(s) => s,
        Err(e) => return auth_error(e),
    };
    let enrolled = match central.enrolment(&signed.register_id).await {
        Ok(e) => e,
        Err(e) => return sync_error(SyncError::Store(e)),
    };
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    if let Err(e) = auth::authorize_pull(
        enrolled
            .as_ref()
            .map(|(shop, keys)| (shop.as_str(), keys.as_slice())),
        &store,
        path_and_query,
        &signed,
        now_ms(),
    ) {
        return auth_error(e);
    }
    let (after, limit) = match pull_query(raw.as_deref()) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if store.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the store id is empty");
    }
    match central.pull(&store, after, limit).await {
        Ok(page) => answer(StatusCode::OK, json!(page)),
        Err(e) => sync_error(SyncError::Store(e)),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route: POST /v1/batches, GET /v1/stores/{store}/events?after=N&limit=M, GET /health",
    )
}

/// The whole request under [`REQUEST_DEADLINE`]: reading its body (a
/// client sending slowly), then the work.
async fn deadline(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    with_deadline(next.run(request)).await
}

/// The API on `central`.
pub fn router(central: Arc<Central>) -> Router {
    Router::new()
        .route("/v1/batches", post(push))
        .route("/v1/stores/{store}/events", get(pull))
        .route("/health", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(deadline))
        .with_state(central)
}

/// `rempart events serve`: opens the store, listens, serves until Ctrl-C
/// or SIGTERM. Returns the exit code.
pub(crate) async fn serve(database: &str, listen: &str) -> u8 {
    let stop = crate::stop::stop_signal();
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "error: --listen {listen:?}: {e}; give an address and port, e.g. 127.0.0.1:7878"
            );
            return EXIT_USAGE;
        }
    };
    let central = match tokio::time::timeout(OPEN_DEADLINE, Central::open(database)).await {
        Err(_) => {
            eprintln!("error: central's store {database} did not open within {OPEN_DEADLINE:?}");
            return EXIT_FAILURE;
        }
        Ok(Err(rempart_events::store::StoreError::Db(e))) if e.is_usage() => {
            eprintln!("error: --database: {e}");
            return EXIT_USAGE;
        }
        Ok(Err(e)) => {
            eprintln!("error: central's store {database}: {e}");
            return EXIT_FAILURE;
        }
        Ok(Ok(c)) => Arc::new(c),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return EXIT_FAILURE;
        }
    };
    eprintln!("rempart events serve: central store {database}, listening on {addr}");
    let served = axum::serve(listener, router(central))
        .with_graceful_shutdown(stop)
        .await;
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: serving on {addr}: {e}");
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pull_query;

    #[test]
    fn the_pull_query_is_checked() {
        assert_eq!(pull_query(None), Ok((0, 2_000)));
        assert_eq!(pull_query(Some("after=7&limit=10")), Ok((7, 10)));
        assert!(pull_query(Some("after=-1")).unwrap_err().contains("after"));
        assert!(
            pull_query(Some("limit=0"))
                .unwrap_err()
                .contains("1 to 2000")
        );
        assert!(
            pull_query(Some("store=s2"))
                .unwrap_err()
                .contains("unknown")
        );
    }
}
