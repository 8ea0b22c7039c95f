//! Broker outages while orders keep committing, on PostgreSQL: a private
//! `nats-server -js` (free port, its own store directory) stopped for 30 s
//! and restarted on the same port and store; RabbitMQ cut off for 30 s by a
//! TCP proxy that drops every connection and refuses new ones. Afterwards
//! every committed message has been applied once through the inbox, each
//! order's events in order. `REMPART_OUTBOX_OUTAGE_SECS=120` lengthens both.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use rempart::retry::Backoff;
use rempart_db::test_support::TestDb;
use rempart_outbox::{
    AmqpDestination, CutProxy, Destination, Incoming, Message, NatsDestination, Outbox,
    OutboxStore, Relay, RelayConfig, Routing, message_id,
};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

const AMQP_ADDR: &str = "127.0.0.1:5672";

fn outage() -> Duration {
    let secs = std::env::var("REMPART_OUTBOX_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Retries and breaker paced for a test: the outage is still 30 s long.
fn outage_config() -> RelayConfig {
    RelayConfig {
        aggregates_per_claim: 64,
        publish_timeout: Duration::from_secs(2),
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(1),
        },
        ..fast_config()
    }
}

/// The business table and the projection. `applied` has no unique key on
/// the message id, so a message applied twice shows as two rows.
async fn tables(t: &TestDb) -> PgPool {
    let rempart_db::Pool::Postgres(pool) = t.db.pool() else {
        unreachable!()
    };
    for sql in [
        "CREATE TABLE orders (id VARCHAR(100) PRIMARY KEY, total_cents BIGINT NOT NULL)",
        "CREATE TABLE applied (n BIGSERIAL PRIMARY KEY, message_id VARCHAR(100) NOT NULL,
           aggregate_id VARCHAR(200) NOT NULL, seq BIGINT NOT NULL)",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    pool.clone()
}

/// The consumer's handler: one projection row per message.
async fn project(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    m: &Incoming,
) -> Result<(), String> {
    let aggregate = m.headers.get("rempart-aggregate-id").cloned();
    let seq = m
        .headers
        .get("rempart-seq")
        .and_then(|s| s.parse::<i64>().ok());
    let (Some(aggregate), Some(seq)) = (aggregate, seq) else {
        return Err(format!("message {} without its aggregate headers", m.id));
    };
    sqlx::query("INSERT INTO applied (message_id, aggregate_id, seq) VALUES ($1, $2, $3)")
        .bind(&m.id)
        .bind(aggregate)
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The orders service: until `stop`, an order per transaction with its
/// `OrderCreated`, and the previous order's `OrderPaid` in the same commit.
/// Returns the ids of every committed message.
fn produce(pool: PgPool, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<Vec<Uuid>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut i = 0u64;
        while !*stop.borrow() {
            i += 1;
            let order = format!("o{i}");
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO orders (id, total_cents) VALUES ($1, $2)")
                .bind(&order)
                .bind(i64::try_from(i).unwrap())
                .execute(&mut *tx)
                .await
                .unwrap();
            let mut batch = vec![order_created(&order, i)];
            if i > 1 {
                let paid = format!("o{}", i - 1);
                batch.push(
                    Message::new(
                        "order",
                        paid,
                        "OrderPaid",
                        serde_json::json!({"paid": true}),
                    )
                    .unwrap(),
                );
            }
            for m in &batch {
                Outbox::enqueue(&mut tx, m).await.unwrap();
            }
            tx.commit().await.unwrap();
            ids.extend(batch.iter().map(|m| m.id));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ids
    })
}

async fn distinct_applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(DISTINCT message_id) FROM applied")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The story: orders flow, the broker goes away for the outage while orders
/// keep committing, it comes back; then the invariants.
async fn through_an_outage(
    pool: &PgPool,
    store: &OutboxStore,
    cut: impl AsyncFnOnce(),
    restore: impl AsyncFnOnce(),
) {
    let (stop, stopped) = watch::channel(false);
    let producer = produce(pool.clone(), stopped);
    wait_for(
        "events flow before the outage",
        Duration::from_secs(30),
        async || distinct_applied(pool).await > 0,
    )
    .await;
    cut().await;
    tokio::time::sleep(outage()).await;
    let held = store.pending().await.unwrap();
    assert!(
        held > 0,
        "orders committed during the outage wait in the outbox"
    );
    restore().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send_replace(true);
    let committed = producer.await.unwrap();
    let n = i64::try_from(committed.len()).unwrap();
    wait_for(
        "every committed message applied",
        Duration::from_secs(120),
        async || distinct_applied(pool).await == n,
    )
    .await;
    // Duplicates still in flight get a moment to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_applied_once_in_order(pool, &committed).await;
    assert_eq!(store.pending().await.unwrap(), 0);
    eprintln!("{n} messages committed, {held} held in the outbox at the end of the outage");
}

async fn assert_applied_once_in_order(pool: &PgPool, committed: &[Uuid]) {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT message_id, aggregate_id, seq FROM applied ORDER BY n")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut seen = HashSet::new();
    let twice: Vec<&String> = rows
        .iter()
        .filter(|r| !seen.insert(r.0.clone()))
        .map(|r| &r.0)
        .collect();
    assert!(twice.is_empty(), "applied twice: {twice:?}");
    let expected: HashSet<String> = committed.iter().map(|id| message_id(*id)).collect();
    let lost: Vec<&String> = expected.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "lost: {} of {}",
        lost.len(),
        expected.len()
    );
    assert_eq!(seen, expected, "applied messages nobody committed");
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (id, aggregate, seq) in &rows {
        let prev = last.insert(aggregate, *seq).unwrap_or(0);
        assert_eq!(
            *seq,
            prev + 1,
            "{aggregate}: {id} (seq {seq}) after seq {prev}"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` of the test's own.
struct NatsServer {
    child: tokio::process::Child,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    fn spawn(port: u16, store: &Path) -> tokio::process::Child {
        tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server on the PATH")
    }

    async fn start() -> NatsServer {
        let store = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, store.path());
        let s = NatsServer { child, port, store };
        s.ready().await;
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) {
        let port = self.port;
        wait_for("nats-server listens", Duration::from_secs(20), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// SIGTERM: the server flushes its store and exits (a SIGKILL may lose
    /// what it acknowledged but had not written, which is JetStream's
    /// durability setting, not the outbox's).
    async fn stop(&mut self) {
        let pid = self.child.id().expect("running").to_string();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(term.success());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await.unwrap();
        }
    }

    async fn restart(&mut self) {
        self.child = Self::spawn(self.port, self.store.path());
        self.ready().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_outage_loses_nothing_and_the_inbox_applies_each_message_once() {
    let (t, store) = setup("postgres").await;
    let pool = tables(&t).await;
    let nats = NatsServer::start().await;
    let prefix = unique("t");
    let url = nats.url();
    let relay_on = async || {
        let dest =
            NatsDestination::connect(&url, Routing::prefixed(&prefix), Duration::from_secs(2))
                .await
                .unwrap();
        spawn_relay(Arc::new(Relay::new(store.clone(), dest, outage_config())))
    };
    let consumer_client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(consumer_client);
    let stream_config = jetstream::stream::Config {
        name: prefix.to_uppercase(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    };
    let mut stream = None;
    wait_for("JetStream answers", Duration::from_secs(20), async || {
        stream = js.get_or_create_stream(stream_config.clone()).await.ok();
        stream.is_some()
    })
    .await;
    let source: jetstream::consumer::PullConsumer = stream
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("projection".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .unwrap();
    let relay = tokio::sync::Mutex::new(Some(relay_on().await));
    let (stop, stopped) = watch::channel(false);
    let consumer_pool = pool.clone();
    // Polled beside the story, not spawned: the handler's future is not
    // provably `Send` for every lifetime (a rustc limitation with async fns).
    let consumer = async move {
        while !*stopped.borrow() {
            let r = rempart_outbox::jetstream_batch(
                &source,
                &consumer_pool,
                "projection",
                &project,
                200,
                Duration::from_millis(300),
                Duration::from_millis(200),
            )
            .await;
            if r.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    // The relay lives through the outage, then is replaced by a new one: its
    // NATS client buffers publishes while disconnected and would flush them
    // on reconnect, which would hide a relay marking rows it never got acked.
    let stop_relay = async || {
        let (stop_relay, relay_task) = relay.lock().await.take().unwrap();
        let _ = stop_relay.send(());
        relay_task.await.unwrap().unwrap();
    };
    let server = tokio::sync::Mutex::new(nats);
    let story = async {
        through_an_outage(
            &pool,
            &store,
            async || server.lock().await.stop().await,
            async || {
                stop_relay().await;
                server.lock().await.restart().await;
                *relay.lock().await = Some(relay_on().await);
            },
        )
        .await;
        stop.send_replace(true);
    };
    tokio::join!(story, consumer);
    stop_relay().await;
    drop(server);
}

/// Takes from `queue` through `url` until `stopped`, reconnecting when the
/// connection drops (unacked messages go back to the queue).
async fn consume_amqp(url: String, queue: String, pool: PgPool, stopped: watch::Receiver<bool>) {
    while !*stopped.borrow() {
        let connect = Connection::connect(&url, ConnectionProperties::default());
        let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        while !*stopped.borrow() {
            match rempart_outbox::amqp_batch(
                &ch,
                &queue,
                &pool,
                "projection",
                &project,
                200,
                Duration::from_secs(2),
            )
            .await
            {
                Ok(c) if c.total() == 0 => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_outage_loses_nothing_and_the_inbox_applies_each_message_once() {
    let (t, store) = setup("postgres").await;
    let pool = tables(&t).await;
    let exchange = unique("x");
    let queue = unique("q");
    let (_conn, ch) = topic_exchange(&exchange).await;
    bound_queue(&ch, &queue, &exchange, "#").await;
    let upstream: SocketAddr = AMQP_ADDR.parse().unwrap();
    let proxy = CutProxy::start(upstream).await.unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let dest = AmqpDestination::connect(
        &url,
        &exchange,
        Routing::prefixed("t"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(dest.name(), "amqp");
    let relay = Arc::new(Relay::new(store.clone(), dest, outage_config()));
    let (stop_relay, relay_task) = spawn_relay(relay);
    let (stop, stopped) = watch::channel(false);
    let consumer = consume_amqp(url, queue.clone(), pool.clone(), stopped);
    let story = async {
        through_an_outage(
            &pool,
            &store,
            async || proxy.cut(true),
            async || proxy.cut(false),
        )
        .await;
        stop.send_replace(true);
    };
    tokio::join!(story, consumer);
    let _ = stop_relay.send(());
    relay_task.await.unwrap().unwrap();
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}
