//! Health: concurrency, per-check timeout, JSON shape, 200/503, shutdown flag.

use std::time::Duration;

use rempart::clock::{Instant, ManualClock};
use rempart::health::HealthRegistry;
use tokio::time::sleep;

// 2026-11-23T04:00:00.250Z
fn wall() -> ManualClock {
    let c = ManualClock::new();
    c.set(Instant::from_nanos(1_795_406_400_250_000_000));
    c
}

#[tokio::test(start_paused = true)]
async fn checks_run_concurrently() {
    let health = HealthRegistry::new()
        .check("redis", || async {
            sleep(Duration::from_millis(1500)).await;
            Ok(())
        })
        .check("minio", || async {
            sleep(Duration::from_millis(1500)).await;
            Ok(())
        });
    let start = tokio::time::Instant::now();
    let report = health.readiness().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(1500),
        "two 1.5 s checks must overlap"
    );
    assert!(report.is_ready());
    assert_eq!(report.dependencies["redis"].latency_ms, 1500.0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_check_fails_at_its_timeout() {
    let health = HealthRegistry::new()
        .check("rabbitmq", || async {
            sleep(Duration::from_secs(10)).await;
            Ok(())
        })
        .check_with_timeout("redis", Duration::from_millis(100), || async {
            sleep(Duration::from_millis(150)).await;
            Ok(())
        });
    let start = tokio::time::Instant::now();
    let report = health.readiness().await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(report.failed["rabbitmq"], "timed out after 2s");
    assert_eq!(report.failed["redis"], "timed out after 100ms");
    assert_eq!(report.status_code(), 503);
}

#[tokio::test]
async fn ready_body_and_status() {
    let health = HealthRegistry::new()
        .wall_clock(wall())
        .check("redis", || async { Ok(()) });
    let resp = health.readiness().await.into_response();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(resp.body()).unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["timestamp"], "2026-11-23T04:00:00.250Z");
    assert_eq!(body["dependencies"]["redis"]["ok"], true);
    assert!(body["dependencies"]["redis"]["latency_ms"].is_number());
    assert_eq!(body["failed"], serde_json::json!({}));
}

#[tokio::test]
async fn not_ready_body_names_each_failure() {
    let health = HealthRegistry::new()
        .wall_clock(wall())
        .check("redis", || async { Ok(()) })
        .check("minio", || async { Err("connection refused".to_owned()) });
    let resp = health.readiness().await.into_response();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = serde_json::from_str(resp.body()).unwrap();
    assert_eq!(body["status"], "not ready");
    assert_eq!(
        body["failed"],
        serde_json::json!({"minio": "connection refused"})
    );
    assert_eq!(body["dependencies"]["minio"]["error"], "connection refused");
    assert_eq!(body["dependencies"]["redis"]["ok"], true);
}

#[tokio::test]
async fn liveness_is_always_ok_and_readiness_flips_during_shutdown() {
    let health = HealthRegistry::new()
        .wall_clock(wall())
        .check("db", || async { Err("down".to_owned()) });
    let live = health.liveness().into_response();
    assert_eq!(live.status(), 200);
    assert_eq!(
        live.body(),
        r#"{"status":"ok","timestamp":"2026-11-23T04:00:00.250Z"}"#
    );

    let ok = HealthRegistry::new();
    assert!(ok.readiness().await.is_ready());
    ok.set_accepting(false);
    let report = ok.readiness().await;
    assert_eq!(report.status_code(), 503);
    assert_eq!(report.failed["shutdown"], "shutting down");
}

#[tokio::test]
async fn readiness_follows_a_shutdown_trigger_while_liveness_stays_ok() {
    let shutdown = rempart::shutdown::Shutdown::new();
    let health = HealthRegistry::new()
        .wall_clock(wall())
        .check("db", || async { Ok(()) })
        .follow_shutdown(&shutdown);
    assert_eq!(health.readiness().await.status_code(), 200);
    shutdown.trigger();
    let report = health.readiness().await;
    assert_eq!(report.status_code(), 503);
    assert_eq!(report.failed["shutdown"], "shutting down");
    assert!(
        report.dependencies["db"].ok,
        "the dependency itself is fine"
    );
    assert_eq!(health.liveness().into_response().status(), 200);
}

#[tokio::test]
async fn the_tower_service_routes_health_and_ready() {
    use rempart::health::HealthService;
    use tower::ServiceExt;

    let health = HealthRegistry::new()
        .wall_clock(wall())
        .check("minio", || async { Err("connection refused".to_owned()) });
    let svc = HealthService::new(health);
    let send = |method: http::Method, path: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        svc.clone().oneshot(req)
    };

    let live = send(http::Method::GET, "/health").await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "application/json");
    let ready = send(http::Method::GET, "/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = serde_json::from_str(ready.body()).unwrap();
    assert_eq!(body["failed"]["minio"], "connection refused");

    assert_eq!(
        send(http::Method::HEAD, "/ready").await.unwrap().status(),
        503
    );
    let post = send(http::Method::POST, "/health").await.unwrap();
    assert_eq!(
        (post.status().as_u16(), &post.headers()["allow"]),
        (405, &"GET, HEAD".parse::<http::HeaderValue>().unwrap())
    );
    assert_eq!(
        send(http::Method::GET, "/other").await.unwrap().status(),
        404
    );
    assert!(HealthService::handles("/ready") && !HealthService::handles("/readyz"));
}
