//! An open-loop HTTP load generator for `bench/gateway-vs-nginx.sh`.
//!
//! `cargo run --release -p rempart-gateway --example openloop -- URL RATE SECONDS [CONNECTIONS]`
//!
//! Requests are *scheduled* at a fixed rate, and each one's latency is
//! measured from its scheduled start, not from when a free connection got
//! round to sending it. A closed-loop tool (wrk) waits for a reply before
//! sending more, so a stalled server also stalls the load and hides the queue
//! it built ("coordinated omission"); scheduling up front exposes it.
//! Prints one line: `rate=.. sent=.. ok=.. errors=.. p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn usage() -> ! {
    eprintln!("usage: openloop URL RATE_PER_SECOND SECONDS [CONNECTIONS]");
    std::process::exit(64);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    let url: http::Uri = args[0].parse().unwrap_or_else(|_| usage());
    let rate: u64 = args[1].parse().unwrap_or_else(|_| usage());
    let secs: u64 = args[2].parse().unwrap_or_else(|_| usage());
    let conns: usize = args
        .get(3)
        .map_or(Ok(64), |c| c.parse())
        .unwrap_or_else(|_| usage());
    if rate == 0 || secs == 0 || conns == 0 {
        usage();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(url, rate, secs, conns));
}

async fn run(url: http::Uri, rate: u64, secs: u64, conns: usize) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(conns)
        .build(connector);
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(conns));
    // The allowed clock here: this is a measuring tool, not policy logic.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, semaphore) = (client.clone(), url.clone(), semaphore.clone());
        tasks.push(tokio::spawn(async move {
            // At most `conns` requests in flight, like a fixed connection pool;
            // the wait for one counts in the latency.
            let _slot = semaphore.acquire_owned().await.ok()?;
            let resp = client.get(url).await.ok()?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await.ok()?;
            #[allow(clippy::disallowed_methods)]
            let took = Instant::now().saturating_duration_since(scheduled);
            ok.then_some(took)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0u64;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => lat.push(d.as_micros() as u64),
            None => errors += 1,
        }
    }
    lat.sort_unstable();
    let q = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1]
    };
    println!(
        "rate={rate} sent={total} ok={} errors={errors} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        lat.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        lat.last().copied().unwrap_or(0)
    );
}
