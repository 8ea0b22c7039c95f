//! The relay against the real NATS JetStream (127.0.0.1:4222) and RabbitMQ
//! (127.0.0.1:5672) on this machine, on PostgreSQL; each test on its own
//! stream, exchange and queue.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;
use rempart_db::with_pool;
use rempart_outbox::{
    AmqpDestination, Destination, Handled, Message, NatsDestination, Relay, Routing, message_id,
};

const NATS: &str = "nats://127.0.0.1:4222";

async fn amqp_relay(store: rempart_outbox::OutboxStore, exchange: &str) -> Relay<AmqpDestination> {
    let dest = AmqpDestination::connect(
        AMQP,
        exchange,
        Routing::prefixed("t"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    Relay::new(store, dest, fast_config())
}

async fn drain<D: Destination>(relay: &Relay<D>) {
    for _ in 0..1000 {
        if relay.run_once().await.unwrap().claimed == 0 {
            return;
        }
    }
    panic!("the relay never ran out of rows");
}

/// JetStream: messages land in aggregate order with `Nats-Msg-Id` = the
/// outbox id; a re-publish after a lost mark is dropped by the duplicate
/// window; a message over the server's `max_payload` is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_gets_each_message_once_in_order_with_its_outbox_id() {
    let (t, store) = setup("postgres").await;
    let prefix = unique("t");
    let client = async_nats::connect(NATS)
        .await
        .expect("nats-server with -js on 4222");
    let js = jetstream::new(client.clone());
    let mut stream = js
        .create_stream(jetstream::stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    let dest = NatsDestination::new(
        client.clone(),
        Routing::prefixed(&prefix),
        Duration::from_secs(5),
    );
    let max = dest.max_payload().unwrap();
    let relay = Relay::new(store.clone(), dest, fast_config());

    let mut ids = Vec::new();
    for n in 1..=3 {
        let m = order_created("a", n);
        enqueue(&t.db, &m).await;
        ids.push(m.id);
    }
    let too_large = Message::new(
        "order",
        "b",
        "OrderNoted",
        serde_json::json!({"note": "n".repeat(max + 1)}),
    )
    .unwrap();
    enqueue(&t.db, &too_large).await;
    drain(&relay).await;
    forget_published(&t.db).await;
    drain(&relay).await;

    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 3,
        "the re-publish was not deduplicated"
    );
    for (i, id) in ids.iter().enumerate() {
        let msg = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(msg.subject.as_str(), format!("{prefix}.order.OrderCreated"));
        assert_eq!(
            msg.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some(message_id(*id).as_str())
        );
        assert_eq!(
            msg.headers.get("rempart-seq").map(|v| v.as_str()),
            Some((i + 1).to_string().as_str())
        );
    }
    let (state, _, error) = row_state(&t.db, too_large.id).await;
    assert_eq!(state, "dead");
    assert!(error.unwrap().contains("over the destination's limit"));
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
}

/// RabbitMQ: confirmed publishes with `message_id` = the outbox id, in
/// aggregate order; RabbitMQ keeps a re-publish, and the inbox absorbs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_gets_messages_in_order_and_the_inbox_absorbs_the_republish() {
    let (t, store) = setup("postgres").await;
    with_pool!(t.db, pool => {
        sqlx::query("CREATE TABLE applied (message_id VARCHAR(100) PRIMARY KEY)")
            .execute(pool).await.unwrap();
    });
    let exchange = unique("x");
    let queue = unique("q");
    let (_conn, ch) = topic_exchange(&exchange).await;
    bound_queue(&ch, &queue, &exchange, "t.order.*").await;
    let relay = amqp_relay(store.clone(), &exchange).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let m = order_created("a", n);
        enqueue(&t.db, &m).await;
        ids.push(message_id(m.id));
    }
    drain(&relay).await;
    forget_published(&t.db).await;
    drain(&relay).await;

    let mut received = Vec::new();
    let mut outcomes = Vec::new();
    while let Some(got) = ch
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let d = got.delivery;
        let id = d.properties.message_id().clone().unwrap().to_string();
        let seq = match d
            .properties
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .get("rempart-seq")
        {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("rempart-seq header: {other:?}"),
        };
        received.push((id.clone(), seq));
        // The consumer: apply in a transaction with the inbox, commit, then ack.
        let h = apply_once(
            &t.db,
            "projection",
            &id,
            "INSERT INTO applied (message_id) VALUES ($1)",
            &id,
        )
        .await;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        outcomes.push(h);
    }
    let expected: Vec<(String, String)> = ids
        .iter()
        .chain(ids.iter())
        .enumerate()
        .map(|(i, id)| (id.clone(), (i % 3 + 1).to_string()))
        .collect();
    assert_eq!(
        received, expected,
        "confirmed, in order, message_id = outbox id, twice"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|h| **h == Handled::Duplicate)
            .count(),
        3,
        "the inbox absorbed the three re-deliveries"
    );
    let applied: i64 = with_pool!(t.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM applied").fetch_one(pool).await.unwrap()
    });
    assert_eq!(applied, 3);
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

