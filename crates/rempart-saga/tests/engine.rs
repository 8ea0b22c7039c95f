//! The engine end to end, on SQLite and the real PostgreSQL.

mod support;

use support::*;

use std::sync::atomic::Ordering;
use std::time::Duration;

use rempart_saga::{
    EngineConfig, Lease, SagaEngine, SagaError, SagaRecord, SagaStatus, SagaStore, StepStatus,
};
use serde_json::json;
use uuid::Uuid;

both_backends!(
    a_three_step_saga_completes_in_four_commits,
    a_declined_payment_compensates_in_reverse_with_the_stored_outputs,
    retryable_errors_are_retried_then_the_saga_completes,
    a_compensation_that_keeps_failing_is_flagged_then_resumed_by_an_operator,
    a_crashed_engine_is_resumed_from_the_step_records_not_from_step_one,
    a_payload_that_does_not_deserialize_compensates_with_a_clear_error,
    an_unknown_saga_type_is_a_clear_error_and_left_alone,
    an_operator_abort_compensates_a_running_saga,
);

async fn a_three_step_saga_completes_in_four_commits(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    let commits = store.commits.clone();
    let engine = SagaEngine::new(store, vec![order_saga(&world)], config()).unwrap();
    let r = engine.run("create_order", order()).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(world.log(), ["reserve", "charge", "ship"]);
    assert_eq!(commits.load(Ordering::SeqCst), 4);
    let stored = engine.store().load(r.id).await.unwrap();
    assert_eq!(stored.status, SagaStatus::Completed);
    assert!(
        stored
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Completed)
    );
}

async fn a_declined_payment_compensates_in_reverse_with_the_stored_outputs(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    world.decline_payment.store(true, Ordering::SeqCst);
    let engine = SagaEngine::new(store, vec![order_saga(&world)], config()).unwrap();
    let r = engine.run("create_order", order()).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    // Refused at once (no retry), and the reservation undone with its stored id.
    assert_eq!(world.log(), ["reserve", "undo reserve r-7"]);
    assert!(r.error.unwrap().contains("card declined"));
    let stored = engine.store().load(r.id).await.unwrap();
    assert_eq!(stored.steps[1].status, StepStatus::Failed);
    assert_eq!(stored.steps[0].status, StepStatus::Compensated);
}

async fn retryable_errors_are_retried_then_the_saga_completes(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    world.fail_first.lock().unwrap().insert("charge".into(), 2);
    let engine = SagaEngine::new(store, vec![order_saga(&world)], config()).unwrap();
    let id = engine.start("create_order", order()).await.unwrap();
    let done = run_until_final(&engine, &[id]).await;
    assert_eq!(done[0].status, SagaStatus::Completed);
    assert_eq!(done[0].steps[1].attempts, 3);
    assert_eq!(world.log(), ["reserve", "charge", "ship"]);
}

async fn a_compensation_that_keeps_failing_is_flagged_then_resumed_by_an_operator(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    world.decline_payment.store(true, Ordering::SeqCst);
    world
        .fail_first
        .lock()
        .unwrap()
        .insert("undo reserve r-7".into(), 3);
    let engine = SagaEngine::new(store, vec![order_saga(&world)], config()).unwrap();
    let id = engine.start("create_order", order()).await.unwrap();
    let done = run_until_final(&engine, &[id]).await;
    assert_eq!(done[0].status, SagaStatus::CompensationFailed);
    assert_eq!(
        done[0].steps[0].compensation_attempts, 3,
        "retried, then flagged"
    );
    assert!(done[0].error.as_deref().unwrap().contains("503"));
    // The operator fixed the cause (no more failures queued), and resumes.
    engine.store().resume(id).await.unwrap();
    let done = run_until_final(&engine, &[id]).await;
    assert_eq!(done[0].status, SagaStatus::Compensated);
    assert_eq!(world.log(), ["reserve", "undo reserve r-7"]);
}

