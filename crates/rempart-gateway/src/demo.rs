//! `rempart demo`: seed 001 case 4, live, in one process.
//!
//! Three simulated services listen on loopback behind a real gateway:
//! `catalogue` (fast), `orders` (normal) and `reporting` (slow, and failing in
//! a burst: rempart's chaos policies inject 90 % errors and extra latency
//! into it during the outage). Clients hammer all three; every second a table shows each
//! service's circuit state, outcomes and p99. The story to watch: reporting
//! fails, its circuit opens, clients get degraded answers at once instead of
//! waiting, catalogue and orders keep their latency, reporting recovers and its
//! circuit closes.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use rempart::chaos::Chaos;
use rempart::rng::SplitMix64;

use crate::config::GatewayConfig;
use crate::server::RunningGateway;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Length of the whole story. The reporting outage starts at a quarter of
    /// it and ends at 60 %.
    pub duration: Duration,
    /// Time between two table refreshes.
    pub refresh: Duration,
    /// Redraw the table in place (a terminal) or append it (a pipe, a test).
    pub redraw: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(20),
            refresh: Duration::from_secs(1),
            redraw: false,
        }
    }
}

/// What the demo saw, for its summary and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoReport {
    /// Every circuit state the reporting service showed, in order, without repeats.
    pub reporting_states: Vec<String>,
    /// Answers per service: (name, ok, degraded, failed).
    pub answers: Vec<(String, u64, u64, u64)>,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    degraded: AtomicU64,
    failed: AtomicU64,
}

/// The faults of a simulated service: failures and extra latency, injected
/// by rempart's chaos policies, switched on for the outage only.
#[derive(Clone)]
struct Faults {
    errors: Chaos<StatusCode, StatusCode>,
    slowness: Chaos<StatusCode, StatusCode>,
}

impl Faults {
    fn new(base_latency: Duration, seed: u64) -> std::io::Result<Faults> {
        let bad = |e: rempart::ConfigError| std::io::Error::other(e.to_string());
        let errors = Chaos::error(0.9, || StatusCode::INTERNAL_SERVER_ERROR)
            .map_err(bad)?
            .with_rng(SplitMix64::seeded(seed));
        let slowness = Chaos::latency(1.0, base_latency * 3).map_err(bad)?;
        errors.disable();
        slowness.disable();
        Ok(Faults { errors, slowness })
    }

    fn set(&self, on: bool) {
        for c in [&self.errors, &self.slowness] {
            if on { c.enable() } else { c.disable() }
        }
    }
}

async fn simulated_service(
    name: &'static str,
    latency: Duration,
    faults: Option<Faults>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let faults = faults.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let faults = faults.clone();
                    async move {
                        let work = || async {
                            tokio::time::sleep(latency).await;
                            Ok::<_, StatusCode>(StatusCode::OK)
                        };
                        let status = match &faults {
                            // The case-4 incident: slower, and mostly failing.
                            Some(f) => f.slowness.call(|| f.errors.call(work)).await,
                            None => work().await,
                        }
                        .unwrap_or_else(|failed| failed);
                        let mut r = Response::new(Full::new(Bytes::from(format!(
                            "{{\"service\":\"{name}\",\"data\":[1,2,3]}}"
                        ))));
                        *r.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn demo_config(
    catalogue: SocketAddr,
    orders: SocketAddr,
    reporting: SocketAddr,
    total: Duration,
) -> String {
    // The breaker's window and open period scale with the story, so that a
    // short run (a test) still shows every state.
    let period = format!("{}ms", (total.as_millis() / 10).max(300));
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[services]]
name = "catalogue"
upstreams = [ "http://{catalogue}" ]
timeout = "1s"
bulkhead = {{ max_concurrent = 20 }}

[[services]]
name = "orders"
upstreams = [ "http://{orders}" ]
timeout = "1s"
bulkhead = {{ max_concurrent = 20 }}

[[services]]
name = "reporting"
upstreams = [ "http://{reporting}" ]
timeout = "500ms"
bulkhead = {{ max_concurrent = 3 }}
circuit_breaker = {{ error_threshold_percentage = 50, volume_threshold = 5, rolling_window = "{period}", rolling_buckets = 4, reset_timeout = "{period}" }}
fallback = {{ message = "Le service de rapports est temporairement indisponible." }}

[[routes]]
path_prefix = "/catalogue"
service = "catalogue"

[[routes]]
path_prefix = "/orders"
service = "orders"

[[routes]]
path_prefix = "/reports"
service = "reporting"
"#
    )
}

