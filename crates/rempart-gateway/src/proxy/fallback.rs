//! Fallback: what the client gets when the service cannot answer, and the
//! gateway's own JSON answers.
//!
//! The last good answer to the same request (kept by [`crate::stale`], only
//! when [`crate::cacheable`] says it may be shared with this client), marked
//! `X-Degraded-Mode: true` with its `Age`; without one, a JSON body naming
//! the service with `Retry-After`: 503 for a refusal or an unreachable
//! upstream, 504 for a timeout.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use super::{Body, Gateway, Service};
use crate::metrics::Outcome;

/// Marks an answer the gateway made up for a failing service.
pub(super) const X_DEGRADED_MODE: http::HeaderName =
    http::HeaderName::from_static("x-degraded-mode");

/// Why the gateway answered for the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Open,
    BulkheadFull,
    Timeout,
    Unreachable,
}

impl Gateway {
    /// The answer kept under `key` for a request with `request` headers,
    /// marked degraded, with its `Age`.
    pub(super) async fn stale_answer(
        &self,
        key: &str,
        request: &http::HeaderMap,
    ) -> Option<Response<Body>> {
        let (answer, age) = self.shared.stale.get(key, request).await?;
        let mut resp = Response::new(Either::Left(Full::new(answer.body)));
        *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        let h = resp.headers_mut();
        for (name, value) in answer.headers {
            h.append(name, value);
        }
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
        h.insert(X_DEGRADED_MODE, HeaderValue::from_static("true"));
        Some(resp)
    }

    /// What the client gets when the service cannot answer: the last good
    /// answer to the same request if one is kept, else the degraded JSON.
    pub(super) async fn fallback(
        &self,
        service: &Service,
        why: Refusal,
        stale_key: Option<&str>,
        request: &http::HeaderMap,
    ) -> Response<Body> {
        service.counters.count(Outcome::Fallback);
        if let Some(key) = stale_key
            && let Some(resp) = self.stale_answer(key, request).await
        {
            return resp;
        }
        let (status, code) = match why {
            Refusal::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Refusal::Open => (StatusCode::SERVICE_UNAVAILABLE, "circuit_open"),
            Refusal::BulkheadFull => (StatusCode::SERVICE_UNAVAILABLE, "service_busy"),
            Refusal::Unreachable => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
        };
        let mut resp = json_response(
            status,
            &ErrorBody {
                error: code,
                service: Some(&service.config.name),
                message: &service.config.fallback.message,
            },
        );
        let secs = service.config.fallback.retry_after.as_secs().max(1);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp.headers_mut()
            .insert(X_DEGRADED_MODE, HeaderValue::from_static("true"));
        resp
    }
}

/// A JSON error body `{"error": code, "message": message}`.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &ErrorBody {
            error: code,
            service: None,
            message,
        },
    )
}

/// The gateway's JSON error body, fields in this order.
#[derive(serde::Serialize)]
pub(super) struct ErrorBody<'a> {
    pub(super) error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) service: Option<&'a str>,
    pub(super) message: &'a str,
}

pub(super) fn json_response(status: StatusCode, body: &ErrorBody<'_>) -> Response<Body> {
    // Serializing three strings cannot fail; an empty object would be a bug, not a panic.
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn json_error_bodies_keep_their_fields_in_order_and_escape_text() {
        let resp = json_error(StatusCode::BAD_REQUEST, "bad", "say \"hi\"\n");
        let Either::Left(full) = resp.into_body() else {
            panic!("a made-up body")
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(full.collect()).unwrap().to_bytes();
        assert_eq!(
            String::from_utf8(bytes.to_vec()).unwrap(),
            r#"{"error":"bad","message":"say \"hi\"\n"}"#
        );
    }
}
