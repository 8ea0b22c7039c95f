//! The gateway's own HTTP/1.1 client against hyper's, on the same bytes.
//!
//! A raw server writes each response stream below; both clients fetch it.
//! They must agree on whether the answer is accepted, and on its status and
//! body bytes when it is. Where the gateway is deliberately stricter than
//! hyper, the case says so, and why: anything else that differs is a bug in
//! one of them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rempart_gateway::client::{UpstreamClient, UpstreamRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every wait in these tests: a client that hangs is a failure, not a stall.
const DEADLINE: Duration = Duration::from_secs(5);

/// What a client made of a response stream.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted(u16, Bytes),
    Rejected,
}

/// What the two clients should make of a case.
enum Expect {
    /// The same outcome.
    Agree,
    /// The gateway refuses what hyper accepts, for this reason.
    Stricter(&'static str),
}

struct Case {
    name: &'static str,
    method: Method,
    wire: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, wire: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        method: Method::GET,
        wire: wire.into(),
        expect: Expect::Agree,
    }
}

impl Case {
    fn head(mut self) -> Case {
        self.method = Method::HEAD;
        self
    }

    fn stricter(mut self, why: &'static str) -> Case {
        self.expect = Expect::Stricter(why);
        self
    }
}

fn chunked(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body}")
}

