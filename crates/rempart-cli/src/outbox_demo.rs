//! `rempart demo outbox`: seed 001 case 1, phase 2, live. The orders service
//! writes each order, its items and its `OrderCreated` in one transaction;
//! the relay publishes; a consumer applies each event once through its inbox
//! into a projection. Midway the broker is cut off (a TCP proxy in front of
//! NATS, or the in-process destination refusing), orders keep committing,
//! the outbox holds them, and they drain when the broker is back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use rempart::retry::Backoff;
use rempart_db::{Component, Db, Migration, with_pool};
use rempart_outbox::{
    ChannelDestination, CutProxy, Destination, Envelope, INBOX_SCHEMA, Incoming, NatsDestination,
    OUTBOX_SCHEMA, Outbox, OutboxStore, PublishError, Relay, RelayConfig, Routing, apply_incoming,
    jetstream_batch, message_id,
};

use crate::saga::runtime;
use crate::{EXIT_FAILURE, EXIT_USAGE};

/// The orders service's tables and the consumer's projection. `run` keeps
/// runs apart on a database given with --database; the projection has no
/// unique key on the message id, so an event applied twice would show.
const DEMO_SCHEMA: Component = Component {
    name: "demo_outbox",
    migrations: &[Migration {
        version: 1,
        name: "orders service and projection",
        sqlite: "
CREATE TABLE demo_orders (run VARCHAR(40) NOT NULL, id VARCHAR(100) PRIMARY KEY, customer VARCHAR(100) NOT NULL, total_cents BIGINT NOT NULL);
CREATE TABLE demo_order_items (order_id VARCHAR(100) NOT NULL, sku VARCHAR(100) NOT NULL, quantity INTEGER NOT NULL, price_cents BIGINT NOT NULL);
CREATE TABLE demo_order_projection (n INTEGER PRIMARY KEY AUTOINCREMENT, run VARCHAR(40) NOT NULL, message_id VARCHAR(100) NOT NULL, order_id VARCHAR(100) NOT NULL, total_cents BIGINT NOT NULL);
",
        postgres: "
CREATE TABLE demo_orders (run VARCHAR(40) NOT NULL, id VARCHAR(100) PRIMARY KEY, customer VARCHAR(100) NOT NULL, total_cents BIGINT NOT NULL);
CREATE TABLE demo_order_items (order_id VARCHAR(100) NOT NULL, sku VARCHAR(100) NOT NULL, quantity INTEGER NOT NULL, price_cents BIGINT NOT NULL);
CREATE TABLE demo_order_projection (n BIGSERIAL PRIMARY KEY, run VARCHAR(40) NOT NULL, message_id VARCHAR(100) NOT NULL, order_id VARCHAR(100) NOT NULL, total_cents BIGINT NOT NULL);
",
    }],
};

/// The demo's options.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxDemoArgs {
    /// How long orders keep coming, e.g. "20s"; the broker is cut off from
    /// a quarter to a little past half of it.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Orders per second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub rate: u32,
    /// NATS with JetStream, e.g. nats://127.0.0.1:4222 (default: an
    /// in-process destination, so the demo needs nothing but this binary).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// The database (default: SQLite in a new temporary directory).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

type Failure = (u8, String);

/// Runs the demo; returns the exit code.
pub(crate) fn run(args: OutboxDemoArgs) -> u8 {
    let runtime = match runtime(2) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

/// The in-process destination, refusing while the demo's outage lasts.
struct Cuttable<D> {
    inner: D,
    cut: Arc<AtomicBool>,
}

impl<D: Destination> Destination for Cuttable<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, message: &Envelope) -> Result<(), PublishError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(PublishError::transient(
                "the broker is unreachable (demo outage)",
            ));
        }
        self.inner.publish(message).await
    }
}

