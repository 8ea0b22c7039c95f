//! Degrading to a queue (issue 14), on this machine, against the real
//! RabbitMQ on 127.0.0.1:5672 (guest/guest), on queues of each run's own.
//! Not criterion: the figures are rates and percentiles under a fixed
//! offered load. Each figure is the median of `RUNS` runs (default 3).
//!
//! 1. `raw`: persistent messages of a deferred upload's size published with
//!    confirms by `CLIENTS` tasks sharing one confirming channel (as the
//!    gateway's publisher does), for `SECS` seconds: the limit here.
//! 2. `accept`: `CLIENTS` keep-alive clients POST an upload to a gateway
//!    whose service is down (its port refuses; the breaker opens during the
//!    warm-up and stays open: a one-hour reset), each
//!    answered 202 after the broker's confirm, for `SECS` seconds: the 202
//!    path's throughput. Then the same gateway at a fixed half of that rate
//!    (open loop) for `SECS` seconds: latency p50 and p99 from send to the
//!    202's last byte; beside it, raw confirmed publishes sent on the same
//!    schedule, publish to confirm (the broker's own share).
//! 3. `worker`: `JOBS` jobs waiting in the work queue, drained by the
//!    embedded worker of a gateway whose service answers at once (a
//!    keep-alive upstream on loopback): jobs/s until all are stored.
//!
//! 4. `sweep` (only when named): the 202 path's and the raw confirmed
//!    publish's p50/p99 at each fixed rate of `OPEN_RATES` (default
//!    `1000,2500,5000` per second), to see where the broker's own tail begins.
//!
//! `cargo bench -p rempart-gateway --bench queue`
//! `OPEN_RATES=1000,2500,5000 cargo bench -p rempart-gateway --bench queue -- sweep`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Confirmation};
use rempart::clock::UnixClock;
use rempart_gateway::config::GatewayConfig;
use rempart_gateway::queue::job::{Job, JobId};
use rempart_gateway::queue::publish::Publisher;
use rempart_gateway::queue::topology::{self, QueueNames};
use rempart_gateway::queue::wall_time;
use rempart_gateway::server::RunningGateway;
use tokio::time::Instant;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const T: Duration = Duration::from_secs(5);
const CLIENTS: usize = 32;
const SECS: u64 = 5;
const JOBS: usize = 10_000;
const MAX_ATTEMPTS: u32 = 5;
/// An upload's body: a small image.
const BODY: &[u8] = &[0x89; 512];

fn unique(what: &str) -> QueueNames {
    let nanos = wall_time(&UnixClock::new())
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    QueueNames::new(&format!("bench-{what}-{}-{nanos}", std::process::id()))
}

