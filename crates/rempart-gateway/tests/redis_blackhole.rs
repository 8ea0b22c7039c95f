//! Losing Redis costs requests nothing (issue 10, item 7): a Redis that
//! silently drops packets, with its connections left open (no RST, no
//! refusal), is the worst case, since every command waits out its deadline.
//! A TCP proxy in front of the real Redis at 127.0.0.1:6379 plays it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rempart_gateway::redis_backend::COMMAND_DEADLINE;
use support::{client, gateway, get, text, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards to the real Redis while `forwarding` is set; otherwise reads and
/// drops every byte, both ways, keeping every connection open.
async fn black_hole_proxy(forwarding: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect("127.0.0.1:6379").await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, Arc::clone(&forwarding)));
            tokio::spawn(pump(sr, cw, Arc::clone(&forwarding)));
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if forwarding.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_redis_does_not_slow_requests_and_is_used_again_once_back() {
    let forwarding = Arc::new(AtomicBool::new(true));
    let proxy = black_hole_proxy(Arc::clone(&forwarding)).await;
    let up = upstream(|r| async move { text(200, format!("catalogue {}", r.uri())) }).await;
    // Every request asks Redis for its rate limit, and keeps its answer there.
    let gw = gateway(&format!(
        "[cache]\nbackend = \"redis\"\nredis_url = \"redis://{proxy}\"\n\
         [rate_limit]\nrate = 100000\nburst = 100000\n\
         [[services]]\nname = \"catalogue\"\nupstreams = [ \"http://{up}\" ]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"catalogue\"\n"
    ))
    .await;
    let redis = gw.gateway().redis().expect("a redis backend").clone();
    eventually("the gateway to reach redis", async || redis.is_healthy()).await;

    let c = client();
    let run = format!("/bh-{}", std::process::id());
    let mut n = 0;
    let mut next_url = || {
        n += 1;
        format!("http://{}{run}/{n}", gw.addr)
    };

    forwarding.store(false, Ordering::SeqCst);
    // The first few requests pay the command deadline until the breaker opens.
    for _ in 0..4 {
        assert_eq!(get(&c, next_url()).await.status, 200);
    }
    // From then on no request waits on Redis, half-open periods included
    // (only the background probe tests Redis then).
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = tokio::time::Instant::now();
        let a = get(&c, next_url()).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        slowest < COMMAND_DEADLINE / 2,
        "a request waited {slowest:?} on a black-holed redis"
    );

    // Redis is back: the probe closes the breaker, and answers reach Redis again.
    forwarding.store(true, Ordering::SeqCst);
    let mut direct = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    eventually("answers to be kept in redis again", async || {
        let path = next_url();
        assert_eq!(get(&c, path.clone()).await.status, 200);
        let key = format!(
            "rempart:stale:catalogue:GET:{}",
            path.split_once(&gw.addr.to_string()).unwrap().1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut direct)
            .await
            .unwrap();
        exists
    })
    .await;
    gw.shutdown().await;
}
