//! One suite for the event store, run against SQLite and the real PostgreSQL.

use std::time::Duration;

use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use rempart_events::journal::TechnicalKind;
use rempart_events::schema::EVENTS_SCHEMA;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{
    Checkpoint, Direction, EventStore, ExpectedVersion, Metadata, NewEvent, StoreError,
    StreamAppend,
};
use rempart_events::verify::{VerifyOptions, verify};
use serde_json::json;

async fn store(backend: &str) -> (EventStore, TestDb) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&EVENTS_SCHEMA).await.unwrap();
    let s = EventStore::new(t.db.clone())
        .with_key(RegisterKey::from_secret("r1", [7; 32]))
        .await
        .unwrap();
    (s, t)
}

fn ev(n: u32) -> NewEvent {
    NewEvent::new("ARTICLE_AJOUTE", json!({"n": n}), Metadata::new("s1", "r1"))
}

fn evs(range: std::ops::Range<u32>) -> Vec<NewEvent> {
    range.map(ev).collect()
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )* }
    };
}

both_backends!(
    a_stream_reads_back_forward_and_backward,
    a_wrong_expected_version_is_refused_with_the_current_one,
    a_batch_over_several_streams_is_all_or_nothing,
    positions_are_gapless_and_read_all_follows_them,
    concurrent_appends_with_the_same_expected_version_have_one_winner,
    the_database_refuses_update_and_delete,
    a_subscription_catches_up_then_goes_live,
    a_snapshot_saves_the_latest_state,
    an_event_sent_twice_is_refused,
    checkpoints_are_signed_and_closures_journaled,
    a_checkpoint_without_the_registers_key_is_refused,
    a_batch_larger_than_one_insert_keeps_every_field_in_place,
    a_replay_lends_what_read_all_gives_and_stops_at_the_first_error,
);

async fn a_stream_reads_back_forward_and_backward(backend: &str) {
    let (s, _t) = store(backend).await;
    let r = s
        .append("t-1", ExpectedVersion::NoStream, evs(0..5))
        .await
        .unwrap();
    assert_eq!((r.version, r.first_position, r.last_position), (5, 1, 5));
    let fwd = s
        .read_stream("t-1", 2, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        fwd.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    assert_eq!(fwd[0].payload, json!({"n": 1}));
    assert_eq!(fwd[0].metadata, Metadata::new("s1", "r1"));
    let back = s
        .read_stream("t-1", 4, Direction::Backward, 2)
        .await
        .unwrap();
    assert_eq!(back.iter().map(|e| e.version).collect::<Vec<_>>(), [4, 3]);
    let end = s
        .read_stream("t-1", u64::MAX, Direction::Backward, 1)
        .await
        .unwrap();
    assert_eq!(end[0].version, 5);
    assert!(
        s.read_stream("other", 1, Direction::Forward, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.stream_version("t-1").await.unwrap(), 5);
    assert_eq!(s.stream_version("other").await.unwrap(), 0);
}

async fn a_wrong_expected_version_is_refused_with_the_current_one(backend: &str) {
    let (s, _t) = store(backend).await;
    let wrong = |r: Result<_, StoreError>, want: u64| match r {
        Err(StoreError::WrongExpectedVersion { current, .. }) => assert_eq!(current, want),
        other => panic!("expected a version conflict, got {other:?}"),
    };
    wrong(
        s.append("t", ExpectedVersion::StreamExists, evs(0..1))
            .await,
        0,
    );
    wrong(s.append("t", ExpectedVersion::Exact(1), evs(0..1)).await, 0);
    s.append("t", ExpectedVersion::NoStream, evs(0..2))
        .await
        .unwrap();
    wrong(s.append("t", ExpectedVersion::NoStream, evs(0..1)).await, 2);
    wrong(s.append("t", ExpectedVersion::Exact(1), evs(0..1)).await, 2);
    s.append("t", ExpectedVersion::Exact(2), evs(0..1))
        .await
        .unwrap();
    s.append("t", ExpectedVersion::StreamExists, evs(0..1))
        .await
        .unwrap();
    let r = s
        .append("t", ExpectedVersion::Any, evs(0..1))
        .await
        .unwrap();
    assert_eq!(r.version, 5);
    assert_eq!(
        s.head_position().await.unwrap(),
        5,
        "refused appends wrote nothing"
    );
}

async fn a_batch_over_several_streams_is_all_or_nothing(backend: &str) {
    let (s, _t) = store(backend).await;
    s.append("b", ExpectedVersion::NoStream, evs(0..1))
        .await
        .unwrap();
    let batch = |b_expected| {
        vec![
            StreamAppend {
                stream_id: "a".into(),
                expected: ExpectedVersion::NoStream,
                events: evs(0..3),
            },
            StreamAppend {
                stream_id: "b".into(),
                expected: b_expected,
                events: evs(0..2),
            },
        ]
    };
    let err = s
        .append_batch(batch(ExpectedVersion::NoStream))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { ref stream, current: 1, .. } if stream == "b"),
        "{err}"
    );
    assert_eq!(
        s.stream_version("a").await.unwrap(),
        0,
        "stream a got nothing"
    );
    assert_eq!(s.head_position().await.unwrap(), 1);
    let r = s
        .append_batch(batch(ExpectedVersion::Exact(1)))
        .await
        .unwrap();
    assert_eq!(
        (r[0].version, r[0].first_position, r[0].last_position),
        (3, 2, 4)
    );
    assert_eq!(
        (r[1].version, r[1].first_position, r[1].last_position),
        (3, 5, 6)
    );
}

