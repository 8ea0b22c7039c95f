//! PostgreSQL: writers notify only while a relay waits for it, and an idle
//! relay still wakes at a commit, long before its poll interval.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rempart_db::Db;
use rempart_outbox::{ChannelDestination, Delivery, NOTIFY_CHANNEL, Relay, Routing};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

fn pg(db: &Db) -> PgPool {
    let rempart_db::Pool::Postgres(pool) = db.pool() else {
        unreachable!("these tests run on PostgreSQL")
    };
    pool.clone()
}

/// Waits (10 s at most) until `n` relays have declared themselves idle.
async fn until_waiting(pool: &PgPool, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_relay_waiting WHERE until > now()")
                .fetch_one(pool)
                .await
                .unwrap();
        if waiting == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} relays waiting after 10 s, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The test's own listener, counting this schema's notifications.
async fn count_notifications(pool: &PgPool) -> (tokio::task::JoinHandle<()>, Arc<AtomicCount>) {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut l = PgListener::connect_with(pool).await.unwrap();
    l.listen(NOTIFY_CHANNEL).await.unwrap();
    let count = Arc::new(AtomicCount::default());
    let c = count.clone();
    let task = tokio::spawn(async move {
        while let Ok(n) = l.recv().await {
            if n.payload() == schema {
                c.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    (task, count)
}

#[derive(Debug, Default)]
struct AtomicCount(std::sync::atomic::AtomicU64);

impl AtomicCount {
    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn delivered_within(rx: &mut mpsc::Receiver<Delivery>, secs: u64) -> Delivery {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("delivered within {secs} s, not at the 30 s poll"))
        .unwrap()
}

/// An idle relay (its row written, writers notifying) publishes a commit
/// within 2 s, though it polls every 30 s; then it goes idle again and
/// wakes again. Two relays, each waking in turn, never strand the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relays_wake_at_a_commit_long_before_their_poll() {
    let (t, store) = setup("postgres").await;
    let pool = pg(&t.db);
    let (dest, mut rx) = ChannelDestination::new(64, Routing::prefixed("t"));
    let (dest_b, mut rx_b) = ChannelDestination::new(64, Routing::prefixed("t"));
    let mut config = fast_config();
    config.poll_interval = Duration::from_secs(30);
    let a = Arc::new(Relay::new(store.clone(), dest, config.clone()));
    let b = Arc::new(Relay::new(store, dest_b, config));
    let (stop_a, running_a) = spawn_relay(a);
    let (stop_b, running_b) = spawn_relay(b);
    for n in 1..=4 {
        until_waiting(&pool, 2).await;
        let m = order_created(&format!("w{n}"), n);
        enqueue(&t.db, &m).await;
        let d = tokio::select! {
            d = delivered_within(&mut rx, 2) => d,
            d = delivered_within(&mut rx_b, 2) => d,
        };
        assert_eq!(d.id, m.id, "message {n}");
    }
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    running_a.await.unwrap().unwrap();
    running_b.await.unwrap().unwrap();
    // Stopped relays take their rows with them: writers stop notifying.
    until_waiting(&pool, 0).await;
}

/// While a relay drains a stream of commits, writers do not notify it:
/// far fewer notifications than commits, and every message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_relay_costs_writers_no_notifications() {
    let (t, store) = setup("postgres").await;
    let pool = pg(&t.db);
    let (notified_task, notified) = count_notifications(&pool).await;
    let (dest, mut rx) = ChannelDestination::new(4096, Routing::prefixed("t"));
    let relay = Arc::new(Relay::new(store, dest, fast_config()));
    let (stop, running) = spawn_relay(relay);
    until_waiting(&pool, 1).await;
    const WRITERS: u64 = 4;
    const EACH: u64 = 150;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = t.db.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    enqueue(&db, &order_created(&format!("b{w}-{n}"), n)).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let commits = WRITERS * EACH;
    for n in 0..commits {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{n} of {commits} delivered after 20 s"))
            .unwrap();
    }
    // Notifications are delivered after their commit: let the last ones in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = notified.get();
    eprintln!("{commits} commits, {seen} notifications");
    assert!(
        seen * 4 <= commits,
        "{seen} notifications for {commits} commits: a busy relay should cost writers (almost) none"
    );
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    notified_task.abort();
}

/// A relay that dies while waiting leaves its row behind; the row expires
/// (3 polls + 1 s), and then writers stop notifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relays_row_expires_and_writers_stop_notifying() {
    let (t, store) = setup("postgres").await;
    let pool = pg(&t.db);
    let (dest, _rx) = ChannelDestination::new(64, Routing::prefixed("t"));
    let mut config = fast_config();
    config.poll_interval = Duration::from_millis(100);
    let (_stop, running) = spawn_relay(Arc::new(Relay::new(store, dest, config)));
    until_waiting(&pool, 1).await;
    running.abort(); // like a kill: no cleanup
    let _ = running.await;
    let (notified_task, notified) = count_notifications(&pool).await;
    enqueue(&t.db, &order_created("d1", 1)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while notified.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead relay's row still stands: no notification"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 3 × 100 ms + 1 s after its last renewal, the row is gone.
    until_waiting(&pool, 0).await;
    let before = notified.get();
    enqueue(&t.db, &order_created("d2", 2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(notified.get(), before, "a commit notified nobody's row");
    notified_task.abort();
}
