//! With `cache.backend = "redis"`, one instance's good answer is another's fallback.

mod support;

use support::{client, gateway, get, text, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_seen_by_one_instance_is_served_stale_by_another() {
    let healthy = upstream(|r| async move { text(200, format!("catalogue {}", r.uri())) }).await;
    let broken = upstream(|_| async { text(503, "down") }).await;
    let cfg = |up: std::net::SocketAddr| {
        format!(
            "[cache]\nbackend = \"redis\"\nttl = \"1m\"\n\
             [[services]]\nname = \"catalogue\"\nupstreams = [ \"http://{up}\" ]\n\
             [[routes]]\npath_prefix = \"/\"\nservice = \"catalogue\"\n"
        )
    };
    let (a, b) = (gateway(&cfg(healthy)).await, gateway(&cfg(broken)).await);
    let c = client();
    // A path no other run uses, so runs sharing the Redis do not meet.
    let path = format!("/items?run={}", std::process::id());
    let fresh = get(&c, format!("http://{}{path}", a.addr)).await;
    assert_eq!(fresh.status, 200);
    let stale = get(&c, format!("http://{}{path}", b.addr)).await;
    assert_eq!(
        (stale.status, stale.body.as_str()),
        (200, fresh.body.as_str())
    );
    assert_eq!(stale.headers["x-degraded-mode"], "true");
    a.shutdown().await;
    b.shutdown().await;
}
