//! A 3-step no-op durable saga, N in flight, on SQLite (NORMAL and FULL) and
//! PostgreSQL, beside the same store's raw rate of single-row commits (the
//! physical limit for a design that commits at each transition). The engine
//! makes 4 commits per 3-step saga (asserted in tests/engine.rs).
//!
//! Run by the lead on a quiet machine: `cargo bench -p rempart-saga --bench saga`.
//! Needs PostgreSQL on 127.0.0.1:5432 (database `test`); each run uses a new schema.

// A bench measures wall time on purpose.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use rempart_db::{Db, Durability, OpenOptions, with_pool};
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{EngineConfig, Saga, SagaEngine, SqlSagaStore, Step, StepError};
use serde_json::{Value, json};

const IN_FLIGHT: usize = 64;

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

async fn open(backend: &str, durability: Durability) -> (Db, Option<tempfile::TempDir>) {
    let opts = OpenOptions {
        durability,
        max_connections: 16,
        ..OpenOptions::default()
    };
    if backend == "sqlite" {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        (Db::open_with(&url, &opts).await.unwrap(), Some(dir))
    } else {
        let base = "postgres://postgres@127.0.0.1:5432/test";
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::open(base).await.unwrap();
        with_pool!(admin, p => sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(p).await.map(|_| ())).unwrap();
        let url = format!("{base}?options[search_path]={schema}");
        (Db::open_with(&url, &opts).await.unwrap(), None)
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("saga_3_step_noop");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    for (name, backend, durability) in [
        ("sqlite_normal", "sqlite", Durability::Normal),
        ("sqlite_full", "sqlite", Durability::Full),
        ("postgres", "postgres", Durability::Normal),
    ] {
        let (db, _dir) = rt.block_on(open(backend, durability));
        rt.block_on(db.migrate(&SAGA_SCHEMA)).unwrap();
        rt.block_on(async {
            with_pool!(db, p => sqlx::query("CREATE TABLE raw_commits (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
                .execute(p).await.map(|_| ())).unwrap();
        });
        let engine = SagaEngine::new(
            SqlSagaStore::new(db.clone()),
            vec![noop_saga()],
            EngineConfig {
                max_concurrent: IN_FLIGHT as u32,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        group.bench_function(format!("{name}/sagas"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let engine = engine.clone();
                async move {
                    let start = Instant::now();
                    futures_util::stream::iter(0..iters)
                        .map(|_| engine.run("noop", json!({})))
                        .buffer_unordered(IN_FLIGHT)
                        .for_each(|r| async move {
                            r.unwrap();
                        })
                        .await;
                    start.elapsed()
                }
            })
        });
        let next = std::sync::atomic::AtomicI64::new(0);
        group.bench_function(format!("{name}/raw_single_row_commits"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let db = db.clone();
                let next = &next;
                async move {
                    let start = Instant::now();
                    futures_util::stream::iter(0..iters)
                        .map(|_| {
                            let db = db.clone();
                            let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            async move {
                                with_pool!(db, p => sqlx::query("INSERT INTO raw_commits (id, v) VALUES ($1, 'x')")
                                    .bind(id).execute(p).await.map(|_| ()))
                            }
                        })
                        .buffer_unordered(IN_FLIGHT)
                        .for_each(|r| async move {
                            r.unwrap();
                        })
                        .await;
                    start.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