/// The consumer's handler: one projection row per event, in the inbox's transaction.
macro_rules! projection {
    ($name:ident, $db:ty) => {
        async fn $name(
            tx: &mut sqlx::Transaction<'static, $db>,
            m: &Incoming,
        ) -> Result<(), String> {
            let e: serde_json::Value =
                serde_json::from_slice(&m.payload).map_err(|e| e.to_string())?;
            sqlx::query(
                "INSERT INTO demo_order_projection (run, message_id, order_id, total_cents) VALUES ($1, $2, $3, $4)",
            )
            .bind(e["run"].as_str().unwrap_or_default())
            .bind(&m.id)
            .bind(e["order_id"].as_str().unwrap_or_default())
            .bind(e["total_cents"].as_i64().unwrap_or_default())
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
        }
    };
}
projection!(project_pg, sqlx::Postgres);
projection!(project_sqlite, sqlx::Sqlite);

async fn open(args: &OutboxDemoArgs) -> Result<(Db, Option<tempfile::TempDir>), Failure> {
    let (url, dir) = match &args.database {
        Some(url) => (url.clone(), None),
        None => {
            let dir = tempfile::tempdir().map_err(|e| {
                (
                    EXIT_FAILURE,
                    format!("cannot create a temporary directory: {e}"),
                )
            })?;
            let url = format!("sqlite://{}", dir.path().join("orders.db").display());
            (url, Some(dir))
        }
    };
    let db = Db::open(&url).await.map_err(crate::saga::db_failure)?;
    for c in [&OUTBOX_SCHEMA, &INBOX_SCHEMA, &DEMO_SCHEMA] {
        db.migrate(c).await.map_err(crate::saga::db_failure)?;
    }
    println!("database:    {}", rempart_db::redact(&url));
    Ok((db, dir))
}

/// The orders service: one order per tick, with its items and its event in one transaction.
async fn place_order(db: &Db, run: &str, n: u64) -> Result<(), String> {
    let order_id = format!("{run}-{n}");
    let items: Vec<(String, i64, i64)> = (0..1 + n % 3)
        .map(|i| {
            (
                format!("sku-{}", (n + i) % 17),
                1 + (i as i64),
                250 + 100 * (i as i64),
            )
        })
        .collect();
    let total: i64 = items.iter().map(|(_, q, p)| q * p).sum();
    let event = rempart_outbox::Message::new(
        "order",
        &order_id,
        "OrderCreated",
        serde_json::json!({"run": run, "order_id": order_id, "customer": format!("c{}", n % 7), "total_cents": total, "items": items.len()}),
    )
    .map_err(|e| e.to_string())?;
    with_pool!(db, pool => {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO demo_orders (run, id, customer, total_cents) VALUES ($1, $2, $3, $4)")
            .bind(run).bind(&order_id).bind(format!("c{}", n % 7)).bind(total)
            .execute(&mut *tx).await.map_err(|e| e.to_string())?;
        for (sku, quantity, price) in &items {
            sqlx::query("INSERT INTO demo_order_items (order_id, sku, quantity, price_cents) VALUES ($1, $2, $3, $4)")
                .bind(&order_id).bind(sku).bind(*quantity as i32).bind(*price)
                .execute(&mut *tx).await.map_err(|e| e.to_string())?;
        }
        Outbox::enqueue(&mut tx, &event).await.map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    })
}

/// (events delivered, duplicates applied) for this run, from the projection.
async fn delivered(db: &Db, run: &str) -> Result<(i64, i64), String> {
    with_pool!(db, pool => {
        sqlx::query_as(
            "SELECT COUNT(DISTINCT message_id), COUNT(*) - COUNT(DISTINCT message_id) FROM demo_order_projection WHERE run = $1",
        )
        .bind(run)
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())
    })
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(100),
        publish_timeout: Duration::from_secs(2),
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(2),
        },
        ..RelayConfig::default()
    }
}

type Local = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// The broker side: a relay running, a consumer to poll beside the story
/// (not spawned: an async fn handler's future is not provably `Send` for
/// every lifetime, a rustc limitation), and the cut switch.
struct Broker {
    cut: Box<dyn Fn(bool) + Send + Sync>,
    relay: tokio::task::JoinHandle<()>,
    consumer: Local,
    cleanup: Option<(jetstream::Context, String)>,
}

