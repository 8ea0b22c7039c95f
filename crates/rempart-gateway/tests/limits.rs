//! Limits on what a client may send: head size and head read time.

mod support;

use std::time::Duration;

use support::{gateway_with_server, text, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn routes(up: std::net::SocketAddr) -> String {
    format!(
        "[[services]]\nname = \"up\"\nupstreams = [ \"http://{up}\" ]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    )
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server("max_header_bytes = \"8KiB\"", &routes(up)).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let big = "a".repeat(20 * 1024);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_all(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_all(&mut s).await.starts_with("HTTP/1.1 200"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server("header_read_timeout = \"300ms\"", &routes(up)).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // Slowloris: half a head, then silence.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the gateway should close the connection well before 10 s");
    // Closed (0 bytes or a reset), or told 408 first: never served.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    gw.shutdown().await;
}
