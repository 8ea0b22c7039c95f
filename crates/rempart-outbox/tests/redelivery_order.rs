//! The brokers hand an aggregate's messages to the consumer out of order
//! (a redelivery after a lost ack or a nak comes after later ones): here
//! seq 2 is published before seq 1, straight to the real JetStream and
//! RabbitMQ, and the consumer helpers still apply 1 then 2, each once.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;
use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use rempart_outbox::{Consumed, Incoming, amqp_batch, jetstream_batch};
use sqlx::PgPool;

const NATS: &str = "nats://127.0.0.1:4222";

/// The projection: message ids in the order applied.
async fn ordered_table(t: &rempart_db::test_support::TestDb) -> PgPool {
    let rempart_db::Pool::Postgres(pool) = t.db.pool() else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE ordered (n BIGSERIAL PRIMARY KEY, message_id VARCHAR(100) NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    pool.clone()
}

async fn append(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    m: &Incoming,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO ordered (message_id) VALUES ($1)")
        .bind(&m.id)
        .execute(&mut **tx)
        .await
        .map(drop)
}

async fn applied(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM ordered ORDER BY n")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The standard headers of `aggregate`'s message `seq`, and its id.
fn headers(aggregate: &str, seq: i64) -> (String, Vec<(&'static str, String)>) {
    let id = format!("{aggregate}-{seq}");
    let h = vec![
        ("rempart-aggregate-type", "order".to_owned()),
        ("rempart-aggregate-id", aggregate.to_owned()),
        ("rempart-event-type", "OrderUpdated".to_owned()),
        ("rempart-seq", seq.to_string()),
    ];
    (id, h)
}

fn add(total: &mut Consumed, c: Consumed) {
    total.applied += c.applied;
    total.duplicates += c.duplicates;
    total.early += c.early;
    total.failed += c.failed;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_seq_2_before_seq_1_is_nakd_and_applied_after_it() {
    let (t, _store) = setup("postgres").await;
    let pool = ordered_table(&t).await;
    let prefix = unique("t");
    let client = async_nats::connect(NATS)
        .await
        .expect("nats-server with -js on 4222");
    let js = jetstream::new(client);
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
            ..Default::default()
        })
        .await
        .unwrap();
    let aggregate = unique("o");
    for seq in [2, 1] {
        let (id, h) = headers(&aggregate, seq);
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in &h {
            map.insert(*k, v.as_str());
        }
        map.insert("Nats-Msg-Id", id.as_str());
        let ack = js
            .publish_with_headers(format!("{prefix}.order.OrderUpdated"), map, "{}".into())
            .await
            .unwrap();
        ack.await.unwrap();
    }

    let mut total = Consumed::default();
    tokio::time::timeout(Duration::from_secs(30), async {
        while total.applied < 2 {
            let c = jetstream_batch(
                &source,
                &pool,
                "projection",
                &append,
                10,
                Duration::from_millis(300),
                Duration::from_millis(100),
            )
            .await
            .unwrap();
            add(&mut total, c);
        }
    })
    .await
    .expect("seq 2 comes back after its nak");
    assert_eq!(
        applied(&pool).await,
        [format!("{aggregate}-1"), format!("{aggregate}-2")]
    );
    assert!(total.early >= 1, "{total:?}");
    assert_eq!((total.duplicates, total.failed), (0, 0), "{total:?}");
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
}

async fn publish_amqp(ch: &lapin::Channel, queue: &str, aggregate: &str, seq: i64) {
    let (id, h) = headers(aggregate, seq);
    let mut table = FieldTable::default();
    for (k, v) in h {
        table.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    let props = lapin::BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_headers(table);
    ch.basic_publish(
        ShortString::from(""),
        ShortString::from(queue),
        BasicPublishOptions::default(),
        b"{}",
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_seq_2_before_seq_1_is_held_then_applied_after_it_without_spinning() {
    let (t, _store) = setup("postgres").await;
    let pool = ordered_table(&t).await;
    let exchange = unique("x");
    let queue = unique("q");
    let (_conn, ch) = topic_exchange(&exchange).await;
    bound_queue(&ch, &queue, &exchange, "#").await;
    let aggregate = unique("o");
    publish_amqp(&ch, &queue, &aggregate, 2).await;
    publish_amqp(&ch, &queue, &aggregate, 1).await;
    let batch = async || {
        amqp_batch(
            &ch,
            &queue,
            &pool,
            "projection",
            &append,
            100,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    };
    let first = batch().await;
    assert_eq!((first.applied, first.early), (1, 1), "{first:?}");
    let second = batch().await;
    assert_eq!((second.applied, second.early), (1, 0), "{second:?}");
    assert_eq!(
        applied(&pool).await,
        [format!("{aggregate}-1"), format!("{aggregate}-2")]
    );

    // Seq 5 of another aggregate, whose 1 to 4 never come: one batch of up
    // to 100 takes it once, not 100 times in a hot loop.
    let stuck = unique("o");
    publish_amqp(&ch, &queue, &stuck, 5).await;
    let c = batch().await;
    assert_eq!((c.applied, c.early), (0, 1), "{c:?}");
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
}
