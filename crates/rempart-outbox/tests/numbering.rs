//! `enqueue` numbers each aggregate's messages 1, 2, 3, … in one statement,
//! on PostgreSQL and SQLite: concurrent writers of one aggregate get no gap
//! and no repeat, a rollback leaves no gap, and a database migrated before
//! SQLite's counter trigger numbers on from its counter.

mod common;

use std::collections::HashSet;

use common::*;
use rempart_db::test_support::TestDb;
use rempart_db::{Component, with_pool};
use rempart_outbox::{OUTBOX_SCHEMA, Outbox};

async fn seqs_of(db: &rempart_db::Db, aggregate: &str) -> Vec<i64> {
    with_pool!(db, pool => {
        sqlx::query_scalar("SELECT seq FROM outbox WHERE aggregate_id = $1 ORDER BY seq")
            .bind(aggregate)
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_aggregate_get_1_to_n_and_rollbacks_leave_no_gap() {
    for backend in BACKENDS {
        let (t, _store) = setup(backend).await;
        let writers: Vec<_> = (0..6u64)
            .map(|w| {
                let db = t.db.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0..10u64 {
                        let m = order_created("shared", w * 100 + i);
                        with_pool!(db, pool => {
                            let mut tx = pool.begin().await.unwrap();
                            let seq = Outbox::enqueue(&mut tx, &m).await.unwrap();
                            // Another aggregate in the same transaction counts apart.
                            Outbox::enqueue(&mut tx, &order_created(&format!("own-{w}"), i))
                                .await
                                .unwrap();
                            if i % 4 == 3 {
                                tx.rollback().await.unwrap();
                            } else {
                                tx.commit().await.unwrap();
                                mine.push(seq);
                            }
                        });
                    }
                    mine
                })
            })
            .collect();
        let mut committed = HashSet::new();
        for w in writers {
            let mine = w.await.unwrap();
            // One writer's transactions commit one after another: rising seqs.
            assert!(mine.windows(2).all(|p| p[0] < p[1]), "{backend}: {mine:?}");
            for s in mine {
                assert!(committed.insert(s), "{backend}: seq {s} given twice");
            }
        }
        let stored = seqs_of(&t.db, "shared").await;
        let expected: Vec<i64> = (1..=committed.len() as i64).collect();
        assert_eq!(stored, expected, "{backend}: a gap or a repeat");
        assert_eq!(seqs_of(&t.db, "own-0").await, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_migrated_before_version_2_numbers_on_from_its_counter() {
    for backend in BACKENDS {
        let t = TestDb::new(backend).await.unwrap();
        let v1 = Component {
            name: OUTBOX_SCHEMA.name,
            migrations: &OUTBOX_SCHEMA.migrations[..1],
        };
        t.db.migrate(&v1).await.unwrap();
        // What version 1's enqueue left: three messages, the counter at 3.
        with_pool!(t.db, pool => {
            for seq in 1..=3i64 {
                sqlx::query("INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload) VALUES ($1, 'order', 'a', $2, 'OrderCreated', '{}')")
                    .bind(uuid::Uuid::new_v4())
                    .bind(seq)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            sqlx::query("INSERT INTO outbox_sequences (aggregate_type, aggregate_id, last_seq) VALUES ('order', 'a', 3)")
                .execute(pool)
                .await
                .unwrap();
        });
        t.db.migrate(&OUTBOX_SCHEMA).await.unwrap();
        assert_eq!(enqueue(&t.db, &order_created("a", 4)).await, 4, "{backend}");
        assert_eq!(enqueue(&t.db, &order_created("b", 1)).await, 1, "{backend}");
        assert_eq!(seqs_of(&t.db, "a").await, vec![1, 2, 3, 4], "{backend}");
    }
}
