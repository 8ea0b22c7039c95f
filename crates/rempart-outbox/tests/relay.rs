//! The relay against the real PostgreSQL on this machine and SQLite, with
//! the in-process destination: no skipped rows, per-aggregate order under
//! several relays, dead letters, retention, wake-up on NOTIFY.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use rempart_db::with_pool;
use rempart_outbox::{
    ChannelDestination, Delivery, Destination, Envelope, Message, Outbox, PayloadChecks,
    PublishError, Relay, Routing,
};
use tokio::sync::mpsc;

fn drain(rx: &mut mpsc::Receiver<Delivery>) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Ok(d) = rx.try_recv() {
        out.push(d);
    }
    out
}

async fn run_until_idle<D: Destination>(relay: &Relay<D>) {
    for _ in 0..1000 {
        let r = relay.run_once().await.unwrap();
        if r.claimed == 0 {
            return;
        }
    }
    panic!("the relay never ran out of rows");
}

/// Seed flaw 1: a transaction that began first but commits last must still
/// be published, after rows committed in between were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_is_skipped_when_an_earlier_transaction_commits_after_later_ones() {
    let (t, store) = setup("postgres").await;
    let (dest, mut rx) = ChannelDestination::new(1024, Routing::prefixed("t"));
    let relay = Relay::new(store.clone(), dest, fast_config());
    let rempart_db::Pool::Postgres(pool) = t.db.pool() else {
        unreachable!()
    };

    // The long transaction: begins (and takes its NOW()) first.
    let early = order_created("early", 1);
    let mut long_tx = pool.begin().await.unwrap();
    Outbox::enqueue(&mut long_tx, &early).await.unwrap();

    // Later ones commit while it is open; one rolls back.
    let mut later = Vec::new();
    for i in 0..5 {
        let m = order_created(&format!("later-{i}"), i);
        enqueue(&t.db, &m).await;
        later.push(m.id);
    }
    let rolled_back = order_created("rolled-back", 9);
    let mut tx = pool.begin().await.unwrap();
    Outbox::enqueue(&mut tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();

    run_until_idle(&relay).await;
    let first: Vec<_> = drain(&mut rx).into_iter().map(|d| d.id).collect();
    assert_eq!(
        first.iter().copied().collect::<HashSet<_>>(),
        later.iter().copied().collect::<HashSet<_>>()
    );

    long_tx.commit().await.unwrap();
    run_until_idle(&relay).await;
    let second: Vec<_> = drain(&mut rx).into_iter().map(|d| d.id).collect();
    assert_eq!(second, vec![early.id], "the late commit was skipped");
    assert_eq!(store.pending().await.unwrap(), 0);
    assert!(!first.contains(&rolled_back.id) && !second.contains(&rolled_back.id));
}

/// Rolled-back rows are never published, committed ones all are, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_row_is_published_once_and_no_rolled_back_one() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        let (dest, mut rx) = ChannelDestination::new(1024, Routing::prefixed("t"));
        let relay = Relay::new(store.clone(), dest, fast_config());
        let mut committed = HashSet::new();
        let mut rolled_back = HashSet::new();
        for i in 0..30u64 {
            let m = order_created(&format!("o{}", i % 7), i);
            with_pool!(t.db, pool => {
                let mut tx = pool.begin().await.unwrap();
                Outbox::enqueue(&mut tx, &m).await.unwrap();
                if i % 4 == 3 {
                    tx.rollback().await.unwrap();
                    rolled_back.insert(m.id);
                } else {
                    tx.commit().await.unwrap();
                    committed.insert(m.id);
                }
            });
        }
        run_until_idle(&relay).await;
        let got: Vec<_> = drain(&mut rx).into_iter().map(|d| d.id).collect();
        assert_eq!(got.len(), committed.len(), "{backend}: each row once");
        assert_eq!(
            got.into_iter().collect::<HashSet<_>>(),
            committed,
            "{backend}"
        );
        assert!(rolled_back.iter().all(|id| !committed.contains(id)));
        assert_eq!(store.pending().await.unwrap(), 0, "{backend}");
    }
}

/// Seed flaw 2: three relays on one table, random publish failures; each
/// aggregate's messages reach the consumer in `seq` order (after the inbox
/// drops re-deliveries by id), and every message arrives. On SQLite the
/// lease leaves one relay at work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_aggregate_is_delivered_in_order_under_three_relays_and_random_failures() {
    for backend in BACKENDS {
        in_order_under_three_relays(backend).await;
    }
}

