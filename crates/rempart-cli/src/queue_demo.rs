//! `rempart demo queue`: seed 002's image upload, live, against a real
//! RabbitMQ. An "optimizer" fails for a while; uploads get 202 at once
//! instead of waiting; once it recovers the gateway's worker completes them
//! and the clients' polls turn to done. One corrupt image is always
//! rejected and ends in the dead-letter queue after exactly 5 attempts.
//!
//! The optimizer's breaker is on, as in seed 002 ("the circuit breaker
//! opens, RabbitMQ takes over"): while it is open uploads get their 202 at
//! once, and the worker puts jobs back to wait without calling, so only real
//! calls spend `max_attempts` and the corrupt image still dies after exactly
//! 5 of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use lapin::options::QueueDeleteOptions;
use rempart_gateway::config::GatewayConfig;
use rempart_gateway::queue::dead_letters::DeadLetters;
use rempart_gateway::queue::topology::{self, QueueNames};
use rempart_gateway::server::RunningGateway;
use tokio::time::Instant;

use crate::{EXIT_FAILURE, EXIT_USAGE};

const MAX_ATTEMPTS: u32 = 5;
/// How long the optimizer fails from the first upload. Below the shortest
/// wait before a 5th attempt (0.2 + 0.4 + 0.8 + 1.6 s with a 400 ms initial
/// backoff, equal jitter), so every good image gets done in its 5 attempts.
const OUTAGE: Duration = Duration::from_millis(2500);
const UPLOADS: usize = 8;
const BETWEEN_UPLOADS: Duration = Duration::from_millis(250);
/// Which upload carries the corrupt image.
const POISON: usize = 2;
const POISON_BODY: &[u8] = b"not an image";
/// The whole story must be over by then.
const GIVE_UP: Duration = Duration::from_secs(45);
const T: Duration = Duration::from_secs(3);

/// `rempart demo queue`.
#[derive(Debug, Args)]
pub struct QueueDemoArgs {
    /// The RabbitMQ broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Append each table instead of redrawing it in place.
    #[arg(long)]
    no_redraw: bool,
}

/// What a client last saw of its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Uploading,
    Queued,
    Retrying,
    Done,
    Dead,
    /// Not a 202 (or a poll that failed): the demo's check fails.
    Refused,
}

#[derive(Default)]
struct Optimizer {
    /// Calls per `X-Job-Id` (the client's own upload has none).
    calls: HashMap<String, u32>,
    failed: u32,
    optimized: u32,
}

/// Runs the demo; returns the exit code.
pub(crate) fn run(args: QueueDemoArgs) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(story(args))
}

async fn story(args: QueueDemoArgs) -> u8 {
    let url = args.amqp.clone();
    match topology::connect(&url, T).await {
        Ok(conn) => {
            let _ = conn.close(200, "checked".into()).await;
        }
        Err(e) => {
            eprintln!("error: this demo needs RabbitMQ: {e}");
            eprintln!(
                "start it (e.g. `sudo service rabbitmq-server start`, or \
                 `docker run -d -p 5672:5672 rabbitmq:3`), or point --amqp at one"
            );
            return EXIT_FAILURE;
        }
    }
    let nanos = rempart_gateway::queue::wall_time(&rempart::clock::UnixClock::new())
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let names = QueueNames::new(&format!(
        "rempart-demo-optimize-{}-{nanos}",
        std::process::id()
    ));
    let optimizer = Arc::new(Mutex::new(Optimizer::default()));
    // The outage is timed from the first upload, not from the start of the
    // gateway, so a slow start cannot eat into it.
    let outage_from = Arc::new(OnceLock::new());
    let upstream = match optimizer_upstream(Arc::clone(&optimizer), Arc::clone(&outage_from)).await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: cannot start the optimizer: {e}");
            return EXIT_FAILURE;
        }
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "2s"

