//! The batch writer against the real databases: fenced and valid writes
//! mixed in one transaction.

use rempart_db::test_support::TestDb;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::record::{SagaStatus, StepRecord, StepStatus};
use crate::store::{SagaStore, SqlSagaStore};

fn saga() -> SagaRecord {
    SagaRecord {
        id: Uuid::new_v4(),
        saga_type: "t".into(),
        status: SagaStatus::InProgress,
        payload: json!({"order": 1}),
        current_step: Some("a".into()),
        error: None,
        next_attempt_at: 0,
        deadline: None,
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

fn lease(fence: i64, expires_at: u64) -> Lease {
    Lease {
        owner: "w1".into(),
        fence,
        expires_at,
    }
}

/// `saga` with step a done and step b started: a save's usual content.
fn advanced(saga: &SagaRecord) -> SagaRecord {
    let mut s = saga.clone();
    s.steps[0].status = StepStatus::Completed;
    s.steps[0].output = Some(json!({"done": true}));
    s.steps[1].status = StepStatus::Started;
    s.steps[1].attempts = 1;
    s.current_step = Some("b".into());
    s
}

fn save(saga: SagaRecord, lease: Lease, now: u64) -> Write {
    Write::Save {
        saga,
        changed: vec![0, 1, 0],
        lease,
        now,
        release: false,
    }
}

async fn mixed_batch(backend: &str) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&crate::schema::SAGA_SCHEMA).await.unwrap();
    let counters = Counters::default();
    let (valid, stale, expired, twice) = (saga(), saga(), saga(), saga());
    for s in [&valid, &stale, &expired, &twice] {
        let create = Write::Create {
            saga: s.clone(),
            lease: lease(1, 1_000),
        };
        write_one(&t.db, &counters, &create).await.unwrap();
    }
    let fresh = saga();
    let batch = [
        save(advanced(&valid), lease(1, 2_000), 500),
        save(advanced(&stale), lease(0, 2_000), 500), // taken over: old token
        save(advanced(&expired), lease(1, 2_000), 1_500), // lease ran out at 1,000
        Write::Create {
            saga: fresh.clone(),
            lease: lease(1, 1_000),
        },
        // The same saga twice in a batch: the stale writer and the holder.
        save(advanced(&twice), lease(0, 2_000), 500),
        save(advanced(&twice), lease(1, 2_000), 500),
    ];
    let before = counters.statements.load(Ordering::Relaxed);
    let writes: Vec<&Write> = batch.iter().collect();
    let results = write_batch(&t.db, &counters, &writes).await.unwrap();
    let answers: Vec<Result<bool, Uuid>> = results
        .into_iter()
        .map(|r| match r {
            Ok(abort) => Ok(abort),
            Err(StoreError::LeaseLost(id)) => Err(id),
            Err(e) => panic!("unexpected: {e}"),
        })
        .collect();
    assert_eq!(
        answers,
        [
            Ok(false),
            Err(stale.id),
            Err(expired.id),
            Ok(false),
            Err(twice.id),
            Ok(false)
        ]
    );
    // Two rounds (a saga written twice): INSERT, UPDATE and upsert, then
    // UPDATE and upsert; never a statement per saga.
    assert_eq!(counters.statements.load(Ordering::Relaxed) - before, 5);
    let store = SqlSagaStore::new(t.db.clone());
    assert_eq!(store.load(valid.id).await.unwrap(), advanced(&valid));
    assert_eq!(store.load(twice.id).await.unwrap(), advanced(&twice));
    assert_eq!(store.load(fresh.id).await.unwrap(), fresh);
    // Fenced out: neither the saga row nor its step rows changed.
    assert_eq!(store.load(stale.id).await.unwrap(), stale);
    assert_eq!(store.load(expired.id).await.unwrap(), expired);
}

#[tokio::test]
async fn a_batch_mixing_fenced_and_valid_writes_commits_the_valid_ones_on_sqlite() {
    mixed_batch("sqlite").await;
}

#[tokio::test]
async fn a_batch_mixing_fenced_and_valid_writes_commits_the_valid_ones_on_postgres() {
    mixed_batch("postgres").await;
}

#[test]
fn placeholders_number_rows_then_columns() {
    assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
}