async fn in_order_under_three_relays(backend: &str) {
    let (t, store) = setup(backend).await;
    let (dest, mut rx) = ChannelDestination::new(100_000, Routing::prefixed("t"));
    let flaky = Arc::new(Flaky {
        inner: dest,
        state: AtomicU64::new(7),
    });
    const AGGREGATES: usize = 12;
    const EVENTS: usize = 12;
    // Interleaved: event n of every aggregate before event n+1 of any.
    for n in 0..EVENTS {
        for a in 0..AGGREGATES {
            enqueue(&t.db, &order_created(&format!("agg-{a}"), n as u64)).await;
        }
    }
    let relays: Vec<_> = (0..3)
        .map(|i| {
            let mut c = fast_config();
            c.owner = format!("relay-{i}");
            c.aggregates_per_claim = 4;
            // Failures here are the message's, not an outage: keep the breaker out of it.
            let breaker = rempart::CircuitBreaker::builder()
                .failure_threshold(1000)
                .build()
                .unwrap();
            Arc::new(Relay::new(store.clone(), flaky.clone(), c).with_breaker(breaker))
        })
        .collect();
    let tasks: Vec<_> = relays
        .iter()
        .map(|r| {
            let r = r.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let drained = async {
                    while store.pending().await.unwrap() > 0 {
                        r.run_once().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(120), drained)
                    .await
                    .expect("rows drain");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let deliveries = drain(&mut rx);
    let mut seen = HashSet::new();
    let mut by_aggregate: HashMap<String, Vec<i64>> = HashMap::new();
    for d in deliveries {
        if seen.insert(d.id) {
            by_aggregate.entry(d.aggregate_id).or_default().push(d.seq);
        }
    }
    assert_eq!(by_aggregate.len(), AGGREGATES, "{backend}");
    for (agg, seqs) in by_aggregate {
        let expected: Vec<i64> = (1..=EVENTS as i64).collect();
        assert_eq!(
            seqs, expected,
            "{backend}: {agg} delivered out of order or incompletely"
        );
    }
}

/// On SQLite one relay holds the lease; a second one publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_second_relay_waits_while_the_lease_is_held() {
    let (t, store) = setup("sqlite").await;
    let (d1, mut rx1) = ChannelDestination::new(64, Routing::prefixed("t"));
    let (d2, mut rx2) = ChannelDestination::new(64, Routing::prefixed("t"));
    let first = Relay::new(store.clone(), d1, fast_config());
    let second = Relay::new(store.clone(), d2, fast_config());
    enqueue(&t.db, &order_created("a", 1)).await;
    assert_eq!(first.run_once().await.unwrap().published, 1);
    enqueue(&t.db, &order_created("a", 2)).await;
    assert_eq!(second.run_once().await.unwrap().claimed, 0);
    assert!(drain(&mut rx2).is_empty());
    assert_eq!(first.run_once().await.unwrap().published, 1);
    assert_eq!(
        drain(&mut rx1).iter().map(|d| d.seq).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct OrderCreated {
    order_id: String,
    total_cents: u64,
}

/// A payload that is not its declared type, and a message over the
/// destination's limit, are moved aside with their error; the rest of their
/// aggregate goes on, and they are not tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_dead_lettered_with_their_error_not_retried_for_ever() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        let (dest, mut rx) = ChannelDestination::new(64, Routing::prefixed("t"));
        let relay = Relay::new(store.clone(), dest.with_max_payload(1000), fast_config())
            .with_checks(PayloadChecks::new().declare::<OrderCreated>("OrderCreated"));
        let wrong_shape = Message::new(
            "order",
            "x",
            "OrderCreated",
            serde_json::json!({"order_id": "x"}),
        )
        .unwrap();
        let next_of_x = order_created("x", 2);
        let too_large = Message::new(
            "order",
            "y",
            "OrderNoted",
            serde_json::json!({"note": "n".repeat(2000)}),
        )
        .unwrap();
        for m in [&wrong_shape, &next_of_x, &too_large] {
            enqueue(&t.db, m).await;
        }
        run_until_idle(&relay).await;
        run_until_idle(&relay).await;
        let got: Vec<_> = drain(&mut rx).into_iter().map(|d| d.id).collect();
        assert_eq!(got, vec![next_of_x.id], "{backend}");
        let (state, attempts, error) = row_state(&t.db, wrong_shape.id).await;
        assert_eq!((state.as_str(), attempts), ("dead", 1), "{backend}");
        let error = error.unwrap();
        assert!(
            error.contains("not a valid OrderCreated") && error.contains("total_cents"),
            "{backend}: {error}"
        );
        let (state, attempts, error) = row_state(&t.db, too_large.id).await;
        assert_eq!((state.as_str(), attempts), ("dead", 1), "{backend}");
        assert!(
            error
                .unwrap()
                .contains("over the destination's limit of 1000")
        );
        let dead = store.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 2, "{backend}");
        assert_eq!(store.pending().await.unwrap(), 0, "{backend}");
    }
}

/// SQLite stores the payload as text: a row written by hand with no JSON
/// in it is dead-lettered, not published and not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_row_whose_payload_is_not_json_is_dead_lettered() {
    let (t, store) = setup("sqlite").await;
    let (dest, mut rx) = ChannelDestination::new(64, Routing::prefixed("t"));
    let relay = Relay::new(store.clone(), dest, fast_config());
    let id = uuid::Uuid::new_v4();
    with_pool!(t.db, pool => {
        sqlx::query("INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload) VALUES ($1, 'order', 'z', 1, 'OrderCreated', '{oops')")
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    });
    run_until_idle(&relay).await;
    assert!(drain(&mut rx).is_empty());
    let (state, _, error) = row_state(&t.db, id).await;
    assert_eq!(state, "dead");
    assert!(error.unwrap().starts_with("payload is not JSON"));
}

