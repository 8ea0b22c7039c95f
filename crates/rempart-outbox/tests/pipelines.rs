//! One relay with several cycles in flight (`RelayConfig::pipelines`) on the
//! real PostgreSQL: every committed row arrives, each aggregate in order,
//! while writers keep committing and publishes fail at random.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use common::*;
use rempart_outbox::{ChannelDestination, Relay, Routing};

/// In the order each aggregate's first copy of a message arrived (the
/// inbox drops the rest by id), its seqs.
fn first_arrivals(
    rx: &mut tokio::sync::mpsc::Receiver<rempart_outbox::Delivery>,
) -> HashMap<String, Vec<i64>> {
    let mut seen = HashSet::new();
    let mut by_aggregate: HashMap<String, Vec<i64>> = HashMap::new();
    while let Ok(d) = rx.try_recv() {
        if seen.insert(d.id) {
            by_aggregate.entry(d.aggregate_id).or_default().push(d.seq);
        }
    }
    by_aggregate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pipelines_deliver_every_aggregate_in_order_while_writers_commit_and_publishes_fail() {
    let (t, store) = setup("postgres").await;
    let (dest, mut rx) = ChannelDestination::new(100_000, Routing::prefixed("t"));
    let flaky = Arc::new(Flaky {
        inner: dest,
        state: AtomicU64::new(11),
    });
    let mut config = fast_config();
    config.pipelines = 4;
    // Few aggregates per claim, so the four cycles split the backlog.
    config.aggregates_per_claim = 3;
    config.rows_per_aggregate = 2;
    let breaker = rempart::CircuitBreaker::builder()
        .failure_threshold(1000)
        .build()
        .unwrap();
    let relay = Arc::new(Relay::new(store.clone(), flaky, config).with_breaker(breaker));
    let (stop, running) = spawn_relay(relay);

    const AGGREGATES: usize = 10;
    const EVENTS: usize = 15;
    // Writers commit while the relay runs, interleaving the aggregates.
    for n in 0..EVENTS {
        for a in 0..AGGREGATES {
            enqueue(&t.db, &order_created(&format!("agg-{a}"), n as u64)).await;
        }
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while store.pending().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay drains the table");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the relay stops after its cycles")
        .unwrap()
        .unwrap();

    let by_aggregate = first_arrivals(&mut rx);
    assert_eq!(by_aggregate.len(), AGGREGATES);
    let expected: Vec<i64> = (1..=EVENTS as i64).collect();
    for (agg, seqs) in by_aggregate {
        assert_eq!(
            seqs, expected,
            "{agg} delivered out of order or incompletely"
        );
    }
}

/// `drain` with several pipelines publishes every row once and stops when
/// nothing is left, on PostgreSQL; on SQLite it is one pipeline (the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_pipelines_publishes_every_row_once_and_stops() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        let (dest, mut rx) = ChannelDestination::new(10_000, Routing::prefixed("t"));
        let mut config = fast_config();
        config.pipelines = 4;
        config.aggregates_per_claim = 5;
        let relay = Relay::new(store.clone(), dest, config);
        let mut ids = HashSet::new();
        for i in 0..120u64 {
            let m = order_created(&format!("o{}", i % 40), i);
            ids.insert(m.id);
            enqueue(&t.db, &m).await;
        }
        let published = relay.drain().await.unwrap();
        assert_eq!(published, ids.len(), "{backend}");
        assert_eq!(store.pending().await.unwrap(), 0, "{backend}");
        let mut got = HashSet::new();
        let mut n = 0;
        while let Ok(d) = rx.try_recv() {
            got.insert(d.id);
            n += 1;
        }
        assert_eq!(n, ids.len(), "{backend}: each row once");
        assert_eq!(got, ids, "{backend}");
    }
}
