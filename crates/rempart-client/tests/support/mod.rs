//! A real HTTP server on loopback whose answers a test scripts: a status
//! (with headers), a hang, a reset connection, a body that stalls; and a recorder of what the
//! client reports, attempt by attempt, on tokio's (paused) clock.
#![allow(dead_code)] // each test file uses its own part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rempart::CircuitState;
use rempart::fallback::FallbackKind;
use rempart_client::{AttemptOutcome, AttemptReport, CallObserver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Act {
    /// Answer with this status, extra headers and body.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Read the request and never answer.
    Hang,
    /// Read the request and reset the connection (RST).
    Reset,
    /// Answer 200 with headers promising a body, send part of it, then
    /// never the rest.
    StallBody,
}

pub(crate) fn status(code: u16) -> Act {
    Act::Answer(code, Vec::new(), format!("status {code}"))
}

pub(crate) fn body(code: u16, text: &str) -> Act {
    Act::Answer(code, Vec::new(), text.to_owned())
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    script: Arc<Mutex<(VecDeque<Act>, Act)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// A server that acts from `script` in order, then `then` for ever.
    pub(crate) async fn start(script: Vec<Act>, then: Act) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap(),
            script: Arc::new(Mutex::new((script.into(), then))),
            seen: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(s.clone().serve(stream));
            }
        });
        server
    }

    /// The server's URL for `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The breaker key of this server.
    pub(crate) fn key(&self) -> String {
        self.addr.to_string()
    }

    /// Answers from now on with `then`, after `script`.
    pub(crate) fn script(&self, script: Vec<Act>, then: Act) {
        *self.script.lock().unwrap() = (script.into(), then);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn serve(self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, path) = (
            first.next().unwrap_or("").to_owned(),
            first.next().unwrap_or("").to_owned(),
        );
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        self.seen.lock().unwrap().push(Seen {
            method,
            path,
            headers,
        });
        let act = {
            let mut s = self.script.lock().unwrap();
            let then = s.1.clone();
            s.0.pop_front().unwrap_or(then)
        };
        match act {
            Act::Answer(code, extra, body) => {
                let mut out = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (n, v) in extra {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = stream.write_all(out.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
            Act::Hang => std::future::pending::<()>().await,
            Act::StallBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n[\"Ali")
                    .await;
                std::future::pending::<()>().await
            }
            Act::Reset => {
                let _ = stream.set_zero_linger();
                drop(stream);
            }
        }
    }
}

/// A port on loopback where nothing listens.
pub(crate) async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// What the client reported, with tokio's time of each report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Attempt {
        n: u32,
        outcome: AttemptOutcome,
        breaker: CircuitState,
    },
    Retry {
        delay: Duration,
        retry_after: bool,
    },
    Fallback(FallbackKind),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder(pub Arc<Mutex<Vec<(Instant, Event)>>>);

impl Recorder {
    pub(crate) fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Attempts reported, in order.
    pub(crate) fn attempts(&self) -> Vec<AttemptOutcome> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Attempt { outcome, .. } => Some(outcome),
                _ => None,
            })
            .collect()
    }

    /// The pauses announced, in order.
    pub(crate) fn delays(&self) -> Vec<Duration> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Retry { delay, .. } => Some(delay),
                _ => None,
            })
            .collect()
    }

    /// Time from the first report to each attempt's report.
    pub(crate) fn attempt_times(&self) -> Vec<Duration> {
        let all = self.0.lock().unwrap().clone();
        let Some((t0, _)) = all.first().cloned() else {
            return Vec::new();
        };
        all.iter()
            .filter(|(_, e)| matches!(e, Event::Attempt { .. }))
            .map(|(t, _)| t.duration_since(t0))
            .collect()
    }

    fn push(&self, e: Event) {
        self.0.lock().unwrap().push((Instant::now(), e));
    }
}

impl CallObserver for Recorder {
    fn on_attempt(&self, r: &AttemptReport<'_>) {
        self.push(Event::Attempt {
            n: r.attempt,
            outcome: r.outcome.clone(),
            breaker: r.breaker,
        });
    }
    fn on_retry(&self, _key: &str, _attempt: u32, delay: Duration, retry_after: bool) {
        self.push(Event::Retry { delay, retry_after });
    }
    fn on_fallback(&self, _key: &str, kind: FallbackKind) {
        self.push(Event::Fallback(kind));
    }
}

/// Seed 003's settings without jitter (exact pauses: 1 s, 2 s, 4 s), a 2 s
/// attempt timeout, and `extra` appended; a `[retry]` key that `extra`
/// starts with replaces the default one.
pub(crate) fn config(extra: &str) -> String {
    let defaults = [
        ("max_retries", "3"),
        ("initial_delay", "\"1s\""),
        ("max_delay", "\"30s\""),
        ("multiplier", "2.0"),
        ("jitter", "false"),
        ("attempt_timeout", "\"2s\""),
    ];
    let own = extra.split("\n[").next().unwrap_or("");
    let mut out = String::from("[retry]\n");
    for (k, v) in defaults {
        if !own.lines().any(|l| l.starts_with(&format!("{k} ="))) {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out.push_str(extra);
    out
}

/// A client from `toml`, reporting to a fresh recorder.
pub(crate) fn resilient(toml: &str) -> (rempart_client::ResilientClient, Recorder) {
    let config = rempart_client::ClientConfig::parse(toml, "test.toml").unwrap();
    let recorder = Recorder::default();
    let resilience = rempart_client::Resilience::observed(config, recorder.clone());
    (
        rempart_client::ResilientClient::with_middleware(resilience).unwrap(),
        recorder,
    )
}
