//! Shared test setup: a private database, messages in their own transactions.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rempart::retry::{Backoff, Jitter};
use rempart_db::test_support::TestDb;
use rempart_db::{Db, with_pool};
use rempart_outbox::{
    ChannelDestination, Destination, Envelope, Handled, INBOX_SCHEMA, Inbox, Message,
    OUTBOX_SCHEMA, Outbox, OutboxStore, PublishError, Relay, RelayConfig, RelayError, RetryPolicy,
};
use uuid::Uuid;

pub const BACKENDS: [&str; 2] = ["sqlite", "postgres"];

pub async fn setup(backend: &str) -> (TestDb, OutboxStore) {
    let t = TestDb::new(backend).await.expect("test database");
    t.db.migrate(&OUTBOX_SCHEMA).await.expect("outbox schema");
    t.db.migrate(&INBOX_SCHEMA).await.expect("inbox schema");
    let store = OutboxStore::new(t.db.clone());
    (t, store)
}

pub fn order_created(aggregate: &str, n: u64) -> Message {
    Message::new(
        "order",
        aggregate,
        "OrderCreated",
        serde_json::json!({"order_id": aggregate, "total_cents": n}),
    )
    .unwrap()
}

/// Enqueues `m` in a transaction of its own, committed.
pub async fn enqueue(db: &Db, m: &Message) -> i64 {
    with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        let seq = Outbox::enqueue(&mut tx, m).await.unwrap();
        tx.commit().await.unwrap();
        seq
    })
}

/// Fast retries, no jitter, short polls: tests wait on deliveries, not on time.
pub fn fast_config() -> RelayConfig {
    RelayConfig {
        aggregates_per_claim: 8,
        rows_per_aggregate: 4,
        poll_interval: Duration::from_millis(20),
        publish_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            backoff: Backoff::constant(Duration::from_millis(1)),
            jitter: Jitter::None,
            max_attempts: None,
        },
        backoff: Backoff::constant(Duration::from_millis(5)),
        ..RelayConfig::default()
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// The state, attempts and last error of a row.
pub async fn row_state(db: &Db, id: Uuid) -> (String, i32, Option<String>) {
    with_pool!(db, pool => {
        sqlx::query_as("SELECT state, attempts, last_error FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

/// Puts every row back to pending, as a relay that died between the
/// publish and the mark leaves them.
pub async fn forget_published(db: &Db) {
    with_pool!(db, pool => {
        sqlx::query("UPDATE outbox SET state = 'pending', published_at = NULL WHERE state = 'published'")
            .execute(pool)
            .await
            .unwrap();
    })
}

/// Runs `relay` in a task until the returned sender fires (or is dropped).
pub fn spawn_relay<D: Destination>(
    relay: std::sync::Arc<Relay<D>>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), RelayError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, running)
}

/// A consumer: runs `sql` (bound to `arg`) through the inbox in its own
/// transaction, committed; returns what the inbox did.
pub async fn apply_once(db: &Db, consumer: &str, id: &str, sql: &str, arg: &str) -> Handled<()> {
    with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        let h = Inbox::handle_once(&mut tx, consumer, id, async |tx| {
            sqlx::query(sql)
                .bind(arg)
                .execute(&mut **tx)
                .await
                .map_err(rempart_outbox::EnqueueError::from)?;
            Ok::<_, rempart_outbox::EnqueueError>(())
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        h
    })
}

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A topic exchange of the test's own, on a fresh connection (kept alive by the caller).
pub async fn topic_exchange(name: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 5672");
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    (conn, ch)
}

/// A queue of the test's own, bound to `exchange` by `key`.
pub async fn bound_queue(ch: &lapin::Channel, queue: &str, exchange: &str, key: &str) {
    ch.queue_declare(
        queue.into(),
        lapin::options::QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        lapin::options::QueueBindOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
}

/// A destination that fails at random: before the broker has the message,
/// or after (the ack is lost, so the relay publishes it again).
#[derive(Debug)]
pub struct Flaky {
    pub inner: ChannelDestination,
    pub state: AtomicU64,
}

impl Flaky {
    fn roll(&self) -> u64 {
        // SplitMix64 step, shared by the relays' concurrent publishes.
        let z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 10
    }
}

impl Destination for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn publish(&self, m: &Envelope) -> Result<(), PublishError> {
        match self.roll() {
            0 => Err(PublishError::transient("refused before the broker had it")),
            1 => {
                self.inner.publish(m).await?;
                Err(PublishError::transient("ack lost"))
            }
            _ => self.inner.publish(m).await,
        }
    }
}
