//! The gateway end to end: real sockets, real upstream servers, a real client.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{client, gateway, gateway_with_server, get, send, text, upstream};
use tokio::sync::Notify;

fn service(name: &str, addr: std::net::SocketAddr, extra: &str) -> String {
    format!("[[services]]\nname = \"{name}\"\nupstreams = [ \"http://{addr}\" ]\n{extra}\n")
}

fn route(prefix: &str, service: &str) -> String {
    format!("[[routes]]\npath_prefix = \"{prefix}\"\nservice = \"{service}\"\n")
}

#[tokio::test]
async fn requests_go_to_the_longest_matching_prefix_with_forwarding_headers() {
    let api = upstream(|r| async move {
        let xff = r
            .headers()
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_owned());
        let secret = r.headers().contains_key("x-secret");
        text(200, format!("api {} xff={xff:?} secret={secret}", r.uri()))
    })
    .await;
    let reports = upstream(|r| async move { text(200, format!("reports {}", r.uri())) }).await;
    let gw = gateway(&format!(
        "{}{}{}{}",
        service("api", api, ""),
        service("reporting", reports, ""),
        route("/api", "api"),
        route("/api/reports", "reporting"),
    ))
    .await;
    let c = client();

    let a = get(&c, format!("http://{}/api/reports/7?year=2026", gw.addr)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "reports /api/reports/7?year=2026");

    let req = Request::get(format!("http://{}/api/users", gw.addr))
        .header("connection", "x-secret")
        .header("x-secret", "hop-by-hop")
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::default())
        .unwrap();
    let a = send(&c, req).await;
    // The forged X-Forwarded-For from an untrusted peer is replaced, and the
    // header named by Connection does not travel upstream.
    assert_eq!(
        a.body,
        "api /api/users xff=Some(\"127.0.0.1\") secret=false"
    );
    assert_eq!(a.headers["x-request-id"].len(), 32);

    let a = get(&c, format!("http://{}/nowhere", gw.addr)).await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("\"error\":\"no_route\""), "{}", a.body);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server(
        "max_body_bytes = 1024",
        &format!("{}{}", service("up", up, ""), route("/", "up")),
    )
    .await;
    let c = client();
    let big = Request::post(format!("http://{}/upload", gw.addr))
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    let a = send(&c, big).await;
    assert_eq!(a.status, 413);
    assert!(a.body.contains("1024 bytes"), "{}", a.body);
    let small = Request::post(format!("http://{}/upload", gw.addr))
        .body(Full::new(Bytes::from_static(b"fine")))
        .unwrap();
    assert_eq!(send(&c, small).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failing_service_opens_its_circuit_and_clients_get_the_degraded_answer() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let up = upstream(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { text(500, "boom") }
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        service(
            "reporting",
            up,
            "circuit_breaker = { error_threshold_percentage = 50, volume_threshold = 4, reset_timeout = \"60s\" }\n\
             fallback = { message = \"Rapports indisponibles.\", retry_after = \"30s\" }",
        ),
        route("/reports", "reporting"),
    ))
    .await;
    let c = client();
    for _ in 0..4 {
        // The upstream's own 500 goes through while the circuit is closed.
        assert_eq!(
            get(&c, format!("http://{}/reports", gw.addr)).await.status,
            500
        );
    }
    let a = get(&c, format!("http://{}/reports", gw.addr)).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.headers["x-degraded-mode"], "true");
    assert_eq!(a.headers["retry-after"], "30");
    assert!(a.body.contains("\"error\":\"circuit_open\""), "{}", a.body);
    assert!(a.body.contains("Rapports indisponibles."), "{}", a.body);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "an open circuit does not call the upstream"
    );

    let metrics = get(&c, format!("http://{}/metrics", gw.admin_addr))
        .await
        .body;
    for line in [
        r#"circuit_breaker_state{service="reporting"} 1"#,
        r#"circuit_breaker_calls_total{service="reporting",outcome="failure"} 4"#,
        r#"circuit_breaker_calls_total{service="reporting",outcome="rejected"} 1"#,
        r#"gateway_requests_total{route="/reports",code="503"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_hung_service_fills_only_its_own_bulkhead() {
    let release = Arc::new(Notify::new());
    let hold = Arc::clone(&release);
    let reporting = upstream(move |_| {
        let hold = Arc::clone(&hold);
        async move {
            hold.notified().await;
            text(200, "late report")
        }
    })
    .await;
    let users = upstream(|_| async { text(200, "users ok") }).await;
    let gw = gateway(&format!(
        "{}{}{}{}",
        service(
            "reporting",
            reporting,
            "timeout = \"60s\"\nbulkhead = { max_concurrent = 3 }"
        ),
        service("users", users, ""),
        route("/reports", "reporting"),
        route("/users", "users"),
    ))
    .await;
    let c = client();

    // Three reports hang upstream and hold every reporting slot.
    let mut hung = Vec::new();
    for _ in 0..3 {
        let (c, url) = (c.clone(), format!("http://{}/reports", gw.addr));
        hung.push(tokio::spawn(async move { get(&c, url).await }));
    }
    while gw.gateway().services()[0].in_flight() < 3 {
        tokio::task::yield_now().await;
    }
    // A fourth is refused at once instead of queueing behind them.
    let a = get(&c, format!("http://{}/reports", gw.addr)).await;
    assert_eq!(a.status, 503);
    assert!(a.body.contains("service_busy"), "{}", a.body);
    // Users answer normally while reporting is stuck.
    for _ in 0..20 {
        let a = get(&c, format!("http://{}/users", gw.addr)).await;
        assert_eq!((a.status, a.body.as_str()), (200, "users ok"));
    }
    assert!(
        hung.iter().all(|h| !h.is_finished()),
        "the hung reports are still waiting"
    );
    release.notify_waiters();
    for h in hung {
        assert_eq!(h.await.unwrap().body, "late report");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_and_posts_are_not() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    // Every odd call fails with 503, every even one succeeds.
    let up = upstream(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n.is_multiple_of(2) {
                text(503, "busy")
            } else {
                text(200, "done")
            }
        }
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        service(
            "orders",
            up,
            "retry = { attempts = 2, initial = \"1ms\", max = \"5ms\" }"
        ),
        route("/orders", "orders"),
    ))
    .await;
    let c = client();
    let a = get(&c, format!("http://{}/orders/1", gw.addr)).await;
    assert_eq!((a.status, a.body.as_str()), (200, "done"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let post = Request::post(format!("http://{}/orders", gw.addr))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(send(&c, post).await.status, 503, "a POST is not replayed");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_upstream_is_cut_off_at_the_service_timeout_with_504() {
    let up = upstream(|_| async {
        std::future::pending::<()>().await;
        text(200, "never")
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        service("slow", up, "timeout = \"200ms\""),
        route("/", "slow"),
    ))
    .await;
    let a = get(&client(), format!("http://{}/x", gw.addr)).await;
    assert_eq!(a.status, 504);
    assert!(a.body.contains("upstream_timeout"), "{}", a.body);
    assert_eq!(
        gw.gateway()
            .metrics()
            .calls("slow", rempart_gateway::metrics::Outcome::Timeout),
        1
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_report_and_control_the_breakers() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway(&format!(
        "{}{}",
        service("users", up, ""),
        route("/users", "users")
    ))
    .await;
    let c = client();
    let admin = |p: &str| format!("http://{}{p}", gw.admin_addr);
    assert_eq!(get(&c, admin("/health")).await.status, 200);
    assert_eq!(get(&c, admin("/ready")).await.status, 200);

    let trip = Request::post(admin("/breakers/users/trip"))
        .header("x-rempart-admin", "1")
        .body(Full::default())
        .unwrap();
    let a = send(&c, trip).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("\"circuit\":\"Open\""), "{}", a.body);
    assert_eq!(
        get(&c, format!("http://{}/users", gw.addr)).await.status,
        503
    );
    let status = get(&c, admin("/status")).await.body;
    assert!(status.contains("\"circuit\":\"Open\""), "{status}");

    let reset = Request::post(admin("/breakers/users/reset"))
        .header("x-rempart-admin", "1")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, reset).await.status, 200);
    assert_eq!(
        get(&c, format!("http://{}/users", gw.addr)).await.status,
        200
    );

    let nobody = Request::post(admin("/breakers/nobody/trip"))
        .header("x-rempart-admin", "1")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, nobody).await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_demands_its_bearer_token_when_one_is_set() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server(
        "admin_token = \"s3cret\"",
        &format!("{}{}", service("users", up, ""), route("/users", "users")),
    )
    .await;
    let c = client();
    let url = format!("http://{}/status", gw.admin_addr);
    assert_eq!(get(&c, url.clone()).await.status, 401);
    let wrong = Request::get(&url)
        .header("authorization", "Bearer nope")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, wrong).await.status, 401);
    let right = Request::get(&url)
        .header("authorization", "Bearer s3cret")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, right).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let (hold, seen) = (Arc::clone(&release), Arc::clone(&arrived));
    let up = upstream(move |_| {
        let (hold, seen) = (Arc::clone(&hold), Arc::clone(&seen));
        async move {
            seen.notify_one();
            hold.notified().await;
            text(200, "finished")
        }
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        service("up", up, "timeout = \"30s\""),
        route("/", "up")
    ))
    .await;
    let addr = gw.addr;
    let c = client();
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { get(&c, format!("http://{addr}/slow")).await }
    });
    arrived.notified().await;
    let stopping = tokio::spawn(gw.shutdown());
    // The listener closes: a new connection is refused...
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the listener should stop accepting");
    // ...while the request already inside completes.
    release.notify_one();
    let a = in_flight.await.unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, "finished"));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn when_the_service_fails_clients_get_its_last_good_answer_marked_degraded() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down = Arc::clone(&failing);
    let up = upstream(move |r| {
        let down = down.load(Ordering::SeqCst);
        async move {
            if down {
                text(500, "boom")
            } else {
                let mut resp = text(200, format!("report for {}", r.uri()));
                resp.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/plain"));
                resp
            }
        }
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        service(
            "reporting",
            up,
            "circuit_breaker = { volume_threshold = 3, reset_timeout = \"60s\" }"
        ),
        route("/reports", "reporting"),
    ))
    .await;
    let c = client();
    let url = |q: &str| format!("http://{}/reports/monthly{q}", gw.addr);
    let fresh = get(&c, url("?m=11")).await;
    assert_eq!(
        (fresh.status, fresh.body.as_str()),
        (200, "report for /reports/monthly?m=11")
    );
    assert!(!fresh.headers.contains_key("x-degraded-mode"));

    failing.store(true, Ordering::SeqCst);
    // The upstream's 500 is replaced by the kept answer...
    let stale = get(&c, url("?m=11")).await;
    assert_eq!(
        (stale.status, stale.body.as_str()),
        (200, "report for /reports/monthly?m=11")
    );
    assert_eq!(stale.headers["x-degraded-mode"], "true");
    assert_eq!(stale.headers["content-type"], "text/plain");
    assert!(stale.headers.contains_key("age"));
    // ...a request never answered before gets the upstream's own 500...
    assert_eq!(get(&c, url("?m=10")).await.status, 500);
    // ...and once the circuit is open the kept answer is served without calling upstream.
    let open = get(&c, url("?m=11")).await;
    assert_eq!(open.status, 200);
    assert_eq!(open.headers["x-degraded-mode"], "true");
    assert_eq!(
        gw.gateway().services()[0].breaker.state(),
        rempart::CircuitState::Open
    );
    let never = get(&c, url("?m=9")).await;
    assert_eq!(never.status, 503);
    assert!(never.body.contains("circuit_open"), "{}", never.body);
    gw.shutdown().await;
}
