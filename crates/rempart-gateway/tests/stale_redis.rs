//! With `cache.backend = "redis"`, one instance's good answer is another's fallback.

mod support;

use support::{Answer, client, gateway, get, send, text, upstream};

/// A gateway on Redis whose one service is on `up`.
fn cfg(up: std::net::SocketAddr) -> String {
    format!(
        "[cache]\nbackend = \"redis\"\nttl = \"1m\"\n\
         [[services]]\nname = \"catalogue\"\nupstreams = [ \"http://{up}\" ]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"catalogue\"\n"
    )
}

/// The first 200 `ask` gets within a second: the Redis write leaves the
/// request path, so it may land a moment after the answer went out.
async fn once_kept(mut ask: impl AsyncFnMut() -> Answer) -> Answer {
    let mut answer = ask().await;
    for _ in 0..50 {
        if answer.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        answer = ask().await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_seen_by_one_instance_is_served_stale_by_another() {
    let healthy = upstream(|r| async move { text(200, format!("catalogue {}", r.uri())) }).await;
    let broken = upstream(|_| async { text(503, "down") }).await;
    let (a, b) = (gateway(&cfg(healthy)).await, gateway(&cfg(broken)).await);
    let c = client();
    // A path no other run uses, so runs sharing the Redis do not meet.
    let path = format!("/items?run={}", std::process::id());
    let fresh = get(&c, format!("http://{}{path}", a.addr)).await;
    assert_eq!(fresh.status, 200);
    let stale = once_kept(async || get(&c, format!("http://{}{path}", b.addr)).await).await;
    assert_eq!(
        (stale.status, stale.body.as_str()),
        (200, fresh.body.as_str())
    );
    assert_eq!(stale.headers["x-degraded-mode"], "true");
    a.shutdown().await;
    b.shutdown().await;
}

/// What one instance keeps in Redis, another serves under the same rules:
/// per `Vary` value, with the headers needed to read it, and never an answer
/// given to a request with credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_serves_from_redis_only_what_the_same_client_may_see() {
    let healthy = upstream(|r| async move {
        let lang = r
            .headers()
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let mut resp = text(200, format!("{} in {lang}", r.uri()));
        let h = resp.headers_mut();
        h.insert("vary", "Accept-Language".parse().unwrap());
        h.insert("content-language", lang.parse().unwrap());
        h.insert("etag", "\"v1\"".parse().unwrap());
        resp
    })
    .await;
    let broken = upstream(|_| async { text(503, "down") }).await;
    let (a, b) = (gateway(&cfg(healthy)).await, gateway(&cfg(broken)).await);
    let c = client();
    let path = format!("/vary?run={}", std::process::id());
    let ask = |addr: std::net::SocketAddr, headers: &[(&str, &str)]| {
        let mut req = http::Request::get(format!("http://{addr}{path}"));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap()
    };
    let fresh = send(&c, ask(a.addr, &[("accept-language", "fr")])).await;
    assert_eq!(fresh.status, 200);
    let alice = send(
        &c,
        ask(
            a.addr,
            &[("accept-language", "de"), ("authorization", "Bearer alice")],
        ),
    )
    .await;
    assert_eq!(alice.status, 200);
    let stale = once_kept(async || send(&c, ask(b.addr, &[("accept-language", "fr")])).await).await;
    assert_eq!(
        (stale.status, stale.body.as_str()),
        (200, fresh.body.as_str())
    );
    assert_eq!(stale.headers["x-degraded-mode"], "true");
    assert_eq!(stale.headers["content-language"], "fr");
    assert_eq!(stale.headers["etag"], "\"v1\"");
    let german = send(&c, ask(b.addr, &[("accept-language", "de")])).await;
    assert_eq!(german.status, 503, "{}", german.body);
    a.shutdown().await;
    b.shutdown().await;
}