async fn in_process(db: &Db, store: OutboxStore, stop: Arc<AtomicBool>) -> Broker {
    let (dest, mut rx) = ChannelDestination::new(1024, Routing::prefixed("demo"));
    let cut = Arc::new(AtomicBool::new(false));
    let relay = Relay::new(
        store,
        Cuttable {
            inner: dest,
            cut: cut.clone(),
        },
        relay_config(),
    );
    let relay_stop = stop.clone();
    let relay_task = tokio::spawn(async move {
        let _ = relay.run(until(relay_stop)).await;
    });
    let db = db.clone();
    let consumer = Box::pin(async move {
        while let Some(d) = until_or(&stop, rx.recv()).await.flatten() {
            let incoming = Incoming {
                id: message_id(d.id),
                subject: d.subject,
                headers: d.headers,
                payload: d.payload.into_bytes().into(),
            };
            // Applied until it sticks: a busy database is retried, not skipped.
            loop {
                let r = match db.pool() {
                    rempart_db::Pool::Postgres(p) => {
                        apply_incoming(p, "projection", &incoming, &project_pg).await
                    }
                    rempart_db::Pool::Sqlite(p) => {
                        apply_incoming(p, "projection", &incoming, &project_sqlite).await
                    }
                };
                if r.is_ok() || stop.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    println!(
        "destination: in-process channel (no --nats given); the outage makes it refuse every publish"
    );
    Broker {
        cut: Box::new(move |on| cut.store(on, Ordering::SeqCst)),
        relay: relay_task,
        consumer,
        cleanup: None,
    }
}

async fn nats(
    url: &str,
    db: &Db,
    store: OutboxStore,
    run: &str,
    stop: Arc<AtomicBool>,
) -> Result<Broker, Failure> {
    let addr = url.parse::<async_nats::ServerAddr>().map_err(|e| {
        (
            EXIT_USAGE,
            format!("--nats {url:?} is not a NATS URL such as nats://127.0.0.1:4222 ({e})"),
        )
    })?;
    let unreachable = |e: String| {
        (
            EXIT_FAILURE,
            format!(
                "cannot connect to NATS at {url}: {e}; check that nats-server runs with JetStream (-js)"
            ),
        )
    };
    let upstream: SocketAddr = tokio::net::lookup_host((addr.host(), addr.port()))
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let direct = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url))
        .await
        .map_err(|_| unreachable("no answer within 5s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let js = jetstream::new(direct);
    let prefix = format!("demo{run}");
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| unreachable(format!("creating the demo's stream: {e}")))?;
    let source: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("projection".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .map_err(|e| unreachable(format!("creating the demo's consumer: {e}")))?;
    let proxy = CutProxy::start(upstream)
        .await
        .map_err(|e| (EXIT_FAILURE, format!("cannot start the demo's proxy: {e}")))?;
    let through = format!("nats://{}", proxy.addr());
    let dest =
        NatsDestination::connect(&through, Routing::prefixed(&prefix), Duration::from_secs(2))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    let relay = Relay::new(store, dest, relay_config());
    let relay_stop = stop.clone();
    let relay_task = tokio::spawn(async move {
        let _ = relay.run(until(relay_stop)).await;
    });
    let db = db.clone();
    let consumer = Box::pin(async move {
        let (wait, retry) = (Duration::from_millis(200), Duration::from_millis(200));
        while !stop.load(Ordering::SeqCst) {
            let r = match db.pool() {
                rempart_db::Pool::Postgres(p) => {
                    jetstream_batch(&source, p, "projection", &project_pg, 200, wait, retry).await
                }
                rempart_db::Pool::Sqlite(p) => {
                    jetstream_batch(&source, p, "projection", &project_sqlite, 200, wait, retry)
                        .await
                }
            };
            if r.is_err() {
                tokio::time::sleep(retry).await;
            }
        }
    });
    println!(
        "destination: NATS JetStream at {url}, stream {}, through a TCP proxy at {through} that the demo cuts",
        prefix.to_uppercase()
    );
    let proxy = Arc::new(proxy);
    Ok(Broker {
        cut: Box::new(move |on| proxy.cut(on)),
        relay: relay_task,
        consumer,
        cleanup: Some((js, prefix.to_uppercase())),
    })
}

async fn until(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `f`'s output, or `None` once `stop` is set.
async fn until_or<T>(stop: &Arc<AtomicBool>, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        v = f => Some(v),
        _ = until(stop.clone()) => None,
    }
}

async fn demo(args: OutboxDemoArgs) -> Result<(), Failure> {
    let (db, _dir) = open(&args).await?;
    let store = OutboxStore::new(db.clone());
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let mut broker = match &args.nats {
        Some(url) => nats(url, &db, store.clone(), &run, stop.clone()).await?,
        None => in_process(&db, store.clone(), stop.clone()).await,
    };
    let consumer = std::mem::replace(&mut broker.consumer, Box::pin(async {}));
    let story = async {
        let r = story(&args, &db, &store, &run, &broker).await;
        stop.store(true, Ordering::SeqCst);
        r
    };
    let (result, ()) = tokio::join!(story, consumer);
    broker.relay.abort();
    if let Some((js, stream)) = broker.cleanup {
        let _ = js.delete_stream(stream).await;
    }
    let (n, got, dup) = result?;
    println!();
    println!("orders: {n}, events delivered: {got}, duplicates applied: {dup}");
    if dup != 0 {
        return Err((EXIT_FAILURE, format!("{dup} events were applied twice")));
    }
    Ok(())
}

/// Orders for `args.duration`, the cut midway, a table row a second until
/// everything is delivered.
async fn story(
    args: &OutboxDemoArgs,
    db: &Db,
    store: &OutboxStore,
    run: &str,
    broker: &Broker,
) -> Result<(u64, i64, i64), Failure> {
    let (cut_from, cut_to) = (args.duration / 4, args.duration * 11 / 20);
    println!(
        "orders:      {} a second for {:?}; the broker is cut off from {:?} to {:?}",
        args.rate, args.duration, cut_from, cut_to
    );
    println!();
    println!(
        "{:>6}  {:>8}  {:>8}  {:>12}  {:>10}  {:>9}  broker",
        "time", "orders", "pending", "oldest (s)", "delivered", "dup. app."
    );

    let orders = Arc::new(AtomicU64::new(0));
    let producing = Arc::new(AtomicBool::new(true));
    let mut producer = Some({
        let (db, run, orders, producing) = (
            db.clone(),
            run.to_owned(),
            orders.clone(),
            producing.clone(),
        );
        let every = Duration::from_secs(1) / args.rate;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while producing.load(Ordering::SeqCst) {
                tick.tick().await;
                let n = orders.load(Ordering::SeqCst) + 1;
                match place_order(&db, &run, n).await {
                    Ok(()) => {
                        orders.store(n, Ordering::SeqCst);
                    }
                    Err(e) => eprintln!("order {n} not placed (rolled back): {e}"),
                }
            }
        })
    });

    let started = tokio::time::Instant::now();
    let drain_deadline = args.duration + Duration::from_secs(60);
    let mut cut = false;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let result = loop {
        second.tick().await;
        let t = started.elapsed();
        let want_cut = t >= cut_from && t < cut_to;
        if want_cut != cut {
            cut = want_cut;
            (broker.cut)(cut);
        }
        if t >= args.duration
            && let Some(p) = producer.take()
        {
            // The last order commits before the counts below are read.
            producing.store(false, Ordering::SeqCst);
            let _ = p.await;
        }
        let backlog = store.backlog().await.map_err(crate::saga::db_failure)?;
        let (got, dup) = delivered(db, run).await.map_err(|e| (EXIT_FAILURE, e))?;
        let n = orders.load(Ordering::SeqCst);
        println!(
            "{:>5}s  {:>8}  {:>8}  {:>12.1}  {:>10}  {:>9}  {}",
            t.as_secs(),
            n,
            backlog.pending,
            backlog.oldest_age_seconds,
            got,
            dup,
            if cut { "CUT" } else { "up" }
        );
        let done = producer.is_none()
            && backlog.pending == 0
            && got == i64::try_from(n).unwrap_or(i64::MAX);
        if done {
            break Ok((n, got, dup));
        }
        if t > drain_deadline {
            break Err((
                EXIT_FAILURE,
                format!(
                    "not drained {drain_deadline:?} in: {} pending, {got} of {n} delivered",
                    backlog.pending
                ),
            ));
        }
    };
    producing.store(false, Ordering::SeqCst);
    if let Some(p) = producer {
        let _ = p.await;
    }
    result
}