[[services]]
name = "optimizer"
upstreams = [ {{ url = "http://{upstream}" }} ]
timeout = "2s"
circuit_breaker = {{ error_threshold_percentage = 50, volume_threshold = 4, rolling_window = "5s", rolling_buckets = 5, reset_timeout = "1s" }}
queue = {{ amqp_url = "{url}", name = "{queue}", max_attempts = {MAX_ATTEMPTS}, backoff = {{ initial = "400ms", max = "4s" }}, result_ttl = "10m" }}

[[routes]]
path_prefix = "/optimize"
service = "optimizer"
queue_methods = ["POST"]
"#,
        queue = names.work
    );
    let config = match GatewayConfig::parse(&text, "demo-queue.toml") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the demo's own config is wrong: {e}");
            return EXIT_USAGE;
        }
    };
    let gw = match RunningGateway::start(&config).await {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("error: cannot start the gateway: {e}");
            return EXIT_FAILURE;
        }
    };
    println!(
        "seed 002: {UPLOADS} image uploads to an optimizer that fails for the first {OUTAGE:?}; \
         upload #{} is a corrupt image it always rejects",
        POISON + 1
    );
    let seen = Arc::new(Mutex::new(vec![Seen::Uploading; UPLOADS]));
    let slowest_202 = Arc::new(Mutex::new(Duration::ZERO));
    let started = Instant::now();
    let _ = outage_from.set(started);
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..UPLOADS {
        let (client, base, seen) = (client.clone(), base.clone(), Arc::clone(&seen));
        let slowest = Arc::clone(&slowest_202);
        clients.spawn(async move {
            tokio::time::sleep(BETWEEN_UPLOADS * i as u32).await;
            let state = upload_and_poll(&client, &base, i, &seen, &slowest).await;
            lock(&seen)[i] = state;
        });
    }
    let redraw = !args.no_redraw && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let states = lock(&seen).clone();
                let o = lock(&optimizer);
                table(started.elapsed(), &states, &o, redraw);
            }
            next = clients.join_next() => if next.is_none() { break },
            _ = tokio::time::sleep_until(started + GIVE_UP) => {
                println!("gave up after {GIVE_UP:?}");
                clients.abort_all();
                break;
            }
        }
    }
    let states = lock(&seen).clone();
    table(started.elapsed(), &states, &lock(&optimizer), false);
    println!(
        "the slowest 202 took {} ms (the optimizer was failing; nobody waited for it)",
        lock(&slowest_202).as_millis()
    );
    gw.shutdown().await;
    let dead_letters = dlq_attempts(&url, &names).await;
    delete_queues(&url, &names).await;

    let poison_calls = {
        let o = lock(&optimizer);
        o.calls
            .iter()
            .filter(|(id, _)| id.starts_with("poison:"))
            .map(|(_, n)| *n)
            .sum::<u32>()
    };
    let good = UPLOADS - 1;
    let done = states
        .iter()
        .enumerate()
        .filter(|(i, s)| *i != POISON && **s == Seen::Done)
        .count();
    let dead = states[POISON] == Seen::Dead;
    let ok =
        done == good && dead && poison_calls == MAX_ATTEMPTS && dead_letters == Some(MAX_ATTEMPTS);
    println!(
        "uploads: {UPLOADS}, done: {done}/{good}, dead: {} (replayed {poison_calls} times, \
         {} in the DLQ), {}",
        usize::from(dead),
        dead_letters.map_or("not found".to_string(), |a| format!("{a} attempts")),
        if ok { "ok" } else { "NOT OK" }
    );
    if ok { 0 } else { EXIT_FAILURE }
}

