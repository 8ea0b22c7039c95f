//! The consumer inbox on PostgreSQL and SQLite: a message delivered twice
//! (a relay that died between the publish and the mark publishes it again)
//! takes effect once, and an aggregate's messages apply in their order
//! whatever order the broker redelivers them in.

mod common;

use common::*;
use rempart_db::with_pool;
use rempart_outbox::{
    ChannelDestination, Handled, Inbox, Incoming, Relay, Routing, apply_incoming, message_id,
};
use sqlx::{Postgres, Sqlite, Transaction};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_absorbs_a_message_published_twice_with_the_same_id() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        with_pool!(t.db, pool => {
            sqlx::query("CREATE TABLE projection (order_id VARCHAR(100) PRIMARY KEY, applied BIGINT NOT NULL)")
                .execute(pool).await.unwrap();
        });
        let (dest, mut rx) = ChannelDestination::new(64, Routing::prefixed("t"));
        let relay = Relay::new(store.clone(), dest, fast_config());
        let m = order_created("o-1", 10);
        enqueue(&t.db, &m).await;
        assert_eq!(relay.run_once().await.unwrap().published, 1);
        // The relay "crashed" before its mark: the row is published again.
        forget_published(&t.db).await;
        assert_eq!(relay.run_once().await.unwrap().published, 1);

        let mut outcomes = Vec::new();
        while let Ok(d) = rx.try_recv() {
            assert_eq!(d.id, m.id, "{backend}: same message id both times");
            let handled = apply_once(
                &t.db,
                "projection",
                &message_id(d.id),
                "INSERT INTO projection (order_id, applied) VALUES ($1, 1)
                 ON CONFLICT (order_id) DO UPDATE SET applied = projection.applied + 1",
                &d.aggregate_id,
            )
            .await;
            outcomes.push(handled);
        }
        assert_eq!(
            outcomes,
            [Handled::Applied(()), Handled::Duplicate],
            "{backend}"
        );
        let applied: i64 = with_pool!(t.db, pool => {
            sqlx::query_scalar("SELECT applied FROM projection WHERE order_id = 'o-1'")
                .fetch_one(pool).await.unwrap()
        });
        assert_eq!(applied, 1, "{backend}: the effect was applied twice");
    }
}

/// A handler whose transaction rolls back leaves no inbox record: the
/// redelivery applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_handling_is_not_recorded_as_seen() {
    for backend in BACKENDS {
        let (t, _store) = setup(backend).await;
        let id = message_id(uuid::Uuid::new_v4());
        with_pool!(t.db, pool => {
            let mut tx = pool.begin().await.unwrap();
            assert!(Inbox::first_delivery(&mut tx, "c", &id).await.unwrap());
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            assert!(Inbox::first_delivery(&mut tx, "c", &id).await.unwrap(), "{backend}");
            tx.commit().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            assert!(!Inbox::first_delivery(&mut tx, "c", &id).await.unwrap(), "{backend}");
            // Another consumer has its own record.
            assert!(Inbox::first_delivery(&mut tx, "other", &id).await.unwrap(), "{backend}");
            tx.commit().await.unwrap();
        });
    }
}

/// The projection of the ordering tests: the seqs in the order applied.
const APPLIED: &str = "CREATE TABLE applied (pos BIGINT PRIMARY KEY, aggregate_id VARCHAR(100) NOT NULL, seq BIGINT NOT NULL)";
const APPEND: &str =
    "INSERT INTO applied (pos, aggregate_id, seq) SELECT COUNT(*) + 1, $1, $2 FROM applied";

