//! Every phase of a request under its deadline: slow clients and stalling
//! upstreams hold no bulkhead slot past the service's `timeout`, a body cut
//! off mid-way is a breaker failure, the deadline travels upstream, and the
//! gateway's connections are capped. Real sockets on loopback, tokio's paused
//! time: a deadline passes when every task waits, not seconds later.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rempart_gateway::server::RunningGateway;
use support::{client, gateway, gateway_with_server, get, send, text, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Large enough to fill both sockets' buffers on loopback.
const BIG: usize = 32 * 1024 * 1024;

fn service(up: SocketAddr, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"up\"\nupstreams = [ \"http://{up}\" ]\n{extra}\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    )
}

/// Waits (up to 20 s) until the service holds no bulkhead slot.
async fn slots_freed(gw: &RunningGateway) -> bool {
    for _ in 0..200 {
        if gw.gateway().services()[0].in_flight() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn in_flight_reaches(gw: &RunningGateway, n: usize) {
    for _ in 0..200 {
        if gw.gateway().services()[0].in_flight() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service never had {n} requests in flight");
}

/// Sends `head` on a fresh connection and returns it, unread.
async fn open(gw: &RunningGateway, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

async fn read_for(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An upstream that sends a head promising 1,000 bytes, 10 of them, and then
/// nothing more, holding the connection; `close` ends it there instead.
async fn stalling_upstream(close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                // Closing: only once the head has surely been read.
                let hold = if close { 200 } else { 3_600_000 };
                tokio::time::sleep(Duration::from_millis(hold)).await;
            });
        }
    });
    addr
}

#[tokio::test(start_paused = true)]
async fn clients_that_stop_reading_hold_no_slot_past_the_deadline() {
    let big = Bytes::from(vec![b'x'; BIG]);
    let up = upstream(move |r| {
        let big = big.clone();
        async move {
            if r.uri().path() == "/big" {
                text(200, big)
            } else {
                text(200, "small")
            }
        }
    })
    .await;
    let gw = gateway(&service(
        up,
        "timeout = \"1s\"\nbulkhead = { max_concurrent = 2 }",
    ))
    .await;
    // Two clients ask for a large body and never read it.
    let stuck: Vec<TcpStream> = vec![
        open(&gw, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await,
        open(&gw, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await,
    ];
    in_flight_reaches(&gw, 2).await;
    let c = client();
    let busy = get(&c, format!("http://{}/small", gw.addr)).await;
    assert_eq!(busy.status, 503, "the two readers hold both slots for now");

    // Past the deadline their connections are ended and the slots freed,
    // though they are still connected and still not reading.
    assert!(
        slots_freed(&gw).await,
        "the stalled readers kept their slots"
    );
    let a = get(&c, format!("http://{}/small", gw.addr)).await;
    assert_eq!((a.status, a.body.as_str()), (200, "small"));
    drop(stuck);
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_upstream_stalling_mid_body_frees_its_slot_and_counts_as_a_failure() {
    let up = stalling_upstream(false).await;
    // No stale cache: the answer streams through rather than being kept.
    let gw = gateway(&service(
        up,
        "timeout = \"1s\"\nbulkhead = { max_concurrent = 2 }\nfallback = { stale_cache = false }",
    ))
    .await;
    let mut a = open(&gw, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut b = open(&gw, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Each client gets the head and the 10 bytes, then the connection ends.
    let (ra, rb) = tokio::join!(
        read_for(&mut a, Duration::from_secs(20)),
        read_for(&mut b, Duration::from_secs(20))
    );
    for r in [ra, rb] {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("0123456789"), "cut after what came: {r}");
    }
    assert!(slots_freed(&gw).await);
    let m = gw.gateway().services()[0].breaker.metrics();
    assert_eq!(
        (m.successful_calls, m.failed_calls),
        (0, 2),
        "a body cut at the deadline is a failure, not a success"
    );
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_off_by_the_upstream_is_a_breaker_failure() {
    let up = stalling_upstream(true).await;
    let gw = gateway(&service(
        up,
        "timeout = \"5s\"\nfallback = { stale_cache = false }",
    ))
    .await;
    let mut s = open(&gw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // The connection ends early (hyper may not even have flushed the head).
    let _ = read_for(&mut s, Duration::from_secs(20)).await;
    let m = gw.gateway().services()[0].breaker.metrics();
    assert_eq!(
        (m.successful_calls, m.failed_calls),
        (0, 1),
        "the head came, the body did not: a failure"
    );
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_sending_its_body_slowly_gets_408_at_the_deadline() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway(&service(up, "timeout = \"1s\"")).await;
    // Ten bytes of a promised hundred, then silence.
    let mut s = open(
        &gw,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    let r = read_for(&mut s, Duration::from_secs(20)).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r:.200}");
    assert!(r.contains("body_timeout"), "{r}");
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn connections_past_max_connections_are_refused_with_503() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server("max_connections = 2", &service(up, "")).await;
    let first = TcpStream::connect(gw.addr).await.unwrap();
    let _second = TcpStream::connect(gw.addr).await.unwrap();
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let r = read_for(&mut third, Duration::from_secs(20)).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("too_many_connections"), "{r}");
    // One closes; its place is free again.
    drop(first);
    let mut served = String::new();
    for _ in 0..100 {
        let mut s = open(
            &gw,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        served = read_for(&mut s, Duration::from_secs(20)).await;
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server("header_read_timeout = \"300ms\"", &service(up, "")).await;
    let mut s = open(&gw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive, then idle: the gateway closes it.
    let rest = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("an idle connection must not be kept forever");
    assert!(matches!(rest, Ok(0) | Err(_)), "{rest:?}");
    gw.shutdown().await;
}

/// An upstream answering with the `x-request-timeout-ms` it was sent.
async fn echo_deadline() -> SocketAddr {
    upstream(|r| async move {
        let v = r
            .headers()
            .get("x-request-timeout-ms")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        text(200, v)
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_remaining_deadline_is_sent_upstream_and_a_longer_client_one_is_not() {
    let up = echo_deadline().await;
    let gw = gateway(&service(up, "timeout = \"3s\"")).await;
    let c = client();
    let url = format!("http://{}/", gw.addr);
    let ms = |a: &support::Answer| a.body.parse::<u64>().unwrap_or(0);

    let plain = get(&c, url.clone()).await;
    assert!((1..=3000).contains(&ms(&plain)), "{}", plain.body);

    // The client will wait 400 ms: the upstream hears at most that.
    let short = Request::get(url.clone())
        .header("x-request-timeout-ms", "400")
        .body(Full::<Bytes>::default())
        .unwrap();
    let short = send(&c, short).await;
    assert!((1..=400).contains(&ms(&short)), "{}", short.body);

    // A client cannot lengthen the service's timeout, even by the largest value.
    let long = Request::get(url)
        .header("x-request-timeout-ms", "18446744073709551615")
        .body(Full::<Bytes>::default())
        .unwrap();
    let long = send(&c, long).await;
    assert!((1..=3000).contains(&ms(&long)), "{}", long.body);
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_deadline_shorter_than_the_upstream_gets_504() {
    let up = upstream(|_| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        text(200, "late")
    })
    .await;
    let gw = gateway(&service(up, "timeout = \"10s\"")).await;
    let req = Request::get(format!("http://{}/", gw.addr))
        .header("x-request-timeout-ms", "200")
        .body(Full::<Bytes>::default())
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, 504, "{}", a.body);
    gw.shutdown().await;
}

/// An upstream answering 503 with `Retry-After: {secs}` at first, then 200;
/// it records when each request came.
async fn busy_then_fine(secs: u64) -> (SocketAddr, Arc<Mutex<Vec<tokio::time::Instant>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let up = upstream(move |_| {
        let log = Arc::clone(&log);
        async move {
            let n = {
                let mut l = log.lock().unwrap();
                l.push(tokio::time::Instant::now());
                l.len()
            };
            if n == 1 {
                let mut r = text(503, "busy");
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
                r
            } else {
                text(200, "fine")
            }
        }
    })
    .await;
    (up, seen)
}

const RETRY_503: &str = "retry = { attempts = 2, backoff = \"constant\", initial = \"10ms\", \
                         max = \"10ms\", jitter = \"none\", on = [503] }";

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_upstreams_retry_after() {
    let (up, seen) = busy_then_fine(1).await;
    let gw = gateway(&service(up, &format!("timeout = \"10s\"\n{RETRY_503}"))).await;
    let a = get(&client(), format!("http://{}/", gw.addr)).await;
    assert_eq!((a.status, a.body.as_str()), (200, "fine"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1] - seen[0] >= Duration::from_secs(1),
        "retried {:?} after a Retry-After of 1 s",
        seen[1] - seen[0]
    );
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_time_left_ends_the_retries() {
    let (up, seen) = busy_then_fine(30).await;
    let gw = gateway(&service(up, &format!("timeout = \"2s\"\n{RETRY_503}"))).await;
    let a = get(&client(), format!("http://{}/", gw.addr)).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no retry before the upstream is ready"
    );
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_reading_slowly_is_cut_off_at_the_deadline() {
    let big = Bytes::from(vec![b'x'; BIG]);
    let up = upstream(move |_| {
        let big = big.clone();
        async move { text(200, big) }
    })
    .await;
    let gw = gateway(&service(
        up,
        "timeout = \"1s\"\nbulkhead = { max_concurrent = 1 }",
    ))
    .await;
    let mut s = open(&gw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // 16 KiB every 20 ms: it would take the whole body 40 s.
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow reader was still being served");
    assert!(got < BIG, "it got the whole body: {got} bytes");
    assert!(slots_freed(&gw).await);
    gw.shutdown().await;
}

#[test]
fn connection_limits_are_configured_and_checked_with_their_line() {
    use rempart_gateway::config::GatewayConfig;
    let base = "[[services]]\nname = \"a\"\nupstreams = [\"http://127.0.0.1:1\"]\n\
                [[routes]]\npath_prefix = \"/\"\nservice = \"a\"\n";
    let c = GatewayConfig::parse(base, "gw.toml").unwrap();
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(c.server.write_timeout, Duration::from_secs(10));

    let text = format!("[server]\nwrite_timeout = \"2s\"\nmax_connections = 0\n{base}");
    let e = GatewayConfig::parse(&text, "gw.toml").unwrap_err();
    let p = e.problems();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (3, "server.max_connections")
    );
    let text = format!("[server]\nwrite_timeout = \"2s\"\nmax_connections = 64\n{base}");
    let c = GatewayConfig::parse(&text, "gw.toml").unwrap();
    assert_eq!(c.server.max_connections, 64);
    assert_eq!(c.server.write_timeout, Duration::from_secs(2));
}
