//! Admission: what happens to a request before any service is involved.
//!
//! In order: the request id (kept or made), who the client is
//! ([`crate::headers::ClientAddr`]), the per-client rate limit (429), the
//! path normalised ([`crate::path`]; 400 if it cannot be), the route (404),
//! then, once a service is chosen, the request's deadline and its body read
//! whole within `max_body_bytes` (413) and that deadline (408).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use rempart::deadline::Deadline;

use super::fallback::json_error;
use super::{Body, Gateway, Service, bound_writes};
use crate::client_conn::ClientConn;
use crate::headers;

impl Gateway {
    pub(super) async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn: Option<&ClientConn>,
    ) -> Result<Response<Body>, Infallible> {
        let s = &*self.shared;
        let state = s.current.load_full();
        let started = s.clock.now();
        let (mut parts, body) = req.into_parts();
        let request_id = headers::request_id(&mut parts.headers);
        let client = headers::ClientAddr::of(peer, &parts.headers, &state.trusted);
        let write_timeout = state.config.server.write_timeout;
        let refuse = |mut resp: Response<Body>| {
            resp.headers_mut()
                .insert(headers::REQUEST_ID, request_id.clone());
            bound_writes(conn, &resp, write_timeout);
            Ok(resp)
        };

        // Per-client rate limit, before anything else costs us work.
        if let Some(limiter) = &state.limiter
            && let Some(rl) = &state.config.rate_limit
            && let Err(refused) = limiter.check(client.rate_key(rl.ipv6_prefix)).await
        {
            tracing::debug!(client = %client.client, "rate limited");
            return refuse(
                refused
                    .to_response::<String>()
                    .map(|text| Either::Left(Full::new(Bytes::from(text)))),
            );
        }

        // Routed and forwarded as normalised, so `..` cannot leave a route.
        if let Err(e) = crate::path::normalise_uri(&mut parts.uri) {
            return refuse(json_error(
                StatusCode::BAD_REQUEST,
                "bad_path",
                &e.to_string(),
            ));
        }
        // A client's jobs, answered to their owner only.
        if let Some(id) = Self::is_job_poll(&state, &parts.method, parts.uri.path()) {
            // Boxed, like `forward`: the handler's future stays small.
            return refuse(
                Box::pin(self.poll_job(&state, id, &parts.headers, client.client)).await,
            );
        }
        let Some(route) = state.router.route(parts.uri.path()).cloned() else {
            return refuse(json_error(
                StatusCode::NOT_FOUND,
                "no_route",
                &format!("no route for {}", parts.uri.path()),
            ));
        };
        let service = &state.services[route.service];
        // Boxed: the request path's state is a few KiB, and hyper moves the
        // handler's future into place; moving a pointer is cheaper than
        // moving the state, one allocation included.
        let mut resp = Box::pin(self.forward(&state, service, &route, parts, body, client)).await;
        resp.headers_mut().insert(headers::REQUEST_ID, request_id);
        bound_writes(conn, &resp, write_timeout);
        let elapsed = s.clock.now().saturating_duration_since(started);
        service.latency.record(elapsed);
        state.route_metrics[route.id].observe(resp.status().as_u16(), elapsed);
        Ok(resp)
    }
}

/// The total time a request to `service` may take, from now: the service's
/// `timeout`, or less if the client says it will wait less
/// (`x-request-timeout-ms`, `grpc-timeout`); never more.
pub(super) fn budget(service: &Service, headers: &http::HeaderMap) -> Duration {
    match Deadline::from_headers(headers) {
        Some(theirs) => theirs.remaining().min(service.config.timeout),
        None => service.config.timeout,
    }
}

/// The request body, read whole within `limit` bytes and by `deadline`, so
/// that an attempt can be replayed on retry; a declared length over the
/// limit is refused unread. `Err` is the answer to send instead.
pub(super) async fn read_body(
    body: Incoming,
    headers: &http::HeaderMap,
    limit: u64,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Response<Body>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    // Most requests (GET, HEAD) have no body: skip the collection machinery.
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    let read = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect();
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive within the service's timeout",
        )),
        Ok(Err(_)) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
        )),
    }
}

fn too_large(limit: u64) -> Response<Body> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than the gateway's limit of {limit} bytes"),
    )
}
