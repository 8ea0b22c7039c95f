//! What the middleware adds to a call on the success path, beside bare
//! reqwest and reqwest-retry, in the same run:
//!
//! - `loopback/*`: a GET to a keep-alive HTTP server on loopback (its own
//!   thread), body read; the measure, where the network's tens of
//!   microseconds and their noise surround the difference.
//! - `in_process/*`: the same stacks ending in a middleware that answers
//!   200 without a network, so only what each middleware does is timed.
//!
//! `cargo bench -p rempart-client --bench client`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rempart_client::{ClientConfig, Resilience};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Seed 003's retry and breaker, no fallback: nothing buffered.
const NO_FALLBACK: &str = "[retry]\nmax_retries = 3\n";
/// Seed 003's file: the cache fallback keeps each good answer, so bodies are buffered.
const SEED: &str = "[retry]\nmax_retries = 3\n[retry.fallback]\nenabled = true\nstrategy = \"cache\"\ncache_ttl = \"1h\"\n";

/// A keep-alive server answering every request `200 ok`, on its own thread.
fn server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut pending = Vec::new();
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        while let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..i + 4);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
    });
    format!("http://{}/movies", rx.recv().unwrap())
}

#[path = "support/answer.rs"]
mod answer;
use answer::Answer;

fn rempart(toml: &str) -> Resilience {
    Resilience::new(ClientConfig::parse(toml, "bench.toml").unwrap())
}

fn reqwest_retry() -> RetryTransientMiddleware<ExponentialBackoff> {
    RetryTransientMiddleware::new_with_policy(
        ExponentialBackoff::builder().build_with_max_retries(3),
    )
}

fn stacks(
    client: &reqwest::Client,
    end: Option<Arc<dyn Middleware>>,
) -> Vec<(&'static str, ClientWithMiddleware)> {
    let with = |m: Option<Arc<dyn Middleware>>| {
        let mut b = ClientBuilder::new(client.clone());
        if let Some(m) = m {
            b = b.with_arc(m);
        }
        if let Some(e) = &end {
            b = b.with_arc(Arc::clone(e));
        }
        b.build()
    };
    vec![
        ("reqwest_middleware_empty", with(None)),
        ("reqwest_retry", with(Some(Arc::new(reqwest_retry())))),
        ("rempart", with(Some(Arc::new(rempart(NO_FALLBACK))))),
        ("rempart_seed_cache", with(Some(Arc::new(rempart(SEED))))),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = server();
    let client = reqwest::Client::new();

    let mut g = c.benchmark_group("loopback");
    g.bench_function("bare_reqwest", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = client.get(&url).send().await.unwrap();
                black_box(r.bytes().await.unwrap())
            })
        })
    });
    for (name, stack) in stacks(&client, None) {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = stack.get(&url).send().await.unwrap();
                    black_box(r.bytes().await.unwrap())
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("in_process");
    for (name, stack) in stacks(&client, Some(Arc::new(Answer))) {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = stack.get(&url).send().await.unwrap();
                    black_box(r.bytes().await.unwrap())
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