async fn delete(names: &QueueNames) {
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in names.all(MAX_ATTEMPTS) {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

fn job() -> Job {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "image/png".parse().unwrap());
    Job::capture(
        JobId::new(wall_time(&UnixClock::new())),
        &http::Method::POST,
        &"/optimize/img".parse().unwrap(),
        &headers,
        BODY.to_vec(),
    )
    .unwrap()
}

/// One persistent message to `queue`, awaited until the broker confirms it.
async fn publish_confirmed(ch: &lapin::Channel, queue: &str, payload: &[u8]) {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    assert!(matches!(confirm.await.unwrap(), Confirmation::Ack(None)));
}

/// Confirmed publishes per second, `CLIENTS` at a time on one channel.
async fn raw() -> f64 {
    let names = unique("raw");
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology::declare(&ch, &names, MAX_ATTEMPTS, T)
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let payload = job().encode();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(SECS);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (ch, payload, done, work) = (
                ch.clone(),
                payload.clone(),
                done.clone(),
                names.work.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < until {
                    publish_confirmed(&ch, &work, &payload).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    delete(&names).await;
    rate
}

/// Publish-to-confirm latency (p50, p99 ms) of raw confirmed publishes sent
/// on schedule at `rate` per second for `SECS` seconds: what the broker
/// alone adds to a 202 at that load.
async fn raw_latency(rate: f64) -> (f64, f64) {
    let names = unique("rawlat");
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology::declare(&ch, &names, MAX_ATTEMPTS, T)
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let payload = Arc::new(job().encode());
    let work = names.work.clone();
    let latencies = open_loop(rate, || {
        let (ch, payload, work) = (ch.clone(), payload.clone(), work.clone());
        async move {
            publish_confirmed(&ch, &work, &payload).await;
        }
    })
    .await;
    delete(&names).await;
    percentiles(latencies)
}

/// Runs `one()` on schedule at `rate` per second for `SECS` seconds, each
/// on its own task whatever the ones before it are doing (an open loop, so
/// a slow answer cannot hold back the load), and returns each one's time.
async fn open_loop<F, Fut>(rate: f64, one: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * SECS as f64) as u64;
    let mut inflight = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        while Instant::now() < due {
            tokio::select! {
                Some(l) = inflight.next(), if !inflight.is_empty() => latencies.push(l),
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let fut = one();
        inflight.push(tokio::spawn(async move {
            let sent = Instant::now();
            fut.await;
            sent.elapsed()
        }));
    }
    while let Some(l) = inflight.next().await {
        latencies.push(l);
    }
    latencies.into_iter().map(|l| l.unwrap()).collect()
}

/// (p50, p99) in milliseconds.
fn percentiles(latencies: Vec<Duration>) -> (f64, f64) {
    let mut ms: Vec<f64> = latencies.iter().map(|l| l.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (pct(0.50), pct(0.99))
}

/// The queue side of the 202 path alone (no HTTP, no proxy, no worker):
/// `ServiceQueue::defer` on schedule at `rate`, (p50, p99) ms.
async fn defer_latency(rate: f64) -> (f64, f64) {
    use rempart_gateway::queue::owner::Owner;
    use rempart_gateway::queue::service::ServiceQueue;
    let names = unique("defer");
    let text = format!(
        "[[services]]\nname = \"s\"\nupstreams = [\"http://127.0.0.1:9\"]\nqueue = {{ amqp_url = \"{AMQP}\", name = \"{}\", max_attempts = {MAX_ATTEMPTS} }}\n[[routes]]\npath_prefix = \"/\"\nservice = \"s\"\nqueue_methods = [\"POST\"]\n",
        names.work
    );
    let config = GatewayConfig::parse(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    let queue_config = config.services[0].queue.clone().unwrap();
    let queue = Arc::new(ServiceQueue::new("s", queue_config, None));
    let owner = Owner::of(&http::HeaderMap::new(), "127.0.0.1".parse().unwrap());
    queue.defer(&job(), &owner).await.unwrap();
    let latencies = open_loop(rate, || {
        let queue = queue.clone();
        async move {
            queue.defer(&job(), &owner).await.unwrap();
        }
    })
    .await;
    delete(&names).await;
    percentiles(latencies)
}

/// A loopback upstream answering every request `200` with a small body.
async fn healthy_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"optimized\":true}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A port that refuses connections: bound, then released.
fn refusing_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `down`: the service's breaker, once open, stays open for the run (a
/// one-hour reset), so every upload takes the 202 path itself rather than
/// the half-open probes and their retries.
async fn gateway(upstream: SocketAddr, names: &QueueNames, down: bool) -> RunningGateway {
    let breaker = if down {
        r#"circuit_breaker = { error_threshold_percentage = 50, volume_threshold = 5, rolling_window = "10s", rolling_buckets = 10, reset_timeout = "1h" }"#
    } else {
        ""
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[services]]
name = "optimizer"
upstreams = [ {{ url = "http://{upstream}" }} ]
timeout = "2s"
{breaker}
queue = {{ amqp_url = "{AMQP}", name = "{}", max_attempts = {MAX_ATTEMPTS}, backoff = {{ initial = "1s", max = "60s" }}, result_ttl = "1h" }}

[[routes]]
path_prefix = "/optimize"
service = "optimizer"
queue_methods = ["POST"]
"#,
        names.work
    );
    let config = GatewayConfig::parse(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    RunningGateway::start(&config).await.unwrap()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client with Nagle's algorithm off, as the gateway's own
/// sockets are: a small request is not held back waiting for an ack.
fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One upload; returns its status.
async fn upload(client: &HttpClient, gw: SocketAddr) -> u16 {
    let req = hyper::Request::post(format!("http://{gw}/optimize/img"))
        .header("content-type", "image/png")
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// (202s per second closed loop, p50 ms, p99 ms at half of it, open loop).
async fn accept() -> (f64, f64, f64) {
    let names = unique("accept");
    let gw = gateway(refusing_port(), &names, true).await;
    let addr = gw.addr;
    let client = http_client();
    warm_up(&client, addr).await;
    let accepted = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(SECS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, accepted, other) = (client.clone(), accepted.clone(), other.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    match upload(&client, addr).await {
                        202 => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => other.store(true, Ordering::Relaxed),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    assert!(
        !other.load(Ordering::Relaxed),
        "every upload is answered 202"
    );

    // Open loop at half the rate: each upload sent on schedule, whatever
    // the ones before it are doing.
    let (p50, p99) = percentiles(uploads_on_schedule(&client, addr, rate / 2.0).await);
    gw.shutdown().await;
    delete(&names).await;
    (rate, p50, p99)
}

/// The broker link, the breaker opening.
async fn warm_up(client: &HttpClient, addr: SocketAddr) {
    for _ in 0..50 {
        upload(client, addr).await;
    }
}

/// Uploads sent on schedule at `rate`, each one's time to its 202.
async fn uploads_on_schedule(client: &HttpClient, addr: SocketAddr, rate: f64) -> Vec<Duration> {
    open_loop(rate, || {
        let client = client.clone();
        async move { assert_eq!(upload(&client, addr).await, 202) }
    })
    .await
}

/// The 202 path's (p50, p99) ms at a fixed `rate`, open loop, on a gateway
/// of its own whose service is down (as in `accept`).
async fn accept_latency(rate: f64) -> (f64, f64) {
    let names = unique("acceptlat");
    let gw = gateway(refusing_port(), &names, true).await;
    let client = http_client();
    warm_up(&client, gw.addr).await;
    let latencies = uploads_on_schedule(&client, gw.addr, rate).await;
    gw.shutdown().await;
    delete(&names).await;
    percentiles(latencies)
}

/// Jobs stored per second by the embedded worker, `JOBS` waiting at start.
async fn worker() -> f64 {
    let names = unique("worker");
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology::declare(&ch, &names, MAX_ATTEMPTS, T)
        .await
        .unwrap();
    let publisher = Arc::new(Publisher::open(&conn, names.clone(), T).await.unwrap());
    let mut pending = FuturesUnordered::new();
    for _ in 0..JOBS {
        let p = publisher.clone();
        pending.push(async move { p.submit(&job()).await.unwrap() });
        if pending.len() >= 256 {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}

    let upstream = healthy_upstream().await;
    let started = Instant::now();
    let gw = gateway(upstream, &names, false).await;
    let admin = gw.admin_addr;
    let client = http_client();
    loop {
        let req = hyper::Request::get(format!("http://{admin}/metrics"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = client
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        let done = text
            .lines()
            .find_map(|l| l.strip_prefix("jobs_completed_total{service=\"optimizer\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if done as usize >= JOBS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{done} of {JOBS} jobs done after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = JOBS as f64 / started.elapsed().as_secs_f64();
    gw.shutdown().await;
    delete(&names).await;
    rate
}

/// `runs` measures of (p50, p99), as two lists.
async fn latencies<F, Fut>(runs: usize, measure: F) -> (Vec<f64>, Vec<f64>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (f64, f64)>,
{
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (p50, p99) = measure().await;
        p50s.push(p50);
        p99s.push(p99);
    }
    (p50s, p99s)
}

fn report_latency(what: &str, p50s: &[f64], p99s: &[f64]) {
    println!(
        "{what}: p50 {:.2} ms (runs {p50s:.2?}), p99 {:.2} ms (runs {p99s:.2?})",
        median(p50s.to_vec()),
        median(p99s.to_vec())
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("raw") || want("accept") {
            let raws: Vec<f64> = {
                let mut v = Vec::new();
                for _ in 0..runs {
                    v.push(raw().await);
                }
                v
            };
            println!(
                "raw: confirmed publishes/s, {CLIENTS} at a time on one channel: median {:.0} (runs {raws:.0?})",
                median(raws.clone())
            );
            if want("accept") {
                let mut rates = Vec::new();
                let mut p50s = Vec::new();
                let mut p99s = Vec::new();
                for _ in 0..runs {
                    let (r, p50, p99) = accept().await;
                    rates.push(r);
                    p50s.push(p50);
                    p99s.push(p99);
                }
                let rate = median(rates.clone());
                println!(
                    "accept: 202s/s, {CLIENTS} clients: median {rate:.0} (runs {rates:.0?}), {:.2}x raw",
                    rate / median(raws)
                );
                report_latency("accept at half that rate, open loop", &p50s, &p99s);
                let (r50, r99) = latencies(runs, || raw_latency(rate / 2.0)).await;
                report_latency("raw confirmed publishes at that same rate, open loop", &r50, &r99);
                let (d50, d99) = latencies(runs, || defer_latency(rate / 2.0)).await;
                report_latency(
                    "the queue side alone (ServiceQueue::defer, no HTTP, no worker) at that rate",
                    &d50,
                    &d99,
                );
            }
        }
        // Only when asked: the 202 path's and the raw publish's latency at
        // fixed rates (`OPEN_RATES`, per second), to see where the broker's
        // own tail begins.
        if wanted.iter().any(|w| w == "sweep") {
            let rates: Vec<f64> = std::env::var("OPEN_RATES")
                .unwrap_or_else(|_| "1000,2500,5000".into())
                .split(',')
                .map(|r| r.trim().parse().expect("OPEN_RATES: numbers, comma-separated"))
                .collect();
            for rate in rates {
                let (a50, a99) = latencies(runs, || accept_latency(rate)).await;
                report_latency(&format!("sweep {rate:.0}/s: 202 path"), &a50, &a99);
                let (r50, r99) = latencies(runs, || raw_latency(rate)).await;
                report_latency(&format!("sweep {rate:.0}/s: raw confirmed publish"), &r50, &r99);
            }
        }
        if want("worker") {
            let mut rates = Vec::new();
            for _ in 0..runs {
                rates.push(worker().await);
            }
            println!(
                "worker: jobs stored/s, {JOBS} waiting, healthy upstream: median {:.0} (runs {rates:.0?})",
                median(rates.clone())
            );
        }
    });
}
