//! The axum router serves `/health` and `/ready` (cargo feature `axum`).
#![cfg(feature = "axum")]

use http_body_util::BodyExt;
use rempart::health::HealthRegistry;
use tower::ServiceExt;

async fn get(router: axum::Router, path: &str) -> (u16, serde_json::Value) {
    let req = http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn health_is_200_and_ready_follows_the_checks() {
    let health = HealthRegistry::new().check("redis", || async { Err("refused".to_owned()) });
    let router = rempart::health::axum::router(health.clone());
    let (code, body) = get(router.clone(), "/health").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, body) = get(router, "/ready").await;
    assert_eq!(code, 503);
    assert_eq!(body["failed"]["redis"], "refused");

    let ok = rempart::health::axum::router(HealthRegistry::new());
    assert_eq!(get(ok, "/ready").await.0, 200);
}
