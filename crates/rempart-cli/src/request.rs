//! `rempart request`: a resilient curl. One call through seed 003's client
//! (crates/rempart-client), every attempt, pause, breaker state and fallback
//! printed as it happens on stderr, the answer's body on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rempart::fallback::FallbackKind;
use rempart::retry::GiveUp;
use rempart_client::{
    AttemptReport, CallObserver, ClientConfig, FallbackAnswer, Resilience, ResilientClient,
    error_chain,
};

use crate::{EXIT_FAILURE, EXIT_USAGE};

/// `rempart request --config client.toml [-X METHOD] [-d BODY] URL`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The client config (seed 003's TOML; see docs/client-config.md and examples/client.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The method.
    #[arg(
        short = 'X',
        long = "request",
        value_name = "METHOD",
        default_value = "GET"
    )]
    pub method: String,
    /// The request body (sent as is).
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    pub data: Option<String>,
    /// The URL to call (http://).
    #[arg(value_name = "URL")]
    pub url: String,
}

/// Prints each event of the call on stderr as it happens.
#[derive(Debug)]
struct Trace;

impl CallObserver for Trace {
    fn on_attempt(&self, r: &AttemptReport<'_>) {
        eprintln!(
            "attempt {}: {} in {} (breaker {}: {})",
            r.attempt,
            r.outcome,
            ms(r.elapsed),
            r.key,
            r.breaker
        );
    }
    fn on_retry(&self, _key: &str, _attempt: u32, delay: Duration, retry_after: bool) {
        let why = if retry_after {
            " (the server's Retry-After)"
        } else {
            ""
        };
        eprintln!("  next attempt in {}{why}", ms(delay));
    }
    fn on_give_up(&self, _key: &str, attempts: u32, why: GiveUp) {
        let why = match why {
            GiveUp::AttemptsSpent => "every attempt used",
            GiveUp::OutOfTime => "no time left for another attempt",
            GiveUp::NotRetried => "not retryable",
            _ => "stopped",
        };
        eprintln!("gave up after {attempts} attempt(s): {why}");
    }
    fn on_fallback(&self, _key: &str, kind: FallbackKind) {
        eprintln!("fallback: the {} answered", kind.as_str());
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0?}", d)
}

/// Runs one request; returns the exit code.
pub(crate) fn run(args: RequestArgs) -> u8 {
    let config = match ClientConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let method = match reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            eprintln!(
                "-X {:?} is not an HTTP method; use GET, POST, PUT, ...",
                args.method
            );
            return EXIT_USAGE;
        }
    };
    let url = match reqwest::Url::parse(&args.url) {
        Ok(u) if u.scheme() == "http" => u,
        Ok(u) => {
            eprintln!(
                "{}: only http:// URLs are supported (this build has no TLS), not {}://",
                args.url,
                u.scheme()
            );
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!(
                "{:?} is not a URL ({e}); give one such as http://127.0.0.1:8080/path",
                args.url
            );
            return EXIT_USAGE;
        }
    };
    let client = match ResilientClient::with_middleware(Resilience::observed(config, Trace)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut req = client.request(method, url.clone());
        if let Some(body) = args.data {
            req = req.body(body);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("failed: {}: {}", url, error_chain(&e));
                return EXIT_FAILURE;
            }
        };
        let status = resp.status();
        let degraded = resp.headers().contains_key("x-degraded-mode");
        let fallback = resp.extensions().get::<FallbackAnswer>().copied();
        let answer = match fallback {
            Some(FallbackAnswer {
                kind,
                age: Some(age),
            }) => {
                format!(" from the {} ({} old)", kind.as_str(), ms(age))
            }
            Some(FallbackAnswer { kind, .. }) => format!(" from the {} fallback", kind.as_str()),
            None => String::new(),
        };
        let mark = if degraded {
            ", X-Degraded-Mode: true"
        } else {
            ""
        };
        eprintln!("HTTP {status}{answer}{mark}");
        match resp.bytes().await {
            Ok(body) => {
                let _ = std::io::stdout().write_all(&body);
            }
            Err(e) => {
                eprintln!("failed reading the body: {}", error_chain(&e));
                return EXIT_FAILURE;
            }
        }
        if status.is_success() { 0 } else { EXIT_FAILURE }
    })
}
