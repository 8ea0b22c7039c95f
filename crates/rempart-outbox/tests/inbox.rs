//! The consumer inbox on PostgreSQL and SQLite: a message delivered twice
//! (a relay that died between the publish and the mark publishes it again)
//! takes effect once.

mod common;

use common::*;
use rempart_db::with_pool;
use rempart_outbox::{ChannelDestination, Handled, Inbox, Relay, Routing, message_id};

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