/// An exchange with no queue bound: the confirm returns the message, and the
/// row stays pending (it is not lost, and not a dead letter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_rabbitmq_message_stays_in_the_outbox() {
    let (t, store) = setup("postgres").await;
    let exchange = unique("x");
    let (_conn, ch) = topic_exchange(&exchange).await;
    let relay = amqp_relay(store.clone(), &exchange).await;
    let m = order_created("a", 1);
    enqueue(&t.db, &m).await;
    let r = relay.run_once().await.unwrap();
    assert_eq!((r.published, r.retried), (0, 1));
    // Nothing got through: the relay treats it as an outage (its own
    // backoff and breaker), so the row keeps its attempts and its error.
    let (state, _, error) = row_state(&t.db, m.id).await;
    assert_eq!(state, "pending");
    assert!(error.unwrap().contains("no queue is bound"));
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

async fn insert_applied(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    m: &rempart_outbox::Incoming,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO applied (message_id) VALUES ($1)")
        .bind(&m.id)
        .execute(&mut **tx)
        .await
        .map(drop)
}

async fn applied_table(t: &rempart_db::test_support::TestDb) -> sqlx::PgPool {
    let rempart_db::Pool::Postgres(pool) = t.db.pool() else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE applied (message_id VARCHAR(100) PRIMARY KEY)")
        .execute(pool)
        .await
        .unwrap();
    pool.clone()
}

/// A JetStream durable pull consumer that committed but died before its
/// ack gets the message again after `ack_wait`; the helper acks it as a
/// duplicate without applying it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_redelivery_after_the_commit_is_acked_as_a_duplicate() {
    let (t, store) = setup("postgres").await;
    let pool = applied_table(&t).await;
    let prefix = unique("t");
    let client = async_nats::connect(NATS).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let source: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("projection".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let dest = NatsDestination::new(client, Routing::prefixed(&prefix), Duration::from_secs(5));
    let relay = Relay::new(store, dest, fast_config());
    for n in 1..=3 {
        enqueue(&t.db, &order_created("a", n)).await;
    }
    drain(&relay).await;

    // The first message: applied and committed, never acked (the crash).
    let mut first = source.fetch().max_messages(1).messages().await.unwrap();
    use futures_util::StreamExt;
    let m = first.next().await.unwrap().unwrap();
    let id = m
        .headers
        .as_ref()
        .unwrap()
        .get("Nats-Msg-Id")
        .unwrap()
        .to_string();
    let sql = "INSERT INTO applied (message_id) VALUES ($1)";
    assert_eq!(
        apply_once(&t.db, "projection", &id, sql, &id).await,
        Handled::Applied(())
    );
    drop(m);

    let mut total = rempart_outbox::Consumed::default();
    tokio::time::timeout(Duration::from_secs(60), async {
        while total.applied + total.duplicates < 3 {
            let c = rempart_outbox::jetstream_batch(
                &source,
                &pool,
                "projection",
                &insert_applied,
                10,
                Duration::from_millis(500),
                Duration::from_millis(100),
            )
            .await
            .unwrap();
            total.applied += c.applied;
            total.duplicates += c.duplicates;
            total.failed += c.failed;
        }
    })
    .await
    .expect("the unacked message comes back after ack_wait");
    assert_eq!((total.applied, total.duplicates, total.failed), (2, 1, 0));
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM applied")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 3);
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
}

/// A RabbitMQ queue with manual acks: a re-published message is acked as a
/// duplicate; a handler failure nacks the message back, and it is applied
/// on its next delivery; nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amqp_helper_acks_after_commit_absorbs_duplicates_and_requeues_failures() {
    let (t, store) = setup("postgres").await;
    let pool = applied_table(&t).await;
    let exchange = unique("x");
    let queue = unique("q");
    let (_conn, ch) = topic_exchange(&exchange).await;
    bound_queue(&ch, &queue, &exchange, "#").await;
    let relay = amqp_relay(store, &exchange).await;
    for n in 1..=3 {
        enqueue(&t.db, &order_created("a", n)).await;
    }
    drain(&relay).await;
    forget_published(&t.db).await;
    drain(&relay).await;

    let failed_once = std::sync::atomic::AtomicBool::new(false);
    let handler = async |tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
                         m: &rempart_outbox::Incoming|
           -> Result<(), String> {
        insert_applied(tx, m).await.map_err(|e| e.to_string())?;
        if !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err("the projection's database hiccupped".into());
        }
        Ok(())
    };
    let mut total = rempart_outbox::Consumed::default();
    for _ in 0..10 {
        let c = rempart_outbox::amqp_batch(
            &ch,
            &queue,
            &pool,
            "projection",
            &handler,
            100,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        if c.total() == 0 {
            break;
        }
        total.applied += c.applied;
        total.duplicates += c.duplicates;
        total.failed += c.failed;
    }
    // Seven deliveries: six copies and the requeued failure. Each id applied
    // once, the three others acked as duplicates, one failure.
    assert_eq!((total.applied, total.duplicates, total.failed), (3, 3, 1));
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM applied")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 3);
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}