fn cases() -> Vec<Case> {
    let many_trailers = |n: usize| {
        let fields: String = (0..n).map(|i| format!("t{i}: v\r\n")).collect();
        chunked(&format!("2\r\nok\r\n0\r\n{fields}\r\n"))
    };
    let extensions = |per_chunk: usize, chunks: usize| {
        let ext = "e".repeat(per_chunk);
        let body: String = (0..chunks).map(|_| format!("1;{ext}\r\nx\r\n")).collect();
        chunked(&format!("{body}0\r\n\r\n"))
    };
    vec![
        // Lengths.
        case("length", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
        case("length zero", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        case("length with plus sign", "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello"),
        case("length negative", "HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello"),
        case("length not a number", "HTTP/1.1 200 OK\r\ncontent-length: 5a\r\n\r\nhello"),
        case("length overflow", "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551616\r\n\r\nhello"),
        case("lengths differing", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc"),
        case("lengths equal", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc"),
        case("length as a list", "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc").stricter(
            "RFC 9112 6.3 lets a recipient accept a list of equal lengths, not must: \
             an upstream that sends one is broken, and refusing costs nothing",
        ),
        case("body cut short", "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"),
        // Chunked.
        case("chunked", chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")),
        case("chunked, upper-case hex and leading zeros", chunked("000A\r\n0123456789\r\n0\r\n\r\n")),
        case("chunked with extensions", chunked("5;a=b;c=\"d e\"\r\nhello\r\n0;z\r\n\r\n")),
        case("chunked, space before extension", chunked("5 ;a=b\r\nhello\r\n0\r\n\r\n")),
        case("chunked with trailers", chunked("5\r\nhello\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\n")),
        case("chunk size with plus sign", chunked("+5\r\nhello\r\n0\r\n\r\n")),
        case("chunk size with leading space", chunked(" 5\r\nhello\r\n0\r\n\r\n")),
        case("chunk size bad hex", chunked("5g\r\nhello\r\n0\r\n\r\n")),
        case("chunk size 0x prefix", chunked("0x5\r\nhello\r\n0\r\n\r\n")),
        case("chunk size empty", chunked("\r\nhello\r\n0\r\n\r\n")),
        case("chunk size overflow", chunked("10000000000000000\r\nhello\r\n0\r\n\r\n")),
        case("chunk size huge, body short", chunked("ffffffffffffffff\r\nhello\r\n")),
        case("chunk data without CRLF", chunked("5\r\nhelloXX0\r\n\r\n")),
        case("chunk extension with bare LF", chunked("5;a\nb\r\nhello\r\n0\r\n\r\n")),
        case("chunked, no last chunk", chunked("5\r\nhello\r\n")),
        case("chunk extensions over 16 KiB in all", extensions(1000, 20)),
        case("chunk extension of 5 KiB on one line", extensions(5000, 1)).stricter(
            "one chunk-size line must sit whole in the read buffer before it is parsed: \
             4 KiB is far more than any real upstream sends",
        ),
        case("100 trailer fields", many_trailers(100)),
        case("101 trailer fields", many_trailers(101)),
        case("trailer without colon", chunked("2\r\nok\r\n0\r\nno colon here\r\n\r\n")),
        // Both framings, or other codings.
        case(
            "chunked and length: chunked wins",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        case(
            "length and chunked: chunked wins",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        case(
            "chunked with a bad length",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: +3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .stricter("hyper ignores Content-Length beside Transfer-Encoding; a malformed one is refused anyway, as a sign of smuggling"),
        case("coding not chunked: read to close", "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw bytes"),
        case("chunked then gzip: read to close", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n5\r\nhello"),
        case("HTTP/1.0 with transfer-encoding", "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        // Interim answers.
        case(
            "100 then 200",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ),
        case(
            "103 then 201",
            "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ),
        // Bodiless answers.
        case("HEAD with a length", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").head(),
        case("HEAD chunked", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").head(),
        case("204 with a length", "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
        case("304 chunked", "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
        // Close-delimited, and heads.
        case("close-delimited", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"),
        case("HTTP/1.0 close-delimited", "HTTP/1.0 200 OK\r\n\r\nold style"),
        case("not HTTP", "SPEAKING NONSENSE\r\n\r\n"),
        case("folded header", "HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok"),
        case("nothing at all", ""),
        case("chunked with bare LF lines", chunked("5\nhello\n0\n\n")),
        case("folded trailer", chunked("2\r\nok\r\n0\r\nx-a: 1\r\n folded\r\n\r\n")),
        case("101 header fields", {
            let fields: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
            format!("HTTP/1.1 200 OK\r\n{fields}content-length: 2\r\n\r\nok")
        }),
        case(
            "101 Switching Protocols unasked",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        )
        .stricter("the gateway never asks for an upgrade, so a 101 means the upstream speaks another protocol from here on"),
        case(
            "head over 64 KiB",
            format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "v".repeat(70_000)),
        )
        .stricter("the gateway bounds what one upstream answer can make it buffer; hyper's default is ~400 KiB"),
    ]
}

/// A server that answers one request with `wire`, then closes its side and
/// waits for the client to close, so no reset cuts the bytes short.
async fn serve_once(wire: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = s.write_all(&wire).await;
        let _ = s.shutdown().await;
        let mut rest = [0u8; 1024];
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Ok(n) = s.read(&mut rest).await {
                if n == 0 {
                    return;
                }
            }
        })
        .await;
    });
    addr
}

async fn ours(addr: SocketAddr, method: &Method) -> Outcome {
    let client = UpstreamClient::new(DEADLINE);
    let authority: Authority = addr.to_string().parse().unwrap();
    let headers = HeaderMap::new();
    let body = Bytes::new();
    let req = UpstreamRequest {
        method,
        target: "/",
        headers: &headers,
        body: &body,
    };
    outcome("the gateway's client", async {
        client.send(&authority, req).await.ok()
    })
    .await
}

async fn hypers(addr: SocketAddr, method: &Method) -> Outcome {
    outcome("hyper's client", async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method.clone())
            .uri("/")
            .header(http::header::HOST, addr.to_string())
            .body(Empty::new())
            .unwrap();
        sender.send_request(req).await.ok()
    })
    .await
}

/// The outcome of a fetch: its answer's status and whole body, or
/// `Rejected` if the answer or its body failed. Panics past [`DEADLINE`].
async fn outcome<B>(who: &str, fetch: impl Future<Output = Option<http::Response<B>>>) -> Outcome
where
    B: hyper::body::Body,
{
    let fetched = async {
        let resp = fetch.await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Outcome::Accepted(status, body))
    };
    tokio::time::timeout(DEADLINE, fetched)
        .await
        .unwrap_or_else(|_| panic!("{who} hung"))
        .unwrap_or(Outcome::Rejected)
}

#[tokio::test]
async fn the_gateways_client_and_hypers_agree_on_every_response_stream() {
    let mut disagreements = Vec::new();
    for case in cases() {
        let ours = ours(serve_once(case.wire.clone()).await, &case.method).await;
        let hypers = hypers(serve_once(case.wire.clone()).await, &case.method).await;
        let agreed = match case.expect {
            Expect::Agree => ours == hypers,
            // Stricter: the gateway refuses, and hyper does accept (else the
            // case is not a difference, and its note is stale).
            Expect::Stricter(_) => {
                ours == Outcome::Rejected && matches!(hypers, Outcome::Accepted(..))
            }
        };
        if !agreed {
            disagreements.push(format!(
                "{}: gateway {ours:?}, hyper {hypers:?}{}",
                case.name,
                match case.expect {
                    Expect::Agree => String::new(),
                    Expect::Stricter(why) => format!(" (expected stricter: {why})"),
                }
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the clients disagree:\n{}",
        disagreements.join("\n")
    );
}
