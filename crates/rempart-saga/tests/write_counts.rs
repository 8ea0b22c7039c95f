//! What the engine's writes cost in SQL statements, on SQLite and the real
//! PostgreSQL. Once writes are group-committed, statements (round trips and
//! parses), not commits, bound the rate: each batch must take a fixed number
//! of statements, whatever the number of sagas in it.
//!
//! The figures (statements and transactions per saga, 64 in flight) are
//! printed: `cargo test -p rempart-saga --test write_counts -- --nocapture`.

use rempart_db::test_support::TestDb;
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{EngineConfig, Saga, SagaEngine, SagaStatus, SqlSagaStore, Step, StepError};
use serde_json::{Value, json};

fn noop_saga() -> Saga {
    let noop = |_ctx, _input: Value| async { Ok::<_, StepError>(json!(null)) };
    let undo = |_ctx, _input: Value, _out: Option<Value>| async { Ok(()) };
    Saga::builder("noop")
        .step(Step::compensable("a", noop, undo))
        .step(Step::compensable("b", noop, undo))
        .step(Step::compensable("c", noop, undo))
        .build()
        .unwrap()
}

async fn engine(backend: &str) -> (SagaEngine<SqlSagaStore>, TestDb) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&SAGA_SCHEMA).await.unwrap();
    let store = SqlSagaStore::new(t.db.clone());
    (
        SagaEngine::new(store, vec![noop_saga()], EngineConfig::default()).unwrap(),
        t,
    )
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )* }
    };
}

both_backends!(
    a_lone_saga_takes_two_statements_per_write,
    sagas_in_flight_share_statements,
);

/// Alone, a 3-step saga writes 4 times (create, then each step's result
/// with the next step's start or the final status); each write is one
/// statement for the saga row and one for its step rows.
async fn a_lone_saga_takes_two_statements_per_write(backend: &str) {
    let (engine, _t) = engine(backend).await;
    let r = engine.run("noop", json!({})).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    let c = engine.store().write_counts();
    assert_eq!((c.transactions, c.statements), (4, 8), "{c:?}");
}

/// Many sagas in flight: their writes share transactions and statements.
async fn sagas_in_flight_share_statements(backend: &str) {
    const SAGAS: u64 = 256;
    let (engine, _t) = engine(backend).await;
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..SAGAS {
        let (engine, sem) = (engine.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            engine.run("noop", json!({})).await.unwrap().status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), SagaStatus::Completed);
    }
    let c = engine.store().write_counts();
    let per_saga = |n: u64| n as f64 / SAGAS as f64;
    println!(
        "{backend}: {SAGAS} sagas, 64 in flight: {:.3} statements/saga, {:.3} transactions/saga",
        per_saga(c.statements),
        per_saga(c.transactions)
    );
    // Never more than alone: 2 statements per write, 4 writes per saga.
    assert!(c.statements <= 8 * SAGAS, "{c:?}");
}
