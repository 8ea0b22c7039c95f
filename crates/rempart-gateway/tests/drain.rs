//! Shutdown in order: `/ready` turns 503, the listener closes after the
//! drain delay, in-flight requests get the grace, then the rest are closed.
//! Under tokio's paused time: the delays are virtual.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{client, get, text, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use rempart_gateway::config::GatewayConfig;
use rempart_gateway::server::RunningGateway;

fn config(server: &str, up: std::net::SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server}\n\
         [[services]]\nname = \"up\"\nupstreams = [\"http://{up}\"]\ntimeout = \"1h\"\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    )
}

async fn start(server: &str, up: std::net::SocketAddr) -> RunningGateway {
    let text = config(server, up);
    RunningGateway::start(&GatewayConfig::parse(&text, "t.toml").unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn ready_turns_503_during_the_drain_delay_while_requests_are_still_served() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = start("drain_delay = \"5s\"\nshutdown_grace = \"2s\"", up).await;
    let (addr, admin) = (gw.addr, gw.admin_addr);
    let c = client();
    assert_eq!(get(&c, format!("http://{admin}/ready")).await.status, 200);
    let started = tokio::time::Instant::now();
    let drain = tokio::spawn(gw.drain());
    tokio::task::yield_now().await;

    let ready = get(&c, format!("http://{admin}/ready")).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("shutdown"), "{}", ready.body);
    // Still accepting: a load balancer that has not noticed yet loses nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fresh = client();
    let a = get(&fresh, format!("http://{addr}/x")).await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok"));

    drain.await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "after the drain delay the listener is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_still_open_after_the_grace_is_closed() {
    let arrived = Arc::new(Notify::new());
    let seen = Arc::clone(&arrived);
    // An upstream that never answers.
    let up = upstream(move |_| {
        let seen = Arc::clone(&seen);
        async move {
            seen.notify_one();
            std::future::pending::<()>().await;
            text(200, "never")
        }
    })
    .await;
    // Started with a 60 s grace, reloaded to 2 s: the grace is read at
    // shutdown, so the reload's value counts.
    let file = std::env::temp_dir().join(format!("rempart-drain-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        config("drain_delay = \"0s\"\nshutdown_grace = \"60s\"", up),
    )
    .unwrap();
    let gw = RunningGateway::start_from_file(&file).await.unwrap();
    std::fs::write(
        &file,
        config("drain_delay = \"0s\"\nshutdown_grace = \"2s\"", up),
    )
    .unwrap();
    gw.reload().unwrap();
    let _ = std::fs::remove_file(&file);
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    arrived.notified().await;

    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn(gw.shutdown());
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(600), s.read(&mut buf))
        .await
        .expect("the connection must be closed once the grace has run out");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the client sees the connection end, not an answer: {read:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(60),
        "closed after {took:?}, not after the reloaded 2 s grace"
    );
    shutdown.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn asking_again_cuts_the_drain_delay_short() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = start("drain_delay = \"1h\"\nshutdown_grace = \"1s\"", up).await;
    let addr = gw.addr;
    let (again, asked) = tokio::sync::oneshot::channel::<()>();
    let started = tokio::time::Instant::now();
    let drain = tokio::spawn(gw.drain_unless(async {
        let _ = asked.await;
    }));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(TcpStream::connect(addr).await.is_ok(), "still in the delay");
    again.send(()).unwrap();
    drain.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3600));
    assert!(TcpStream::connect(addr).await.is_err());
}