async fn positions_are_gapless_and_read_all_follows_them(backend: &str) {
    let (s, _t) = store(backend).await;
    for i in 0..4 {
        s.append(&format!("t-{i}"), ExpectedVersion::Any, evs(0..3))
            .await
            .unwrap();
        // A refused append leaves no hole.
        let _ = s
            .append(&format!("t-{i}"), ExpectedVersion::NoStream, evs(0..3))
            .await
            .unwrap_err();
    }
    let all = s.read_all(1, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter().map(|e| e.chain_seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    let page = s.read_all(5, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert_eq!(page[0].stream_id, "t-1");
}

async fn concurrent_appends_with_the_same_expected_version_have_one_winner(backend: &str) {
    let (s, _t) = store(backend).await;
    s.append("shared", ExpectedVersion::NoStream, evs(0..1))
        .await
        .unwrap();
    // Many rounds of 8 racers, so their transactions really overlap.
    for round in 0..20u64 {
        let expected = 1 + 2 * round;
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (s, start) = (s.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    s.append("shared", ExpectedVersion::Exact(expected), evs(i..i + 2))
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.version, expected + 2);
                }
                Err(StoreError::WrongExpectedVersion { current, .. }) => {
                    assert_eq!(current, expected + 2)
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(s.stream_version("shared").await.unwrap(), 41);
    let report = verify(s.db(), &VerifyOptions::default()).await.unwrap();
    assert!(report.intact(), "{:?}", report.findings);
}

async fn the_database_refuses_update_and_delete(backend: &str) {
    let (s, _t) = store(backend).await;
    s.append("t", ExpectedVersion::NoStream, evs(0..2))
        .await
        .unwrap();
    s.journal("r1", TechnicalKind::Start, &json!({}))
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET payload = '{}' WHERE global_position = 1",
        "DELETE FROM events WHERE global_position = 2",
        "UPDATE technical_events SET detail = '{}'",
        "DELETE FROM technical_events",
        "DELETE FROM register_keys",
    ] {
        let r = with_pool!(s.db(), p => sqlx::query(sql).execute(p).await.map(|_| ()));
        let e = r.expect_err(sql).to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    if backend == "postgres" {
        let r =
            with_pool!(s.db(), p => sqlx::query("TRUNCATE events").execute(p).await.map(|_| ()));
        assert!(r.is_err(), "TRUNCATE is refused too");
    }
    assert_eq!(s.read_all(1, 10).await.unwrap()[0].payload, json!({"n": 0}));
    assert_eq!(s.head_position().await.unwrap(), 2);
}

async fn a_subscription_catches_up_then_goes_live(backend: &str) {
    let (s, _t) = store(backend).await;
    s.append("t", ExpectedVersion::Any, evs(0..3))
        .await
        .unwrap();
    let mut sub = s.subscribe_all(2, Duration::from_secs(60));
    assert_eq!(sub.next().await.unwrap().position, 2);
    assert_eq!(sub.next().await.unwrap().position, 3);
    let waiting = tokio::spawn(async move {
        let a = sub.next().await.unwrap();
        let b = sub.next().await.unwrap();
        (a.position, b.position)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "caught up: it waits");
    s.append("u", ExpectedVersion::Any, evs(0..2))
        .await
        .unwrap();
    // Woken by the append, not by the 60 s poll.
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (4, 5));
}

async fn a_snapshot_saves_the_latest_state(backend: &str) {
    let (s, _t) = store(backend).await;
    assert_eq!(s.load_snapshot("t").await.unwrap(), None);
    s.save_snapshot("t", 10, &json!({"total": 100}))
        .await
        .unwrap();
    s.save_snapshot("t", 20, &json!({"total": 250}))
        .await
        .unwrap();
    s.save_snapshot("t", 15, &json!({"total": 180}))
        .await
        .unwrap();
    let snap = s.load_snapshot("t").await.unwrap().unwrap();
    assert_eq!(
        (snap.version, snap.state),
        (20, json!({"total": 250})),
        "an older snapshot does not replace a newer one"
    );
}

async fn an_event_sent_twice_is_refused(backend: &str) {
    let (s, _t) = store(backend).await;
    let e = ev(1);
    s.append("t", ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    let err = s
        .append("t", ExpectedVersion::Any, vec![ev(2), e.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(id) if id == e.event_id),
        "{err}"
    );
    assert_eq!(s.head_position().await.unwrap(), 1);
}

async fn checkpoints_are_signed_and_closures_journaled(backend: &str) {
    let (s, _t) = store(backend).await;
    let mut batch = evs(0..2);
    batch.push(ev(9).signed(Checkpoint::Ticket));
    s.append("t-1", ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    s.append(
        "closures",
        ExpectedVersion::Any,
        vec![ev(0).signed(Checkpoint::Closure)],
    )
    .await
    .unwrap();
    let all = s.read_all(1, 10).await.unwrap();
    assert!(all[2].signature.as_ref().is_some_and(|s| s.len() == 64));
    assert_eq!(all[1].signature, None);
    let jet = s.read_journal().await.unwrap();
    assert_eq!(jet.len(), 1);
    assert_eq!(jet[0].kind, "closure");
    assert_eq!(jet[0].detail["chain_seq"], 4);
    let report = verify(s.db(), &VerifyOptions::default()).await.unwrap();
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!(
        (report.events, report.signatures, report.journal_records),
        (4, 2, 1)
    );
}

async fn a_checkpoint_without_the_registers_key_is_refused(backend: &str) {
    let (s, _t) = store(backend).await;
    let other = NewEvent::new("TICKET_CLOS", json!({}), Metadata::new("s1", "r2"))
        .signed(Checkpoint::Ticket);
    let err = s
        .append("t", ExpectedVersion::Any, vec![other])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NoKey { ref register, .. } if register == "r2"),
        "{err}"
    );
}

/// A batch of more rows than one INSERT takes (several statements, binds
/// placed by order on SQLite): every event reads back with its own fields.
async fn a_batch_larger_than_one_insert_keeps_every_field_in_place(backend: &str) {
    let (s, _t) = store(backend).await;
    let events = |stream: u32, n: u32| -> Vec<NewEvent> {
        (0..n)
            .map(|i| {
                let mut meta = Metadata::new(&format!("s{}", i % 3), "r1");
                meta.training = i % 2 == 1;
                meta.extra.insert("i".into(), json!(i));
                let mut e = NewEvent::new(&format!("TYPE_{stream}_{i}"), json!({"i": i}), meta);
                e.recorded_at = Some(1_000 + i64::from(i));
                if i % 100 == 99 {
                    e = e.signed(Checkpoint::Ticket);
                }
                e
            })
            .collect()
    };
    let batch = vec![
        StreamAppend {
            stream_id: "big-a".into(),
            expected: ExpectedVersion::NoStream,
            events: events(0, 700),
        },
        StreamAppend {
            stream_id: "big-b".into(),
            expected: ExpectedVersion::NoStream,
            events: events(1, 450),
        },
    ];
    let ids: Vec<_> = batch
        .iter()
        .flat_map(|sa| sa.events.iter().map(|e| e.event_id))
        .collect();
    let r = s.append_batch(batch).await.unwrap();
    assert_eq!((r[0].version, r[0].last_position), (700, 700));
    assert_eq!(
        (r[1].version, r[1].first_position, r[1].last_position),
        (450, 701, 1150)
    );
    let all = s.read_all(1, 2_000).await.unwrap();
    assert_eq!(all.len(), 1150);
    for (at, e) in all.iter().enumerate() {
        let (stream, i) = if at < 700 {
            ("big-a", at)
        } else {
            ("big-b", at - 700)
        };
        let i = i as u32;
        assert_eq!(e.event_id, ids[at]);
        assert_eq!(e.position, at as u64 + 1);
        assert_eq!(e.stream_id, stream);
        assert_eq!(e.version, u64::from(i) + 1);
        assert_eq!(
            e.event_type,
            format!("TYPE_{}_{i}", u32::from(stream == "big-b"))
        );
        assert_eq!(e.payload, json!({"i": i}));
        assert_eq!(e.metadata.store_id, format!("s{}", i % 3));
        assert_eq!(e.metadata.register_id, "r1");
        assert_eq!(e.metadata.training, i % 2 == 1);
        assert_eq!(e.metadata.extra["i"], json!(i));
        assert_eq!(e.recorded_at, 1_000 + i64::from(i));
        assert_eq!(e.chain_seq, at as u64 + 1);
        assert_eq!(e.signature.is_some(), i % 100 == 99);
    }
    let report = verify(s.db(), &VerifyOptions::default()).await.unwrap();
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!((report.events, report.signatures), (1150, 11));
}

async fn a_replay_lends_what_read_all_gives_and_stops_at_the_first_error(backend: &str) {
    let (s, _t) = store(backend).await;
    let mut training = ev(9);
    training.metadata.training = true;
    training
        .metadata
        .extra
        .insert("dateCommerciale".into(), json!("2026-11-29"));
    s.append("t-1", ExpectedVersion::NoStream, evs(0..3))
        .await
        .unwrap();
    s.append("t-2", ExpectedVersion::NoStream, vec![training])
        .await
        .unwrap();
    let all = s.read_all(2, 100).await.unwrap();
    let mut seen = Vec::new();
    let last = s
        .replay_all(2, 100, |e| {
            let payload: serde_json::Value = serde_json::from_str(e.payload).unwrap();
            let extra: serde_json::Value = serde_json::from_str(e.metadata).unwrap();
            seen.push((
                e.position,
                e.stream_id.to_owned(),
                e.version,
                e.event_type.to_owned(),
                payload,
                Metadata {
                    store_id: e.store_id.to_owned(),
                    register_id: e.register_id.to_owned(),
                    training: e.training,
                    extra: extra.as_object().cloned().unwrap(),
                },
            ));
            Ok::<(), StoreError>(())
        })
        .await
        .unwrap();
    let expected: Vec<_> = all
        .iter()
        .map(|e| {
            let r = e.clone();
            (
                r.position,
                r.stream_id,
                r.version,
                r.event_type,
                r.payload,
                r.metadata,
            )
        })
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(last, Some(4));
    assert_eq!(
        s.replay_all(5, 100, |_| Ok::<(), StoreError>(()))
            .await
            .unwrap(),
        None
    );
    // The visitor's error ends the replay at that event.
    let mut visited = 0;
    let e = s
        .replay_all(1, 100, |e| {
            visited += 1;
            if e.position == 2 {
                return Err(StoreError::Invalid("stop here".into()));
            }
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(
        (visited, e.to_string().as_str()),
        (2, "cannot append: stop here")
    );
}