fn seq_of(m: &Incoming) -> (String, i64) {
    let id = m
        .headers
        .get("rempart-aggregate-id")
        .cloned()
        .unwrap_or_default();
    let seq = m
        .headers
        .get("rempart-seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (id, seq)
}

async fn append_pg(
    tx: &mut Transaction<'static, Postgres>,
    m: &Incoming,
) -> Result<(), sqlx::Error> {
    let (id, seq) = seq_of(m);
    sqlx::query(APPEND)
        .bind(id)
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map(drop)
}

async fn append_sqlite(
    tx: &mut Transaction<'static, Sqlite>,
    m: &Incoming,
) -> Result<(), sqlx::Error> {
    let (id, seq) = seq_of(m);
    sqlx::query(APPEND)
        .bind(id)
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// A delivery of `aggregate`'s message `seq`, as a broker hands it over.
fn delivery(aggregate: &str, seq: i64) -> Incoming {
    let headers = [
        ("rempart-aggregate-type", "order".to_owned()),
        ("rempart-aggregate-id", aggregate.to_owned()),
        ("rempart-event-type", "OrderCreated".to_owned()),
        ("rempart-seq", seq.to_string()),
    ];
    Incoming {
        // The outbox id stands for one (aggregate, seq): a copy has the same.
        id: format!("{aggregate}/{seq}"),
        subject: "t.order.OrderCreated".into(),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        payload: "{}".into(),
    }
}

async fn apply(db: &rempart_db::Db, m: &Incoming) -> Result<Handled<()>, String> {
    match db.pool() {
        rempart_db::Pool::Postgres(p) => apply_incoming(p, "projection", m, &append_pg).await,
        rempart_db::Pool::Sqlite(p) => apply_incoming(p, "projection", m, &append_sqlite).await,
    }
}

async fn applied(db: &rempart_db::Db) -> Vec<(String, i64)> {
    with_pool!(db, pool => {
        sqlx::query_as("SELECT aggregate_id, seq FROM applied ORDER BY pos")
            .fetch_all(pool).await.unwrap()
    })
}

/// The outage's failure: the broker redelivers seq 1 (its ack was lost)
/// after seq 2. Seq 2 waits for it, then both apply in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_ahead_of_its_aggregate_waits_for_its_predecessor() {
    for backend in BACKENDS {
        let (t, _store) = setup(backend).await;
        with_pool!(t.db, pool => { sqlx::query(APPLIED).execute(pool).await.unwrap(); });
        let (one, two) = (delivery("o-1", 1), delivery("o-1", 2));
        assert_eq!(
            apply(&t.db, &two).await,
            Ok(Handled::Early { expected: 1 }),
            "{backend}"
        );
        assert_eq!(
            applied(&t.db).await,
            [],
            "{backend}: seq 2 applied before seq 1"
        );
        assert_eq!(
            apply(&t.db, &one).await,
            Ok(Handled::Applied(())),
            "{backend}"
        );
        assert_eq!(
            apply(&t.db, &two).await,
            Ok(Handled::Applied(())),
            "{backend}"
        );
        assert_eq!(
            apply(&t.db, &one).await,
            Ok(Handled::Duplicate),
            "{backend}"
        );
        assert_eq!(
            apply(&t.db, &two).await,
            Ok(Handled::Duplicate),
            "{backend}"
        );
        // Another aggregate has its own order.
        assert_eq!(
            apply(&t.db, &delivery("o-2", 1)).await,
            Ok(Handled::Applied(())),
            "{backend}"
        );
        assert_eq!(
            applied(&t.db).await,
            [("o-1".into(), 1), ("o-1".into(), 2), ("o-2".into(), 1)],
            "{backend}"
        );
    }
}

/// A consumer that starts after retention deleted an aggregate's first
/// messages is seeded with `start_at`; messages without the ordering
/// headers are applied unordered (by id); broken headers are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_seeds_an_aggregate_and_unordered_messages_still_apply() {
    for backend in BACKENDS {
        let (t, _store) = setup(backend).await;
        with_pool!(t.db, pool => { sqlx::query(APPLIED).execute(pool).await.unwrap(); });
        assert_eq!(
            apply(&t.db, &delivery("o-9", 5)).await,
            Ok(Handled::Early { expected: 1 })
        );
        with_pool!(t.db, pool => {
            let mut tx = pool.begin().await.unwrap();
            Inbox::start_at(&mut tx, "projection", "order", "o-9", 4).await.unwrap();
            tx.commit().await.unwrap();
        });
        assert_eq!(
            apply(&t.db, &delivery("o-9", 5)).await,
            Ok(Handled::Applied(())),
            "{backend}"
        );
        assert_eq!(
            apply(&t.db, &delivery("o-9", 3)).await,
            Ok(Handled::Duplicate),
            "{backend}"
        );

        let mut plain = delivery("o-8", 7);
        plain.headers.clear();
        assert_eq!(
            apply(&t.db, &plain).await,
            Ok(Handled::Applied(())),
            "{backend}"
        );
        assert_eq!(
            apply(&t.db, &plain).await,
            Ok(Handled::Duplicate),
            "{backend}"
        );

        let mut broken = delivery("o-7", 1);
        broken.headers.insert("rempart-seq".into(), "first".into());
        let e = apply(&t.db, &broken).await.unwrap_err();
        assert!(e.contains("rempart-seq"), "{backend}: {e}");
        assert_eq!(applied(&t.db).await.len(), 2, "{backend}");
    }
}