/// The optimizer: 503 during the outage, 500 for a corrupt image, else 200.
/// Counts calls per job (the corrupt one's under "poison:ID").
async fn optimizer_upstream(
    optimizer: Arc<Mutex<Optimizer>>,
    outage_from: Arc<OnceLock<Instant>>,
) -> std::io::Result<std::net::SocketAddr> {
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let optimizer = Arc::clone(&optimizer);
        async move {
            let poison = body.as_ref() == POISON_BODY;
            let mut o = lock(&optimizer);
            if let Some(id) = headers.get("x-job-id").and_then(|v| v.to_str().ok()) {
                let key = if poison {
                    format!("poison:{id}")
                } else {
                    id.to_owned()
                };
                *o.calls.entry(key).or_default() += 1;
            }
            if outage_from.get().is_none_or(|t| t.elapsed() < OUTAGE) {
                o.failed += 1;
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "optimizer overloaded".to_string(),
                )
            } else if poison {
                o.failed += 1;
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot decode the image".to_string(),
                )
            } else {
                o.optimized += 1;
                (StatusCode::OK, format!("optimized {} bytes", body.len()))
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Uploads image `i`, then polls its job until it is done or dead.
async fn upload_and_poll(
    client: &reqwest::Client,
    base: &str,
    i: usize,
    seen: &Mutex<Vec<Seen>>,
    slowest_202: &Mutex<Duration>,
) -> Seen {
    let body: Vec<u8> = if i == POISON {
        POISON_BODY.to_vec()
    } else {
        format!("\u{89}PNG image {i}").into_bytes()
    };
    let sent_at = Instant::now();
    let sent = client
        .post(format!("{base}/optimize/image-{i}"))
        .timeout(T)
        .body(body)
        .send()
        .await;
    let Ok(resp) = sent else { return Seen::Refused };
    if resp.status().as_u16() != 202 {
        return Seen::Refused;
    }
    {
        let mut slowest = lock(slowest_202);
        *slowest = (*slowest).max(sent_at.elapsed());
    }
    let Ok(bytes) = resp.bytes().await else {
        return Seen::Refused;
    };
    let Some(id) = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["job_id"].as_str().map(str::to_owned))
    else {
        return Seen::Refused;
    };
    lock(seen)[i] = Seen::Queued;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(resp) = client
            .get(format!("{base}/jobs/{id}"))
            .timeout(T)
            .send()
            .await
        else {
            return Seen::Refused;
        };
        if resp
            .headers()
            .get("x-job-status")
            .is_some_and(|v| v == "done")
        {
            return Seen::Done;
        }
        let Ok(bytes) = resp.bytes().await else {
            return Seen::Refused;
        };
        let status = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned));
        let now = match status.as_deref() {
            Some("queued") => Seen::Queued,
            Some("retrying") => Seen::Retrying,
            Some("dead") => return Seen::Dead,
            _ => return Seen::Refused,
        };
        lock(seen)[i] = now;
    }
}

fn table(elapsed: Duration, states: &[Seen], o: &Optimizer, redraw: bool) {
    let count = |s: Seen| states.iter().filter(|x| **x == s).count();
    if redraw {
        print!("\x1b[2J\x1b[H");
    }
    let optimizer = if elapsed < OUTAGE {
        "failing (503)"
    } else {
        "recovered"
    };
    println!(
        "t={:>4.1}s  optimizer {optimizer:<14} calls ok {:>3} failed {:>3} | uploads: \
         to send {:>2}  queued {:>2}  retrying {:>2}  done {:>2}  dead {:>2}  refused {:>2}",
        elapsed.as_secs_f64(),
        o.optimized,
        o.failed,
        count(Seen::Uploading),
        count(Seen::Queued),
        count(Seen::Retrying),
        count(Seen::Done),
        count(Seen::Dead),
        count(Seen::Refused),
    );
}

/// The attempts the one dead letter records, if there is exactly one.
async fn dlq_attempts(url: &str, names: &QueueNames) -> Option<u32> {
    let dlq = DeadLetters::open(url, names.clone(), T).await.ok()?;
    let (letters, total) = dlq.list(10).await.ok()?;
    (total == 1).then(|| letters.first().map(|l| l.attempts))?
}

async fn delete_queues(url: &str, names: &QueueNames) {
    let Ok(conn) = topology::connect(url, T).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in names.all(MAX_ATTEMPTS) {
        let _ = tokio::time::timeout(
            T,
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
        )
        .await;
    }
    let _ = conn.close(200, "demo over".into()).await;
}

/// A lock that a panicked holder did not spoil: the demo's tallies stay
/// readable whatever happened.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
