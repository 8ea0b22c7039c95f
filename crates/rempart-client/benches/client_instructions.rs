//! Instructions per call instead of time: runs N in-process calls through
//! one stack, for `bench/client-instructions.sh` to count under callgrind
//! (a count does not move with the machine's load, as a time does).
//!
//! `cargo bench -p rempart-client --bench client_instructions -- STACK N`,
//! STACK one of `reqwest_middleware_empty`, `reqwest_retry`, `rempart`.

use std::hint::black_box;
use std::sync::Arc;

use rempart_client::{ClientConfig, Resilience};
use reqwest_middleware::{ClientBuilder, Middleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;

#[path = "support/answer.rs"]
mod answer;
use answer::Answer;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (stack, n) = match args.as_slice() {
        [s, n] => (s.as_str(), n.parse::<u32>().expect("N is a count")),
        _ => {
            eprintln!("usage: client_instructions STACK N");
            std::process::exit(64);
        }
    };
    let mut b = ClientBuilder::new(reqwest::Client::new());
    match stack {
        "reqwest_middleware_empty" => {}
        "reqwest_retry" => {
            b = b.with(RetryTransientMiddleware::new_with_policy(
                ExponentialBackoff::builder().build_with_max_retries(3),
            ))
        }
        "rempart" => {
            let config = ClientConfig::parse("[retry]\nmax_retries = 3\n", "bench.toml").unwrap();
            b = b.with(Resilience::new(config))
        }
        other => {
            eprintln!("unknown stack {other:?}");
            std::process::exit(64);
        }
    }
    let stack = b.with_arc(Arc::new(Answer) as Arc<dyn Middleware>).build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..n {
        rt.block_on(async {
            let r = stack.get("http://127.0.0.1:9/movies").send().await.unwrap();
            black_box(r.bytes().await.unwrap())
        });
    }
}
