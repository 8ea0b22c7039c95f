//! One suite for every store, run against SQLite and the real PostgreSQL.

use rempart_db::test_support::TestDb;
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{
    Lease, SagaRecord, SagaStatus, SagaStore, SqlSagaStore, StepRecord, StepStatus, StoreError,
};
use serde_json::json;
use uuid::Uuid;

async fn store(backend: &str) -> (SqlSagaStore, TestDb) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&SAGA_SCHEMA).await.unwrap();
    (SqlSagaStore::new(t.db.clone()), t)
}

fn record(saga_type: &str) -> SagaRecord {
    SagaRecord {
        id: Uuid::new_v4(),
        saga_type: saga_type.into(),
        status: SagaStatus::InProgress,
        payload: json!({"order": 42}),
        current_step: Some("a".into()),
        error: None,
        next_attempt_at: 0,
        deadline: Some(99),
        abort_requested: false,
        steps: vec![
            StepRecord {
                status: StepStatus::Started,
                attempts: 1,
                ..StepRecord::pending("a")
            },
            StepRecord::pending("b"),
        ],
    }
}

fn lease(owner: &str, fence: i64, expires_at: u64) -> Lease {
    Lease {
        owner: owner.into(),
        fence,
        expires_at,
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name("postgres").await } )* }
    };
}

both_backends!(
    a_saga_reads_back_as_written,
    step_records_are_unique_per_saga_and_name,
    a_worker_whose_lease_was_taken_over_cannot_write,
    a_worker_whose_lease_expired_cannot_write,
    a_claim_takes_only_due_free_sagas_of_known_types,
    an_operator_resume_takes_a_flagged_saga_back_to_compensation,
    an_abort_request_reaches_the_holder_at_its_next_write,
    bad_ids_and_finished_sagas_get_clear_errors,
    many_sagas_writing_at_once_share_commits_and_a_fenced_out_one_fails_alone,
);