/// Runs the demo, writing its live table to `out`.
pub async fn run(
    options: DemoOptions,
    out: &mut (dyn Write + Send),
) -> std::io::Result<DemoReport> {
    let start = tokio::time::Instant::now();
    let catalogue = simulated_service("catalogue", Duration::from_millis(5), None).await?;
    let orders = simulated_service("orders", Duration::from_millis(20), None).await?;
    let reporting_faults = Faults::new(Duration::from_millis(60), 7)?;
    let reporting = simulated_service(
        "reporting",
        Duration::from_millis(60),
        Some(reporting_faults.clone()),
    )
    .await?;
    // The outage: chaos on from a quarter of the story to 60 % of it.
    let outage = {
        let (faults, total) = (reporting_faults.clone(), options.duration);
        tokio::spawn(async move {
            tokio::time::sleep_until(start + total.mul_f64(0.25)).await;
            faults.set(true);
            tokio::time::sleep_until(start + total.mul_f64(0.6)).await;
            faults.set(false);
        })
    };
    let text = demo_config(catalogue, orders, reporting, options.duration);
    let config = GatewayConfig::parse(&text, "demo.toml")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let gw = RunningGateway::start(&config).await?;
    writeln!(
        out,
        "rempart demo: gateway on http://{}  dashboard on http://{}/dashboard",
        gw.addr, gw.admin_addr
    )?;
    writeln!(
        out,
        "reporting will fail from {:.0}s to {:.0}s; watch its circuit.\n",
        options.duration.as_secs_f64() * 0.25,
        options.duration.as_secs_f64() * 0.6
    )?;

    let names = ["catalogue", "orders", "reporting"];
    let paths = ["/catalogue/items", "/orders/42", "/reports/monthly"];
    let tallies: Arc<[Tally; 3]> = Arc::new(Default::default());
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut clients = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        for _ in 0..3 {
            let (client, tallies) = (client.clone(), Arc::clone(&tallies));
            let url: http::Uri = format!("http://{}{path}", gw.addr)
                .parse()
                .expect("a valid URL");
            let deadline = start + options.duration;
            clients.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    let t = &tallies[i];
                    match client.get(url.clone()).await {
                        Ok(resp) => {
                            let degraded = resp.headers().contains_key("x-degraded-mode");
                            let ok = resp.status().is_success();
                            let _ = resp.into_body().collect().await;
                            if degraded {
                                t.degraded.fetch_add(1, Ordering::Relaxed);
                            } else if ok {
                                t.ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                t.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            t.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
    }

    let mut report = DemoReport::default();
    let mut ticker = tokio::time::interval(options.refresh);
    ticker.tick().await;
    let mut lines_drawn = 0;
    loop {
        ticker.tick().await;
        let elapsed = start.elapsed();
        let services = gw.gateway().services();
        let mut table = String::new();
        let _ = writeln!(
            table,
            "t={:>5.1}s  {:<10} {:<9} {:>6} {:>9} {:>7} {:>9} {:>8}",
            elapsed.as_secs_f64(),
            "service",
            "circuit",
            "ok",
            "degraded",
            "failed",
            "rejected",
            "p99"
        );
        for (i, name) in names.iter().enumerate() {
            let Some(svc) = services.iter().find(|s| s.config.name == *name) else {
                continue;
            };
            let state = svc.breaker.state().to_string();
            if *name == "reporting" && report.reporting_states.last() != Some(&state) {
                report.reporting_states.push(state.clone());
            }
            let [p99] = svc.latency.quantiles_ms([0.99]);
            let t = &tallies[i];
            let _ = writeln!(
                table,
                "          {:<10} {:<9} {:>6} {:>9} {:>7} {:>9} {:>6.0}ms",
                name,
                state,
                t.ok.load(Ordering::Relaxed),
                t.degraded.load(Ordering::Relaxed),
                t.failed.load(Ordering::Relaxed),
                svc.breaker.metrics().rejected_calls,
                p99.unwrap_or(0.0)
            );
        }
        if options.redraw && lines_drawn > 0 {
            // Move the cursor up over the previous table and redraw it.
            write!(out, "\x1b[{lines_drawn}A")?;
        }
        write!(out, "{table}")?;
        if !options.redraw {
            writeln!(out)?;
        }
        out.flush()?;
        lines_drawn = table.lines().count();
        if elapsed >= options.duration {
            break;
        }
    }
    for c in clients {
        let _ = c.await;
    }
    outage.abort();
    for (i, name) in names.iter().enumerate() {
        let t = &tallies[i];
        report.answers.push((
            (*name).to_owned(),
            t.ok.load(Ordering::Relaxed),
            t.degraded.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed),
        ));
    }
    writeln!(
        out,
        "\nreporting's circuit went {}.",
        report.reporting_states.join(" → ")
    )?;
    gw.shutdown().await;
    Ok(report)
}
