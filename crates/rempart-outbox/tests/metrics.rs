//! The outbox metrics, read through a prometheus-client registry, on both backends.

mod common;

use common::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use rempart_db::with_pool;
use rempart_outbox::{
    ChannelDestination, Inbox, Message, OutboxMetrics, Relay, Routing, message_id,
};

fn text(registry: &Registry) -> String {
    let mut s = String::new();
    encode(&mut s, registry).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_the_backlog_publishes_errors_lag_and_inbox_duplicates_and_early_ones() {
    for backend in BACKENDS {
        let (t, store) = setup(backend).await;
        let metrics = OutboxMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let (dest, _rx) = ChannelDestination::new(64, Routing::prefixed("t"));
        let relay = Relay::new(store, dest.with_max_payload(500), fast_config())
            .with_metrics(metrics.clone());
        for n in 1..=3 {
            enqueue(&t.db, &order_created("a", n)).await;
        }
        let big = Message::new(
            "order",
            "b",
            "OrderNoted",
            serde_json::json!({"note": "n".repeat(600)}),
        )
        .unwrap();
        enqueue(&t.db, &big).await;

        let backlog = relay.refresh_backlog().await.unwrap();
        assert_eq!(backlog.pending, 4, "{backend}");
        assert!(
            backlog.oldest_age_seconds < 3600.0,
            "{backend}: {backlog:?}"
        );
        assert!(
            text(&registry).contains("\noutbox_pending 4\n"),
            "{backend}"
        );

        while relay.run_once().await.unwrap().claimed > 0 {}
        relay.refresh_backlog().await.unwrap();
        let s = text(&registry);
        for line in [
            "\noutbox_pending 0\n",
            "\noutbox_oldest_pending_age_seconds 0.0\n",
            "\noutbox_published_total{destination=\"channel\"} 3\n",
            "\noutbox_publish_errors_total{destination=\"channel\"} 1\n",
            "\noutbox_relay_lag_seconds_count 3\n",
        ] {
            assert!(s.contains(line), "{backend}: no {line:?} in\n{s}");
        }

        let consumer = unique("c");
        let id = message_id(big.id);
        for _ in 0..2 {
            with_pool!(t.db, pool => {
                let mut tx = pool.begin().await.unwrap();
                Inbox::handle_once(&mut tx, &consumer, &id, async |_tx| {
                    Ok::<_, rempart_outbox::EnqueueError>(())
                })
                .await
                .unwrap();
                tx.commit().await.unwrap();
            });
        }
        let line = format!("\ninbox_duplicates_total{{consumer=\"{consumer}\"}} 1\n");
        assert!(text(&registry).contains(&line), "{backend}: no {line:?}");

        // Seq 2 of an aggregate before its seq 1: counted, not applied.
        let position = rempart_outbox::Position {
            aggregate_type: "order".into(),
            aggregate_id: unique("o"),
            seq: 2,
        };
        with_pool!(t.db, pool => {
            let mut tx = pool.begin().await.unwrap();
            let h = Inbox::handle_in_order(&mut tx, &consumer, "early", Some(&position), async |_tx| {
                Ok::<_, rempart_outbox::EnqueueError>(())
            })
            .await
            .unwrap();
            assert_eq!(h, rempart_outbox::Handled::Early { expected: 1 }, "{backend}");
            tx.commit().await.unwrap();
        });
        let line = format!("\ninbox_out_of_order_total{{consumer=\"{consumer}\"}} 1\n");
        assert!(text(&registry).contains(&line), "{backend}: no {line:?}");
    }
}
