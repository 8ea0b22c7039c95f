//! The per-client rate limit on real sockets: local buckets, spoofing, and a
//! limit shared through the real Redis by two gateway instances.

mod support;

use http::Request;
use http_body_util::Full;
use support::{client, gateway, get, send, text, upstream};

fn config(up: std::net::SocketAddr, rate_limit: &str, cache: &str) -> String {
    format!(
        "{rate_limit}\n{cache}\n[[services]]\nname = \"up\"\nupstreams = [ \"http://{up}\" ]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    )
}

fn with_xff(url: String, xff: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(url)
        .header("x-forwarded-for", xff)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn a_client_over_its_burst_gets_429_with_retry_after_and_a_forged_header_changes_nothing() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    // No trusted proxies: the peer (127.0.0.1) is the client, whatever it claims.
    let gw = gateway(&config(up, "[rate_limit]\nrate = 1\nburst = 3", "")).await;
    let c = client();
    for i in 0..3 {
        let a = send(
            &c,
            with_xff(format!("http://{}/", gw.addr), &format!("10.0.0.{i}")),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    let a = send(&c, with_xff(format!("http://{}/", gw.addr), "10.9.9.9")).await;
    assert_eq!(
        a.status, 429,
        "a forged X-Forwarded-For must not buy a new bucket"
    );
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(a.headers["x-ratelimit-limit"], "3");
    assert_eq!(a.headers["x-ratelimit-remaining"], "0");
    assert!(a.headers.contains_key("ratelimit-reset"));
    let metrics = get(&c, format!("http://{}/metrics", gw.admin_addr))
        .await
        .body;
    assert!(
        metrics.contains(r#"rate_limit_rejected_total{limiter="clients"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway(&config(
        up,
        "[rate_limit]\nrate = 1\nburst = 2\ntrusted_proxies = [\"127.0.0.1\"]",
        "",
    ))
    .await;
    let c = client();
    for who in ["203.0.113.1", "203.0.113.2"] {
        for _ in 0..2 {
            assert_eq!(
                send(&c, with_xff(format!("http://{}/", gw.addr), who))
                    .await
                    .status,
                200
            );
        }
        assert_eq!(
            send(&c, with_xff(format!("http://{}/", gw.addr), who))
                .await
                .status,
            429
        );
    }
    gw.shutdown().await;
}

/// A client address no other test run uses, so runs sharing the Redis do not meet.
fn unique_client() -> String {
    let n = std::process::id()
        ^ (std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .subsec_nanos());
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_enforce_one_limit() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let text = config(
        up,
        "[rate_limit]\nrate = 1\nburst = 5\ntrusted_proxies = [\"127.0.0.1\"]",
        "[cache]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"",
    );
    let (a, b) = (gateway(&text).await, gateway(&text).await);
    // The window is 5 s (burst / rate), cut on the Unix epoch: start early in one,
    // so the burst below does not straddle two.
    let into = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .as_millis()
        % 5000;
    if into > 3000 {
        tokio::time::sleep(std::time::Duration::from_millis(5000 - into as u64 + 50)).await;
    }
    let who = unique_client();
    let c = client();
    let mut admitted = 0;
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        if send(&c, with_xff(format!("http://{}/", gw.addr), &who))
            .await
            .status
            == 200
        {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 5,
        "one limit of 5 across both instances, not 5 each"
    );
    assert_eq!(
        get(&c, format!("http://{}/ready", a.admin_addr))
            .await
            .status,
        200
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn without_redis_the_gateway_keeps_serving_and_says_it_is_not_ready() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = gateway(&config(
        up,
        "[rate_limit]\nrate = 1\nburst = 2",
        &format!("[cache]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{dead}\""),
    ))
    .await;
    let c = client();
    // The local fallback still limits: 2 admitted, then 429.
    assert_eq!(get(&c, format!("http://{}/", gw.addr)).await.status, 200);
    assert_eq!(get(&c, format!("http://{}/", gw.addr)).await.status, 200);
    assert_eq!(get(&c, format!("http://{}/", gw.addr)).await.status, 429);
    let ready = get(&c, format!("http://{}/ready", gw.admin_addr)).await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("unreachable"), "{}", ready.body);
    gw.shutdown().await;
}
