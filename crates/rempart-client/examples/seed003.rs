//! Seed 003's resilient client against a flaky server, in one process:
//! `cargo run -p rempart-client --example seed003`.
//!
//! The server (on loopback, in this example) goes through three phases:
//! flaky (one request in two answers 503), down (every request 500), and
//! back. The client, configured by seed 003's TOML with shorter delays,
//! retries through the flaky phase, opens its breaker when the server is
//! down and answers from the cache of the last good answer, then probes and
//! closes the breaker when the server is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use rempart::fallback::FallbackKind;
use rempart_client::{
    AttemptReport, CallObserver, ClientConfig, FallbackAnswer, Resilience, ResilientClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Seed 003's file, with pauses and the open period cut so the story fits in seconds.
const CONFIG: &str = r#"
[retry]
enabled = true
max_retries = 3
initial_delay = "100ms"
max_delay = "1s"
multiplier = 2.0
jitter = true

[retry.circuit_breaker]
enabled = true
failure_threshold = 5
success_threshold = 3
timeout = "2s"

[retry.policy]
retryable_status_codes = [429, 500, 502, 503, 504]
retryable_errors = ["connection_timeout", "dns_resolution"]

[retry.fallback]
enabled = true
strategy = "cache"
cache_ttl = "1h"
"#;

const FLAKY: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;

/// Prints what the client does, as it does it.
#[derive(Debug)]
struct Narrator;

impl CallObserver for Narrator {
    fn on_attempt(&self, r: &AttemptReport<'_>) {
        println!(
            "    attempt {}: {} (breaker {})",
            r.attempt, r.outcome, r.breaker
        );
    }
    fn on_retry(&self, _key: &str, _attempt: u32, delay: Duration, _retry_after: bool) {
        println!("      retry in {delay:.0?}");
    }
    fn on_fallback(&self, _key: &str, kind: FallbackKind) {
        println!("    fallback: the {} answers", kind.as_str());
    }
}

/// The flaky movie service: its answer depends on the phase.
async fn serve(listener: TcpListener, phase: Arc<AtomicU8>) {
    let served = Arc::new(AtomicU32::new(0));
    while let Ok((mut stream, _)) = listener.accept().await {
        let (phase, served) = (Arc::clone(&phase), Arc::clone(&served));
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let n = served.fetch_add(1, Ordering::Relaxed);
            let (code, body) = match phase.load(Ordering::Relaxed) {
                FLAKY if n % 2 == 0 => (503, "busy"),
                DOWN => (500, "down"),
                _ => (200, "[\"Alien\", \"Heat\", \"Ran\"]"),
            };
            let answer = format!(
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/movies", listener.local_addr()?);
    let phase = Arc::new(AtomicU8::new(FLAKY));
    tokio::spawn(serve(listener, Arc::clone(&phase)));

    let config = ClientConfig::parse(CONFIG, "seed003.toml")?;
    let client = ResilientClient::with_middleware(Resilience::observed(config, Narrator))?;
    let key = url
        .trim_start_matches("http://")
        .trim_end_matches("/movies")
        .to_owned();

    let call = |n: usize| {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        async move {
            println!("  call {n}:");
            match client.get(&url).send().await {
                Ok(resp) => {
                    let from = match resp.extensions().get::<FallbackAnswer>() {
                        Some(a) => {
                            format!(" (from the {}, X-Degraded-Mode: true)", a.kind.as_str())
                        }
                        None => String::new(),
                    };
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    println!("  => {status} {body}{from}");
                }
                Err(e) => println!("  => error: {e}"),
            }
            let state = client.resilience().breaker_state(&key);
            println!("  breaker: {}", state.map_or("-".into(), |s| s.to_string()));
        }
    };

    println!("Phase 1: the server fails one request in two; retries hide it.");
    for n in 1..=2 {
        call(n).await;
    }
    println!("\nPhase 2: the server is down; the breaker opens, the cache answers.");
    phase.store(DOWN, Ordering::Relaxed);
    for n in 3..=5 {
        call(n).await;
    }
    println!(
        "\nPhase 3: the server is back; after the open period, trial calls close the breaker."
    );
    phase.store(BACK, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for n in 6..=8 {
        call(n).await;
    }
    Ok(())
}