async fn a_crashed_engine_is_resumed_from_the_step_records_not_from_step_one(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    // Engine A hangs in the payment call and dies (its task is aborted).
    world.step_delay_ms.store(60_000, Ordering::SeqCst);
    let short = EngineConfig {
        lease: Duration::from_millis(600),
        ..config()
    };
    let a = SagaEngine::new(store.clone(), vec![order_saga(&world)], short.clone()).unwrap();
    let record_id = {
        let a2 = a.clone();
        let task = tokio::spawn(async move { a2.run("create_order", order()).await });
        // Killed while its first call is in flight (not after a fixed time,
        // which a loaded machine may not reach the call within).
        let in_flight = async {
            while world.active.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), in_flight)
            .await
            .expect("engine A never reached its first call");
        task.abort();
        let _ = task.await;
        engine_list_one(&store).await
    };
    let before = store.load(record_id).await.unwrap();
    assert_eq!(
        before.steps[0].status,
        StepStatus::Started,
        "STARTED was written before the call"
    );
    // Engine B takes over once A's lease expires; the call may have run,
    // so it runs again with the same idempotency key, then goes on.
    world.step_delay_ms.store(0, Ordering::SeqCst);
    let b = SagaEngine::new(store.clone(), vec![order_saga(&world)], short).unwrap();
    let done = run_until_final(&b, &[record_id]).await;
    assert_eq!(done[0].status, SagaStatus::Completed);
    assert_eq!(done[0].steps[0].attempts, 2);
    assert_eq!(world.log(), ["reserve", "charge", "ship"]);

    // And a saga whose first step completed before the crash does not run it again.
    world.log.lock().unwrap().clear();
    let mut r = store.load(record_id).await.unwrap();
    r.id = Uuid::new_v4();
    r.status = SagaStatus::InProgress;
    r.steps[1].status = StepStatus::Pending;
    r.steps[2].status = StepStatus::Pending;
    store
        .create(
            &r,
            &Lease {
                owner: "dead".into(),
                fence: 1,
                expires_at: 0,
            },
        )
        .await
        .unwrap();
    let done = run_until_final(&b, &[r.id]).await;
    assert_eq!(done[0].status, SagaStatus::Completed);
    assert_eq!(
        world.log(),
        ["charge", "ship"],
        "step 1 was not executed again"
    );
}

async fn engine_list_one(store: &Counting) -> Uuid {
    let list = store.list(10).await.unwrap();
    assert_eq!(list.len(), 1);
    list[0].id
}

async fn a_payload_that_does_not_deserialize_compensates_with_a_clear_error(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    let engine = SagaEngine::new(store, vec![order_saga(&world)], config()).unwrap();
    let r = engine
        .run("create_order", json!({"order_id": "seven"}))
        .await
        .unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    let err = r.error.unwrap();
    assert!(err.contains("saga payload does not match"), "{err}");
    assert!(world.log().is_empty(), "no service was called");
}

