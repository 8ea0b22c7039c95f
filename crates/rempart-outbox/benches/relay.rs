//! The outbox's speed on this machine, against the real PostgreSQL and
//! NATS JetStream (127.0.0.1:5432 and :4222), each run on its own schema and
//! stream. Not criterion: two of the three figures are a drain rate and a
//! latency percentile under a fixed offered load, which criterion's
//! per-iteration timing does not express. Each figure is the median of
//! `RUNS` runs (default 5).
//!
//! 1. `relay`: 20,000 pending rows (one per order) drained to JetStream by
//!    one relay (`Relay::drain`), once per `PIPELINES` setting (cycles in
//!    flight; default `1,4`), in msg/s; beside them, in the same run and
//!    in rotating order, the raw async-nats JetStream publish rate with
//!    async acks (up to 1,024 in flight), the limit here.
//! 2. `lag`: orders committed at a fixed `RATE`/s (default 5,000; `WRITERS`
//!    writers, default 32, on a pool of their own, one order and its
//!    `OrderCreated` per transaction) for `SECONDS` (default 10) while one
//!    relay runs with the last `PIPELINES` setting; lag = broker ack time −
//!    the row's `created_at` (its transaction's start, a millisecond or so
//!    before its commit), p50/p99/max; the offered rate actually reached and
//!    the writers' own BEGIN..COMMIT p50/p99 are printed beside it.
//!    `TRIGGERS=waiting,always` alternates the outbox's trigger with one
//!    notifying at every enqueue (the pre-v3 one); `TRACE=1` logs every
//!    100 ms the rows committed, published and pending, the relay's cycles
//!    and claimed rows, its idle pipelines and whether writers notify it.
//! 3. `enqueue`: a business transaction (an order and 3 items, 4 inserts)
//!    with and without `Outbox::enqueue`, one connection, median latency.
//!
//! `cargo bench -p rempart-outbox --bench relay` (all), or name some:
//! `cargo bench -p rempart-outbox --bench relay -- relay enqueue`.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_nats::jetstream;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rempart_db::test_support::TestDb;
use rempart_db::{Db, OpenOptions, Pool, with_pool};
use rempart_outbox::{
    Destination, Envelope, Message, NatsDestination, OUTBOX_SCHEMA, Outbox, OutboxMetrics,
    OutboxStore, PublishError, Relay, RelayConfig, Routing,
};

const NATS: &str = "nats://127.0.0.1:4222";
const ROWS: usize = 20_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runs() -> usize {
    usize::try_from(env_or("RUNS", 5)).unwrap()
}