/// Published rows go after the retention period, in batches; pending and
/// dead rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_published_rows_in_batches_and_nothing_else() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        let (dest, _rx) = ChannelDestination::new(64, Routing::prefixed("t"));
        let relay = Relay::new(store.clone(), dest.with_max_payload(500), fast_config());
        for i in 0..5 {
            enqueue(&t.db, &order_created(&format!("p{i}"), i)).await;
        }
        let dead = Message::new(
            "order",
            "d",
            "OrderNoted",
            serde_json::json!({"note": "n".repeat(600)}),
        )
        .unwrap();
        enqueue(&t.db, &dead).await;
        run_until_idle(&relay).await;
        let pending = order_created("later", 1);
        enqueue(&t.db, &pending).await;

        assert_eq!(
            store
                .purge_published(Duration::from_secs(3600), 2)
                .await
                .unwrap(),
            0,
            "{backend}: nothing is an hour old"
        );
        assert_eq!(
            store.delete_published(Duration::ZERO, 2).await.unwrap(),
            2,
            "{backend}"
        );
        assert_eq!(
            store.purge_published(Duration::ZERO, 2).await.unwrap(),
            3,
            "{backend}"
        );
        assert_eq!(row_state(&t.db, dead.id).await.0, "dead");
        assert_eq!(row_state(&t.db, pending.id).await.0, "pending");
    }
}

/// The relay wakes on the commit's notification, long before its poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_wakes_on_notify_before_its_poll_interval() {
    let (t, store) = setup("postgres").await;
    let (dest, mut rx) = ChannelDestination::new(64, Routing::prefixed("t"));
    let mut config = fast_config();
    config.poll_interval = Duration::from_secs(600);
    let relay = Arc::new(Relay::new(store, dest, config));
    let (stop, running) = spawn_relay(relay.clone());
    for n in 1..=2 {
        let m = order_created("n", n);
        enqueue(&t.db, &m).await;
        let d = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("delivered within 20 s, not at the 600 s poll")
            .unwrap();
        assert_eq!(d.id, m.id);
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// A destination that can be switched off, like a broker going down.
#[derive(Debug)]
struct Switch {
    inner: ChannelDestination,
    down: std::sync::atomic::AtomicBool,
    tries: AtomicU64,
}

impl Destination for Switch {
    fn name(&self) -> &str {
        "switch"
    }

    async fn publish(&self, m: &Envelope) -> Result<(), PublishError> {
        self.tries.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Err(PublishError::transient("connection refused"));
        }
        self.inner.publish(m).await
    }
}