/// The writes of sagas in flight are group-committed: one that lost its
/// lease must fail alone, and every other must be in the database.
async fn many_sagas_writing_at_once_share_commits_and_a_fenced_out_one_fails_alone(backend: &str) {
    let (s, _t) = store(backend).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.spawn(async move {
            let r = record("t");
            s.create(&r, &lease("w1", 1, 10_000)).await.map(|_| r)
        });
    }
    let mut records = Vec::new();
    while let Some(r) = tasks.join_next().await {
        records.push(r.unwrap().unwrap());
    }
    let fenced_out = records[17].id;
    for r in &records {
        let (s, mut r) = (s.clone(), r.clone());
        tasks.spawn(async move {
            r.steps[0].status = StepStatus::Completed;
            r.steps[0].output = Some(json!({"done": r.id}));
            let fence = if r.id == fenced_out { 0 } else { 1 };
            s.save(&r, &[0], &lease("w1", fence, 10_000), 500, false)
                .await
                .map(|_| r)
        });
    }
    let (mut saved, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(r) => {
                saved += 1;
                assert_eq!(s.load(r.id).await.unwrap(), r);
            }
            Err(StoreError::LeaseLost(id)) => {
                lost += 1;
                assert_eq!(id, fenced_out);
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((saved, lost), (63, 1));
    let untouched = s.load(fenced_out).await.unwrap();
    assert_eq!(untouched.steps[0].status, StepStatus::Started);
    assert_eq!(untouched.steps[0].output, None);
}

async fn a_saga_reads_back_as_written(backend: &str) {
    let (s, _t) = store(backend).await;
    let mut r = record("t");
    s.create(&r, &lease("w1", 1, 1_000)).await.unwrap();
    assert_eq!(s.load(r.id).await.unwrap(), r);
    r.steps[0].status = StepStatus::Completed;
    r.steps[0].output = Some(json!({"reservation": "r-1"}));
    r.steps[1].status = StepStatus::Started;
    r.steps[1].attempts = 1;
    s.save(&r, &[0, 1], &lease("w1", 1, 2_000), 500, false)
        .await
        .unwrap();
    assert_eq!(
        s.load(r.id).await.unwrap(),
        r,
        "outputs survive for compensation"
    );
}

async fn step_records_are_unique_per_saga_and_name(backend: &str) {
    // The seed's ON CONFLICT (saga_id, step_name) failed for want of this constraint.
    let (s, _t) = store(backend).await;
    let r = record("t");
    s.create(&r, &lease("w1", 1, 1_000)).await.unwrap();
    let dup = rempart_db::with_pool!(s.db(), p => sqlx::query(
        "INSERT INTO saga_steps (saga_id, step_name, step_index, status) VALUES ($1, 'a', 0, 'PENDING')")
        .bind(r.id).execute(p).await.map(|_| ()));
    assert!(dup.is_err(), "a second row for (saga, step) is refused");
}

async fn a_worker_whose_lease_was_taken_over_cannot_write(backend: &str) {
    let (s, _t) = store(backend).await;
    let r = record("t");
    s.create(&r, &lease("w1", 1, 100)).await.unwrap();
    // w1 stalls past its lease; w2 claims the saga.
    let claimed = s.claim("w2", &["t".into()], 150, 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let l2 = claimed[0].1.clone();
    assert_eq!(l2.fence, 2, "the claim moved the fencing token on");
    // w1 wakes up, before w2's lease ends and even with a fresh expiry: refused.
    let err = s
        .save(&r, &[0], &lease("w1", 1, 900), 160, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost(id) if id == r.id),
        "{err}"
    );
    assert!(matches!(
        s.renew(r.id, &lease("w1", 1, 900), 160).await,
        Err(StoreError::LeaseLost(_))
    ));
    s.save(&r, &[0], &l2, 160, false).await.unwrap();
}

async fn a_worker_whose_lease_expired_cannot_write(backend: &str) {
    let (s, _t) = store(backend).await;
    let r = record("t");
    s.create(&r, &lease("w1", 1, 100)).await.unwrap();
    let err = s
        .save(&r, &[], &lease("w1", 1, 500), 100, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
}

async fn a_claim_takes_only_due_free_sagas_of_known_types(backend: &str) {
    let (s, _t) = store(backend).await;
    let held = record("t");
    s.create(&held, &lease("w1", 1, 1_000)).await.unwrap();
    let mut waiting = record("t");
    waiting.next_attempt_at = 600;
    s.create(&waiting, &lease("w1", 1, 0)).await.unwrap();
    let unknown = record("someone_elses");
    s.create(&unknown, &lease("w1", 1, 0)).await.unwrap();
    let mut done = record("t");
    done.status = SagaStatus::Completed;
    s.create(&done, &lease("w1", 1, 0)).await.unwrap();
    let stuck = record("t");
    s.create(&stuck, &lease("dead", 1, 200)).await.unwrap();

    let got = s.claim("w2", &["t".into()], 500, 5_000, 10).await.unwrap();
    let ids: Vec<Uuid> = got.iter().map(|(r, _)| r.id).collect();
    assert_eq!(ids, vec![stuck.id], "only the stuck one is due and free");
    assert_eq!(got[0].0, stuck, "it comes with its step records");
    assert!(
        s.claim("w3", &["t".into()], 500, 5_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let later = s.claim("w3", &["t".into()], 700, 5_000, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].0.id, waiting.id);
}

async fn an_operator_resume_takes_a_flagged_saga_back_to_compensation(backend: &str) {
    let (s, _t) = store(backend).await;
    let mut r = record("t");
    r.status = SagaStatus::CompensationFailed;
    r.steps[0].status = StepStatus::Compensating;
    r.steps[0].compensation_attempts = 8;
    s.create(&r, &lease("w1", 1, 0)).await.unwrap();
    assert_eq!(s.resume(r.id).await.unwrap(), SagaStatus::Compensating);
    let back = s.load(r.id).await.unwrap();
    assert_eq!(back.status, SagaStatus::Compensating);
    assert_eq!(back.steps[0].compensation_attempts, 0);
    assert_eq!(
        s.claim("w2", &["t".into()], 1, 100, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn an_abort_request_reaches_the_holder_at_its_next_write(backend: &str) {
    let (s, _t) = store(backend).await;
    let r = record("t");
    s.create(&r, &lease("w1", 1, 1_000)).await.unwrap();
    assert!(
        !s.save(&r, &[], &lease("w1", 1, 1_000), 10, false)
            .await
            .unwrap()
    );
    s.abort(r.id).await.unwrap();
    assert!(
        s.save(&r, &[], &lease("w1", 1, 1_000), 10, false)
            .await
            .unwrap()
    );
}

async fn bad_ids_and_finished_sagas_get_clear_errors(backend: &str) {
    let (s, _t) = store(backend).await;
    let missing = Uuid::new_v4();
    let err = s.load(missing).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no saga {missing} in the database")
    );
    let mut r = record("t");
    r.status = SagaStatus::Completed;
    s.create(&r, &lease("w1", 1, 0)).await.unwrap();
    let err = s.abort(r.id).await.unwrap_err();
    assert!(err.to_string().contains("COMPLETED"), "{err}");
    let err = s.resume(r.id).await.unwrap_err();
    assert!(err.to_string().contains("nothing to resume"), "{err}");
}