/// `PIPELINES=1,4`: the relay's settings to compare (the last one is the lag's).
fn pipelines() -> Vec<u32> {
    let v = std::env::var("PIPELINES").unwrap_or_else(|_| "1,4".into());
    v.split(',')
        .map(|p| p.trim().parse().expect("PIPELINES: numbers, e.g. 1,4"))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn payload(n: usize) -> serde_json::Value {
    serde_json::json!({"order_id": format!("o{n}"), "customer": format!("c{}", n % 97), "total_cents": 1250 + n % 1000, "items": 3})
}

async fn stream(js: &jetstream::Context, prefix: &str) {
    js.create_stream(jetstream::stream::Config {
        name: prefix.to_uppercase(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("nats-server -js on 4222");
}

async fn pg() -> (TestDb, OutboxStore) {
    let t = TestDb::postgres().await.expect("PostgreSQL on 5432");
    t.db.migrate(&OUTBOX_SCHEMA).await.unwrap();
    let store = OutboxStore::new(t.db.clone());
    (t, store)
}

/// The raw limit: JetStream publishes with `Nats-Msg-Id`, acks awaited
/// asynchronously, up to 1,024 in flight.
async fn raw_publish_rate(js: &jetstream::Context, prefix: &str) -> f64 {
    let body = serde_json::to_vec(&payload(1)).unwrap();
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for n in 0..ROWS {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
        h.insert("rempart-seq", "1");
        let ack = js
            .publish_with_headers(
                format!("{prefix}.order.OrderCreated"),
                h,
                body.clone().into(),
            )
            .await
            .unwrap();
        acks.push(ack.into_future());
        if acks.len() >= 1024 {
            acks.next().await.unwrap().unwrap();
        }
        let _ = n;
    }
    while let Some(a) = acks.next().await {
        a.unwrap();
    }
    ROWS as f64 / started.elapsed().as_secs_f64()
}

/// Pending rows written straight into the table (one order each), fast.
async fn fill(db: &Db, rows: usize) {
    let Pool::Postgres(pool) = db.pool() else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload)
         SELECT gen_random_uuid(), 'order', 'o' || g, 1, 'OrderCreated',
                jsonb_build_object('order_id', 'o' || g, 'customer', 'c' || (g % 97), 'total_cents', 1250 + g % 1000, 'items', 3)
         FROM generate_series(1, $1) g",
    )
    .bind(i64::try_from(rows).unwrap())
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE outbox").execute(pool).await.unwrap();
}

async fn relay_rate(client: &async_nats::Client, prefix: &str, config: &RelayConfig) -> f64 {
    let (t, store) = pg().await;
    fill(&t.db, ROWS).await;
    let dest = NatsDestination::new(
        client.clone(),
        Routing::prefixed(prefix),
        Duration::from_secs(5),
    );
    let relay = Relay::new(store.clone(), dest, config.clone());
    let started = Instant::now();
    let published = relay.drain().await.unwrap();
    let rate = published as f64 / started.elapsed().as_secs_f64();
    assert_eq!(published, ROWS, "every row published");
    rate
}

/// The relay at each of `pipelines` (cycles in flight), beside the raw
/// rate; the order rotates from run to run so drift in the machine's load
/// hits each alike.
async fn relay_bench(config: &RelayConfig, pipelines: &[u32]) {
    let client = async_nats::connect(NATS).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut relay = vec![Vec::new(); pipelines.len()];
    let mut raw = Vec::new();
    for i in 0..runs() {
        let prefix = format!("b{}", uuid::Uuid::new_v4().simple());
        stream(&js, &prefix).await;
        let slots = pipelines.len() + 1;
        let mut line = format!("  run {i}:");
        for k in 0..slots {
            let slot = (k + i) % slots;
            if slot == pipelines.len() {
                let w = raw_publish_rate(&js, &prefix).await;
                line += &format!(" raw JetStream {w:.0} msg/s;");
                raw.push(w);
            } else {
                let c = RelayConfig {
                    pipelines: pipelines[slot],
                    ..config.clone()
                };
                let r = relay_rate(&client, &prefix, &c).await;
                line += &format!(" relay x{} {r:.0} msg/s;", pipelines[slot]);
                relay[slot].push(r);
            }
        }
        println!("{line}");
        js.delete_stream(prefix.to_uppercase()).await.unwrap();
    }
    let w = median(raw);
    for (p, rates) in pipelines.iter().zip(relay) {
        let r = median(rates);
        println!(
            "RELAY pipelines {p}: median {r:.0} msg/s, raw JetStream publish median {w:.0} msg/s, ratio {:.2}",
            r / w
        );
    }
}

/// Records each message's lag (ack time − `created_at`) after the publish.
struct Timed<D> {
    inner: D,
    lags_ms: Arc<Mutex<Vec<f64>>>,
}

// The wall clock, as PostgreSQL's `created_at` is: the lag spans both.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

impl<D: Destination> Destination for Timed<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, message: &Envelope) -> Result<(), PublishError> {
        let r = self.inner.publish(message).await;
        if r.is_ok() {
            let lag = now_ms() - message.created_ms as f64;
            self.lags_ms.lock().unwrap().push(lag);
        }
        r
    }
}