/// With the broker down, rows stay pending and are neither dead-lettered
/// (even with `max_attempts`) nor pushed back by their own backoff (here an
/// hour): when the broker is back, everything drains, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stay_through_a_broker_outage_and_drain_in_order_when_it_is_back() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        let (dest, mut rx) = ChannelDestination::new(1024, Routing::prefixed("t"));
        let switch = Arc::new(Switch {
            inner: dest,
            down: true.into(),
            tries: AtomicU64::new(0),
        });
        let mut config = fast_config();
        config.retry.backoff = rempart::retry::Backoff::constant(Duration::from_secs(3600));
        config.retry.max_attempts = Some(2);
        let breaker = rempart::CircuitBreaker::builder()
            .failure_threshold(3)
            .open_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let relay =
            Arc::new(Relay::new(store.clone(), switch.clone(), config).with_breaker(breaker));
        for n in 1..=4 {
            for a in 0..5 {
                enqueue(&t.db, &order_created(&format!("agg-{a}"), n)).await;
            }
        }
        let (stop, running) = spawn_relay(relay.clone());
        // Several failed cycles (more than max_attempts per row).
        tokio::time::timeout(Duration::from_secs(30), async {
            while switch.tries.load(Ordering::Relaxed) < 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the relay keeps trying");
        assert_eq!(store.pending().await.unwrap(), 20, "{backend}: rows stay");
        assert!(
            store.dead_letters(10).await.unwrap().is_empty(),
            "{backend}"
        );

        switch.down.store(false, Ordering::Relaxed);
        let mut by_aggregate: HashMap<String, Vec<i64>> = HashMap::new();
        for _ in 0..20 {
            let d = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("drains once the broker is back")
                .unwrap();
            by_aggregate.entry(d.aggregate_id).or_default().push(d.seq);
        }
        for (agg, seqs) in by_aggregate {
            assert_eq!(seqs, [1, 2, 3, 4], "{backend}: {agg}");
        }
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }
}

/// A broker that takes the message and never acks: the relay is stopped
/// mid-cycle, as a crash between the publish and the mark.
#[derive(Debug)]
struct TakesAndHangs {
    inner: ChannelDestination,
}

impl Destination for TakesAndHangs {
    fn name(&self) -> &str {
        "hangs"
    }

    async fn publish(&self, m: &Envelope) -> Result<(), PublishError> {
        self.inner.publish(m).await?;
        std::future::pending().await
    }
}

/// PostgreSQL: a relay that dies between the publish and the mark leaves
/// its rows pending and unlocked (its transaction rolls back); another relay
/// publishes them again with the same ids, and the inbox applies each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dying_before_its_mark_loses_nothing_and_the_inbox_absorbs_the_repeat() {
    let (t, store) = setup("postgres").await;
    with_pool!(t.db, pool => {
        sqlx::query("CREATE TABLE applied (message_id VARCHAR(100) PRIMARY KEY)")
            .execute(pool).await.unwrap();
    });
    let (dest, mut rx) = ChannelDestination::new(64, Routing::prefixed("t"));
    let mut config = fast_config();
    config.publish_timeout = Duration::from_secs(600);
    let dying = Relay::new(
        store.clone(),
        TakesAndHangs {
            inner: dest.clone(),
        },
        config,
    );
    let mut ids = HashSet::new();
    for a in 0..3 {
        let m = order_created(&format!("c{a}"), 1);
        enqueue(&t.db, &m).await;
        ids.insert(m.id);
    }
    // Every message reached the broker, then the relay is gone.
    let mut cycle = Box::pin(dying.run_once());
    let mut first = Vec::new();
    while first.len() < 3 {
        tokio::select! {
            _ = &mut cycle => panic!("the cycle cannot end without acks"),
            d = rx.recv() => first.push(d.unwrap()),
        }
    }
    drop(cycle);
    drop(dying);

    let survivor = Relay::new(store.clone(), dest, fast_config());
    // The dropped transaction rolls back in the background: until it has,
    // its rows are locked and skipped, so claim until none is pending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.pending().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows still pending after 10 s"
        );
        survivor.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = drain(&mut rx);
    assert_eq!(second.iter().map(|d| d.id).collect::<HashSet<_>>(), ids);
    assert_eq!(store.pending().await.unwrap(), 0);

    let mut applied = 0;
    for d in first.iter().chain(second.iter()) {
        let id = rempart_outbox::message_id(d.id);
        let sql = "INSERT INTO applied (message_id) VALUES ($1)";
        if apply_once(&t.db, "projection", &id, sql, &id).await
            == rempart_outbox::Handled::Applied(())
        {
            applied += 1;
        }
    }
    assert_eq!(applied, 3, "each message applied once");
}
