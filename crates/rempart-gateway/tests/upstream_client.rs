//! The gateway's own HTTP/1.1 client against upstreams that frame their
//! answers every way RFC 9112 allows, and some ways it does not. Each upstream
//! here is a real socket writing exact bytes, so the framing is the test's.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::{client, gateway, get, send, text, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a raw upstream does with each request on a connection.
#[derive(Clone, Copy)]
enum After {
    KeepOpen,
    Close,
}

/// An upstream that answers every request with `answer(request_head)` as raw
/// bytes, then keeps the connection or closes it; it counts connections.
async fn raw_upstream(answer: fn(&str) -> Vec<u8>, after: After) -> (SocketAddr, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut s).await {
                    if s.write_all(&answer(&head)).await.is_err() {
                        return;
                    }
                    if let After::Close = after {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// One request's head (its body, if any, is read and dropped).
async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.ok()?;
    Some(head)
}

fn routes(up: SocketAddr) -> String {
    format!(
        "[[services]]\nname = \"up\"\nupstreams = [ \"http://{up}\" ]\ncircuit_breaker = {{ enabled = false }}\n[[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    )
}

#[tokio::test]
async fn chunked_answers_arrive_whole_and_keep_the_connection() {
    let (up, accepted) = raw_upstream(
        |_| {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n1\r\n \r\nA\r\nchunked!!!\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec()
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    for _ in 0..3 {
        let a = get(&c, format!("http://{}/c", gw.addr)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "hello chunked!!!");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection reused");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_ended_by_close_is_relayed_whole_and_its_connection_not_reused() {
    let (up, accepted) = raw_upstream(
        |_| b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec(),
        After::Close,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    for _ in 0..2 {
        let a = get(&c, format!("http://{}/u", gw.addr)).await;
        assert_eq!((a.status, a.body.as_str()), (200, "until the end"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a close-framed answer ends its connection"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_still_answers_every_request() {
    // Keep-alive framing, then the upstream hangs up (its idle timeout).
    let (up, accepted) = raw_upstream(
        |_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        After::Close,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    for i in 0..5 {
        let a = get(&c, format!("http://{}/k", gw.addr)).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn interim_answers_are_skipped_for_the_final_one() {
    let (up, _) = raw_upstream(
        |_| {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone"
                .to_vec()
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    let a = get(&c, format!("http://{}/i", gw.addr)).await;
    assert_eq!((a.status, a.body.as_str()), (201, "done"));
    gw.shutdown().await;
}

#[tokio::test]
async fn head_and_no_content_answers_carry_no_body_and_keep_the_connection() {
    let (up, accepted) = raw_upstream(
        |head| {
            if head.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()
            } else if head.starts_with("DELETE") {
                b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()
            }
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    let url = format!("http://{}/h", gw.addr);
    let head = send(&c, Request::head(&url).body(Full::default()).unwrap()).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let del = send(&c, Request::delete(&url).body(Full::default()).unwrap()).await;
    assert_eq!((del.status, del.body.as_str()), (204, ""));
    let a = get(&c, url).await;
    assert_eq!((a.status, a.body.as_str()), (200, "hello"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "bodiless answers keep the connection"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_malformed_answer_becomes_the_degraded_answer_not_a_hang() {
    let (up, _) = raw_upstream(|_| b"SPEAKING NONSENSE\r\n\r\n".to_vec(), After::KeepOpen).await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    let a = get(&c, format!("http://{}/m", gw.addr)).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.headers["x-degraded-mode"], "true");
    gw.shutdown().await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused_as_request_smuggling_is() {
    let (up, _) = raw_upstream(
        |_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc".to_vec(),
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let a = get(&client(), format!("http://{}/s", gw.addr)).await;
    assert_eq!(a.status, 503);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_is_an_error_for_the_client_not_a_short_success() {
    let (up, _) = raw_upstream(
        |_| b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(),
        After::Close,
    )
    .await;
    // Without a stale cache the answer streams: the head is sent before the
    // body is known to be short.
    let gw = gateway(&routes(up).replace(
        "circuit_breaker = { enabled = false }",
        "circuit_breaker = { enabled = false }\nfallback = { stale_cache = false }",
    ))
    .await;
    let result = client()
        .request(
            Request::get(format!("http://{}/t", gw.addr))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
    // The connection is cut before or after the head went out: either way
    // the client must see a failure, never 3 bytes passed off as the body.
    if let Ok(resp) = result {
        assert!(
            resp.into_body().collect().await.is_err(),
            "a short body passed off as complete"
        );
    }
    gw.shutdown().await;

    // With one, a small 200 is read whole before it is sent, so the client
    // gets the degraded answer instead of a broken body.
    let gw = gateway(&routes(up)).await;
    let a = get(&client(), format!("http://{}/t", gw.addr)).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.headers["x-degraded-mode"], "true");
    gw.shutdown().await;
}

#[tokio::test]
async fn large_request_and_response_bodies_cross_whole() {
    // The upstream answers with the request body reversed: any byte lost or
    // reordered on either way shows.
    let up = upstream(|req| async move {
        let mut body = req.into_body().to_vec();
        body.reverse();
        text(200, body)
    })
    .await;
    let gw = gateway(&routes(up)).await;
    let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let resp = client()
        .request(
            Request::post(format!("http://{}/big", gw.addr))
                .body(Full::new(Bytes::from(sent.clone())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    let mut want = sent;
    want.reverse();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the body came back altered");
    gw.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_fields_of_the_answer_stay_on_the_upstream_connection() {
    let (up, _) = raw_upstream(
        |head| {
            if head.contains("/listed") {
                b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\n\
                  x-hop: secret\r\nx-end: kept\r\ncontent-length: 2\r\n\r\nok"
                    .to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                  Upgrade: nothing\r\nX-End: kept\r\ncontent-length: 2\r\n\r\nok"
                    .to_vec()
            }
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    for path in ["/plain", "/listed"] {
        let a = get(&c, format!("http://{}{path}", gw.addr)).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        assert_eq!(a.headers["x-end"], "kept", "{path}: end-to-end fields pass");
        for hop in ["keep-alive", "upgrade", "x-hop"] {
            assert!(!a.headers.contains_key(hop), "{path}: {hop} was forwarded");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_replaced_not_reused() {
    let (up, accepted) = raw_upstream(
        |_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    // A new client connection each time: the gateway's own idle timers on
    // the client side fire too when time jumps.
    let url = format!("http://{}/idle", gw.addr);
    assert_eq!(get(&client(), url.clone()).await.body, "ok");
    // Just under the timeout: reused.
    tokio::time::pause();
    tokio::time::advance(rempart_gateway::client::IDLE_TIMEOUT - Duration::from_secs(1)).await;
    tokio::time::resume();
    assert_eq!(get(&client(), url.clone()).await.body, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Idle for the whole timeout: a new connection, though the old one is open.
    tokio::time::pause();
    tokio::time::advance(rempart_gateway::client::IDLE_TIMEOUT).await;
    tokio::time::resume();
    assert_eq!(get(&client(), url).await.body, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_content_length_with_a_plus_sign_is_refused_not_relayed() {
    // `u64::from_str` reads "+5" as 5; a front proxy that reads it as
    // invalid frames the stream differently: the answer is refused.
    let (up, _) = raw_upstream(
        |_| b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello".to_vec(),
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let a = get(&client(), format!("http://{}/p", gw.addr)).await;
    assert_eq!(a.status, 503, "body {:?}", a.body);
    assert_eq!(a.headers["x-degraded-mode"], "true");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_chunk_size_with_a_plus_sign_is_refused_not_relayed() {
    let (up, _) = raw_upstream(
        |_| {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    assert!(
        fails_for_the_client(format!("http://{}/p", gw.addr)).await,
        "a chunk sized \"+5\" was relayed as a body"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_answer_framed_by_both_chunked_and_length_is_read_chunked_and_its_connection_closed() {
    // RFC 9112 6.3: chunked wins, and whoever read the length instead would
    // see another answer in the rest: nothing more goes on that connection.
    let (up, accepted) = raw_upstream(
        |_| {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    let c = client();
    for _ in 0..2 {
        let a = get(&c, format!("http://{}/b", gw.addr)).await;
        assert_eq!((a.status, a.body.as_str()), (200, "hello"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a connection whose answer was framed two ways was reused"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_answer_with_endless_trailer_fields_is_refused() {
    let (up, _) = raw_upstream(
        |_| {
            let mut a =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n".to_vec();
            for i in 0..1000 {
                a.extend_from_slice(format!("t{i}: v\r\n").as_bytes());
            }
            a.extend_from_slice(b"\r\n");
            a
        },
        After::KeepOpen,
    )
    .await;
    let gw = gateway(&routes(up)).await;
    assert!(
        fails_for_the_client(format!("http://{}/t", gw.addr)).await,
        "1000 trailer fields were read to the end"
    );
    gw.shutdown().await;
}

/// Whether a GET of `url` fails for the client: an error status, or a body
/// cut off (a chunked answer streams, so its head may be out before the
/// upstream's bytes turn out to be bad).
async fn fails_for_the_client(url: String) -> bool {
    let Ok(resp) = client()
        .request(Request::get(url).body(Full::<Bytes>::default()).unwrap())
        .await
    else {
        return true;
    };
    !resp.status().is_success() || resp.into_body().collect().await.is_err()
}