async fn lag_bench(config: &RelayConfig) {
    // `RATE`: the offered orders/s (default 5,000); `SECONDS` (default 10).
    let rate = env_or("RATE", 5_000).max(1);
    let seconds = env_or("SECONDS", 10);
    // `TRACE=1`: a line every 100 ms (pending rows, relay cycles, claims, idleness).
    let trace = env_or("TRACE", 0) == 1;
    let writers = env_or("WRITERS", 32);
    let client = async_nats::connect(NATS).await.unwrap();
    let js = jetstream::new(client.clone());
    // `TRIGGERS=waiting,always`: the outbox's trigger (notify only while a
    // relay waits) against the pre-v3 one (notify at every enqueue), alternated.
    let triggers: Vec<String> = std::env::var("TRIGGERS")
        .unwrap_or_else(|_| "waiting".into())
        .split(',')
        .map(|t| t.trim().to_owned())
        .collect();
    let (mut p99s, mut offered) = (
        vec![Vec::new(); triggers.len()],
        vec![Vec::new(); triggers.len()],
    );
    for i in 0..runs() * triggers.len() {
        let slot = i % triggers.len();
        let trigger = &triggers[slot];
        let prefix = format!("l{}", uuid::Uuid::new_v4().simple());
        stream(&js, &prefix).await;
        let (t, store) = pg().await;
        if trigger == "always" {
            always_notify(&store).await;
        }
        // The writers' own pool, a connection each: on the relay's pool
        // (8) they queued for connections, not for the database.
        let opts = OpenOptions {
            max_connections: u32::try_from(writers).unwrap(),
            ..OpenOptions::default()
        };
        let writer_db = Db::open_with(&t.url, &opts).await.unwrap();
        let lags = Arc::new(Mutex::new(Vec::new()));
        let dest = Timed {
            inner: NatsDestination::new(
                client.clone(),
                Routing::prefixed(&prefix),
                Duration::from_secs(5),
            ),
            lags_ms: lags.clone(),
        };
        let metrics = OutboxMetrics::default();
        let relay =
            Arc::new(Relay::new(store.clone(), dest, config.clone()).with_metrics(metrics.clone()));
        let committed_so_far = Arc::new(AtomicU64::new(0));
        let commit_ms = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            })
        };
        let started = Instant::now();
        let sampler = trace.then(|| {
            tokio::spawn(sample(
                store.clone(),
                metrics.clone(),
                committed_so_far.clone(),
                lags.clone(),
                format!("{trigger} run {}", i / triggers.len()),
            ))
        });
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let db = writer_db.clone();
                let (committed_so_far, commit_ms) = (committed_so_far.clone(), commit_ms.clone());
                tokio::spawn(async move {
                    let every = Duration::from_nanos(1_000_000_000 * writers / rate);
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut n = 0u64;
                    let end = Instant::now() + Duration::from_secs(seconds);
                    while Instant::now() < end {
                        tick.tick().await;
                        let m = Message::new(
                            "order",
                            format!("w{w}-{n}"),
                            "OrderCreated",
                            payload(n as usize),
                        )
                        .unwrap();
                        let began = Instant::now();
                        with_pool!(db, pool => {
                            let mut tx = pool.begin().await.unwrap();
                            Outbox::enqueue(&mut tx, &m).await.unwrap();
                            tx.commit().await.unwrap();
                        });
                        // BEGIN to COMMIT's return: the writers' share of the lag.
                        commit_ms
                            .lock()
                            .unwrap()
                            .push(began.elapsed().as_secs_f64() * 1000.0);
                        committed_so_far.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut committed = 0;
        for w in tasks {
            committed += w.await.unwrap();
        }
        let offered_rate = committed as f64 / started.elapsed().as_secs_f64();
        while store.pending().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        if let Some(s) = sampler {
            s.abort();
        }
        writer_db.close().await;
        let mut c = commit_ms.lock().unwrap().clone();
        c.sort_by(|a, b| a.total_cmp(b));
        let activity = metrics.relay_activity();
        let mut l = lags.lock().unwrap().clone();
        l.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99, max) = (percentile(&l, 0.5), percentile(&l, 0.99), l[l.len() - 1]);
        println!(
            "  run {}: trigger {trigger}, {writers} writers, relay pipelines {}, offered {offered_rate:.0} orders/s ({committed} committed), lag p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; writers' BEGIN..COMMIT p50 {:.1} ms, p99 {:.1} ms; relay {} cycles, {} rows claimed",
            i / triggers.len(),
            config.pipelines,
            percentile(&c, 0.5),
            percentile(&c, 0.99),
            activity.cycles,
            activity.claimed,
        );
        p99s[slot].push(p99);
        offered[slot].push(offered_rate);
        js.delete_stream(prefix.to_uppercase()).await.unwrap();
    }
    for (slot, trigger) in triggers.iter().enumerate() {
        println!(
            "LAG (trigger {trigger}) median p99 {:.1} ms at a median offered {:.0} orders/s",
            median(p99s[slot].clone()),
            median(offered[slot].clone())
        );
    }
}