async fn an_unknown_saga_type_is_a_clear_error_and_left_alone(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    let engine = SagaEngine::new(store.clone(), vec![order_saga(&world)], config()).unwrap();
    let err = engine.run("refund_order", order()).await.unwrap_err();
    assert!(matches!(err, SagaError::UnknownType(..)));
    assert!(
        err.to_string().contains("\"refund_order\"") && err.to_string().contains("create_order")
    );
    // A row of a type this engine does not know (another service's) is not touched.
    let mut foreign = store
        .inner
        .load(engine.run("create_order", order()).await.unwrap().id)
        .await
        .unwrap();
    foreign.id = Uuid::new_v4();
    foreign.saga_type = "someone_elses".into();
    foreign.status = SagaStatus::InProgress;
    store
        .create(
            &foreign,
            &Lease {
                owner: "x".into(),
                fence: 1,
                expires_at: 0,
            },
        )
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = engine.clone();
    let h = tokio::spawn(async move {
        worker
            .run_worker(async {
                let _ = rx.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = tx.send(());
    h.await.unwrap();
    assert_eq!(
        store.load(foreign.id).await.unwrap().status,
        SagaStatus::InProgress
    );
}

async fn an_operator_abort_compensates_a_running_saga(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    world
        .fail_first
        .lock()
        .unwrap()
        .insert("charge".into(), 1_000_000);
    // Retries would go on for long: only the abort ends them.
    let mut cfg = config();
    cfg.limits.max_step_attempts = 1_000_000;
    let engine = SagaEngine::new(store.clone(), vec![order_saga(&world)], cfg).unwrap();
    let id = engine.start("create_order", order()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.abort(id).await.unwrap();
    let done = run_until_final(&engine, &[id]).await;
    assert_eq!(done[0].status, SagaStatus::Compensated);
    let log = world.log();
    assert!(log.contains(&"undo reserve r-7".to_owned()), "{log:?}");
    assert!(
        log.contains(&"refund".to_owned()),
        "the payment may have run: refunded by key: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_postgres_never_run_a_saga_at_once_and_finish_all() {
    let (store, world, _t) = setup("postgres").await;
    world.step_delay_ms.store(3, Ordering::SeqCst);
    let cfg = EngineConfig {
        max_concurrent: 8,
        ..config()
    };
    let mut ids = Vec::new();
    for i in 0..40 {
        let mut r = SagaRecord {
            id: Uuid::new_v4(),
            saga_type: "create_order".into(),
            status: SagaStatus::Started,
            payload: json!({"order_id": i, "total_cents": 100}),
            current_step: None,
            error: None,
            next_attempt_at: 0,
            deadline: None,
            abort_requested: false,
            steps: ["RESERVE_STOCK", "PROCESS_PAYMENT", "CREATE_SHIPMENT"]
                .iter()
                .map(|n| rempart_saga::StepRecord::pending(n))
                .collect(),
        };
        r.current_step = None;
        store
            .create(
                &r,
                &Lease {
                    owner: "nobody".into(),
                    fence: 0,
                    expires_at: 0,
                },
            )
            .await
            .unwrap();
        ids.push(r.id);
    }
    let a = SagaEngine::new(store.clone(), vec![order_saga(&world)], cfg.clone()).unwrap();
    let b = SagaEngine::new(store.clone(), vec![order_saga(&world)], cfg).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    let mut rx1 = rx;
    let ha = tokio::spawn(async move {
        a.run_worker(async move {
            let _ = rx1.changed().await;
        })
        .await
    });
    let hb = tokio::spawn(async move {
        b.run_worker(async move {
            let _ = rx2.changed().await;
        })
        .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for id in &ids {
            if store.load(*id).await.unwrap().status == SagaStatus::Completed {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of 40 finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).unwrap();
    ha.await.unwrap();
    hb.await.unwrap();
    assert_eq!(
        world.overlaps.load(Ordering::SeqCst),
        0,
        "a saga ran in two workers at once"
    );
    assert_eq!(world.log().len(), 40 * 3, "every step ran exactly once");
}

#[tokio::test]
async fn metrics_count_started_finished_and_step_durations_by_type() {
    let (store, world, _t) = setup("sqlite").await;
    let engine = SagaEngine::new(store, vec![order_saga(&world)], config()).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    engine.metrics().register(&mut registry);
    engine.run("create_order", order()).await.unwrap();
    world.decline_payment.store(true, Ordering::SeqCst);
    engine.run("create_order", order()).await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "saga_started_total{type=\"create_order\"} 2",
        "saga_finished_total{type=\"create_order\",status=\"COMPLETED\"} 1",
        "saga_finished_total{type=\"create_order\",status=\"COMPENSATED\"} 1",
        "saga_step_duration_seconds_count{type=\"create_order\",step=\"RESERVE_STOCK\"} 2",
        "saga_in_progress{type=\"create_order\"} 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_finishes_its_call_saves_and_releases_the_saga() {
    let (store, world, _t) = setup("sqlite").await;
    world.step_delay_ms.store(300, Ordering::SeqCst);
    let engine = SagaEngine::new(store.clone(), vec![order_saga(&world)], config()).unwrap();
    // A saga for the worker to pick up (no engine holds it).
    let id = Uuid::new_v4();
    let mut r = store
        .inner
        .load(engine.run("create_order", order()).await.unwrap().id)
        .await
        .unwrap();
    r.id = id;
    r.status = SagaStatus::Started;
    for s in &mut r.steps {
        *s = rempart_saga::StepRecord::pending(&s.name);
    }
    store
        .create(
            &r,
            &Lease {
                owner: "nobody".into(),
                fence: 0,
                expires_at: 0,
            },
        )
        .await
        .unwrap();
    world.log.lock().unwrap().clear();
    // Shut down while the first step's call is in flight.
    engine
        .run_worker(tokio::time::sleep(Duration::from_millis(150)))
        .await;
    let after = store.load(id).await.unwrap();
    assert_eq!(
        after.steps[0].status,
        StepStatus::Completed,
        "the call in flight was finished and saved"
    );
    assert_eq!(
        after.steps[1].status,
        StepStatus::Pending,
        "no new step was started"
    );
    assert_eq!(world.log(), ["reserve"]);
    // Released: another worker takes it at once, without waiting for the lease.
    let now_ms =
        rempart::clock::Clock::now(&rempart::clock::UnixClock::new()).as_nanos() / 1_000_000;
    let claimed = store
        .claim(
            "other",
            &["create_order".into()],
            now_ms,
            now_ms + 1_000,
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the lease was let go on shutdown");
}