/// Every 100 ms until aborted, one line on stderr: rows committed and
/// published so far, pending, the relay's cycles and rows claimed in the
/// interval, its idle pipelines and whether writers are asked to notify.
async fn sample(
    store: OutboxStore,
    metrics: OutboxMetrics,
    committed: Arc<AtomicU64>,
    lags: Arc<Mutex<Vec<f64>>>,
    label: String,
) {
    let started = Instant::now();
    let mut last = metrics.relay_activity();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let pending = store.pending().await.unwrap_or(u64::MAX);
        let a = metrics.relay_activity();
        let published = lags.lock().unwrap().len();
        eprintln!(
            "[{label}] t {:>6} ms committed {:>6} published {:>6} pending {:>5} cycles +{:>3} claimed +{:>4} idle {} waiting {}",
            started.elapsed().as_millis(),
            committed.load(Ordering::Relaxed),
            published,
            pending,
            a.cycles - last.cycles,
            a.claimed - last.claimed,
            a.idle_pipelines,
            a.waiting,
        );
        last = a;
    }
}

/// The pre-v3 trigger: a `NOTIFY` at every enqueue, whether a relay waits or not.
async fn always_notify(store: &OutboxStore) {
    with_pool!(store.db(), pool => {
        sqlx::raw_sql(
            "CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify('rempart_outbox', TG_TABLE_SCHEMA); RETURN NULL; END $$",
        )
        .execute(pool)
        .await
        .unwrap();
    });
}

/// An order and its 3 items, and with `outbox` its event, in one transaction.
async fn business_tx(db: &Db, n: usize, outbox: bool) {
    let order = format!("o{n}-{}", uuid::Uuid::new_v4().simple());
    with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO b_orders (id, customer, total_cents) VALUES ($1, $2, $3)")
            .bind(&order).bind("c1").bind(1250i64)
            .execute(&mut *tx).await.unwrap();
        for i in 0..3i64 {
            sqlx::query("INSERT INTO b_order_items (order_id, sku, quantity, price_cents) VALUES ($1, $2, $3, $4)")
                .bind(&order).bind(format!("sku-{i}")).bind(1i32).bind(250i64)
                .execute(&mut *tx).await.unwrap();
        }
        if outbox {
            let m = Message::new("order", &order, "OrderCreated", payload(n)).unwrap();
            Outbox::enqueue(&mut tx, &m).await.unwrap();
        }
        tx.commit().await.unwrap();
    });
}

async fn enqueue_bench(backend: &str) {
    const TXS: usize = 2_000;
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&OUTBOX_SCHEMA).await.unwrap();
    with_pool!(t.db, pool => {
        for sql in [
            "CREATE TABLE b_orders (id VARCHAR(100) PRIMARY KEY, customer VARCHAR(100) NOT NULL, total_cents BIGINT NOT NULL)",
            "CREATE TABLE b_order_items (order_id VARCHAR(100) NOT NULL, sku VARCHAR(100) NOT NULL, quantity INTEGER NOT NULL, price_cents BIGINT NOT NULL)",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
    });
    let (mut without, mut with) = (Vec::new(), Vec::new());
    // Warm-up, then alternating blocks so both see the same table sizes and load.
    for n in 0..200 {
        business_tx(&t.db, n, n % 2 == 0).await;
    }
    for i in 0..runs() {
        for outbox in [false, true] {
            let started = Instant::now();
            for n in 0..TXS {
                business_tx(&t.db, n, outbox).await;
            }
            let per = started.elapsed().as_secs_f64() * 1e6 / TXS as f64;
            if outbox {
                with.push(per)
            } else {
                without.push(per)
            }
        }
        println!(
            "  run {i} {backend}: without {:.1} µs, with enqueue {:.1} µs per transaction",
            without[i], with[i]
        );
    }
    let (a, b) = (median(without), median(with));
    println!(
        "ENQUEUE {backend}: median {a:.1} µs without, {b:.1} µs with enqueue: +{:.1} %",
        (b / a - 1.0) * 100.0
    );
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let on = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pipelines = pipelines();
    let config = RelayConfig {
        aggregates_per_claim: 1024,
        pipelines: *pipelines.last().expect("PIPELINES names one at least"),
        ..RelayConfig::default()
    };
    rt.block_on(async {
        if on("relay") {
            relay_bench(&config, &pipelines).await;
        }
        if on("lag") {
            lag_bench(&config).await;
        }
        if on("enqueue") {
            enqueue_bench("postgres").await;
            enqueue_bench("sqlite").await;
        }
    });
}
