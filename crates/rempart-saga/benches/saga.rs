//! A 3-step no-op durable saga, 64 in flight, on SQLite (WAL, NORMAL and
//! FULL) and PostgreSQL, beside the same run's:
//! - durare (DBOS-compatible durable execution: a workflow of 3 checkpointed
//!   no-op steps) on the same pool settings and the same durability;
//! - the store's raw rate of single-row commits (the physical limit for a
//!   design that commits at each transition), and of transactions shaped like
//!   the engine's (three single-row writes each);
//! - the commits each design makes per saga, counted at the database: on
//!   SQLite by a commit hook on every pooled connection (commits that changed
//!   a row; an empty commit writes nothing to the WAL), on PostgreSQL by the
//!   transaction ids consumed (only a writing transaction takes one).
//!
//! Run on a quiet machine (see BENCHMARKS.md for the command and figures):
//! `cargo bench -p rempart-saga --bench saga -- --sample-size 10 --warm-up-time 3 --measurement-time 20`.
//! Needs PostgreSQL on 127.0.0.1:5432 (database `test`); each run uses new schemas.

// A bench measures wall time on purpose.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use durare::{DurableContext, DurableEngine, WorkflowOptions};
use futures_util::StreamExt;
use rempart_db::{Db, Pool, with_pool};
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{EngineConfig, Saga, SagaEngine, SagaStatus, SqlSagaStore, Step, StepError};
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

const IN_FLIGHT: usize = 64;
/// Both designs get pools of this size (rempart-db's bench setting), except
/// in the `sqlite_normal_1conn` control, where SQLite's one writer waits in
/// the pool's queue instead of SQLite's busy handler (which sleeps 1, 2, 5 ms…).
const POOL_SIZE: u32 = 16;
/// Sagas run, outside the timed runs, to count commits per saga.
const COUNTED: u64 = 256;
const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

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

/// durare's equivalent: a workflow whose three no-op steps are each
/// checkpointed (`ctx.step`), as in its `saga` example's happy path.
async fn durare_noop(ctx: DurableContext, n: u64) -> durare::Result<u64> {
    for name in ["a", "b", "c"] {
        ctx.step(name, || async { Ok::<_, durare::Error>(()) })
            .await?;
    }
    Ok(n)
}

/// A SQLite pool with rempart-db's settings (WAL, the given `synchronous`,
/// 5 s busy timeout, foreign keys) whose connections count the commits that
/// changed a row.
async fn sqlite_pool(
    path: &std::path::Path,
    sync: SqliteSynchronous,
    size: u32,
    commits: Arc<AtomicU64>,
) -> sqlx::SqlitePool {
    let connect = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(size)
        .after_connect(move |conn, _| {
            let commits = commits.clone();
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                let wrote = Arc::new(AtomicBool::new(false));
                let w = wrote.clone();
                handle.set_update_hook(move |_| w.store(true, Ordering::Relaxed));
                let w = wrote.clone();
                handle.set_commit_hook(move || {
                    if w.swap(false, Ordering::Relaxed) {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                });
                handle.set_rollback_hook(move || wrote.store(false, Ordering::Relaxed));
                Ok(())
            })
        })
        .connect_with(connect)
        .await
        .unwrap()
}

async fn pg_pool(schema: Option<&str>) -> PgPool {
    let url = match schema {
        Some(s) => format!("{PG}?options[search_path]={s}"),
        None => PG.to_owned(),
    };
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(&url)
        .await
        .unwrap()
}

/// How many commits a backend has made so far (see the module docs).
#[derive(Clone)]
enum CommitCounter {
    Hook(Arc<AtomicU64>),
    /// PostgreSQL's transaction id counter (server-wide: run on a quiet server).
    Xid(PgPool),
}

impl CommitCounter {
    async fn read(&self) -> u64 {
        match self {
            CommitCounter::Hook(n) => n.load(Ordering::Relaxed),
            CommitCounter::Xid(pool) => {
                let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
                    .fetch_one(pool)
                    .await
                    .unwrap();
                u64::try_from(xid).unwrap()
            }
        }
    }

    /// Commits made by `work`, less the counter's own.
    async fn count(&self, work: impl std::future::Future<Output = ()>) -> u64 {
        let before = self.read().await;
        work.await;
        let after = self.read().await;
        let own = u64::from(matches!(self, CommitCounter::Xid(_)));
        after - before - own
    }
}

/// Runs `n` jobs, `IN_FLIGHT` at a time, each in its own task (as a service's
/// request handlers would), and returns the wall time.
async fn in_flight<F, Fut>(n: u64, job: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| tokio::spawn(job(i)))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.unwrap() })
        .await;
    start.elapsed()
}

struct Backend {
    ours: Db,
    ours_commits: CommitCounter,
    durare: Arc<DurableEngine>,
    durare_commits: CommitCounter,
    _dir: Option<tempfile::TempDir>,
}

async fn durare_engine(provider: Arc<dyn durare::StateProvider>) -> Arc<DurableEngine> {
    let mut builder = DurableEngine::builder(provider);
    builder.recover_on_launch(false);
    builder.register("noop", durare_noop);
    Arc::new(builder.build().await.unwrap())
}

async fn sqlite(sync: SqliteSynchronous, size: u32) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (ours_n, durare_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ours_path = dir.path().join("rempart.db");
    let ours = sqlite_pool(&ours_path, sync, size, ours_n.clone()).await;
    let theirs = sqlite_pool(&dir.path().join("durare.db"), sync, size, durare_n.clone()).await;
    let ours = Db::from_pool(
        Pool::Sqlite(ours),
        &format!("sqlite://{}", ours_path.display()),
    );
    let provider = Arc::new(durare::SqliteProvider::from_pool(theirs));
    Backend {
        ours,
        ours_commits: CommitCounter::Hook(ours_n),
        durare: durare_engine(provider).await,
        durare_commits: CommitCounter::Hook(durare_n),
        _dir: Some(dir),
    }
}

async fn postgres() -> Backend {
    let id = uuid::Uuid::new_v4().simple();
    let (ours_schema, durare_schema) = (format!("bench_{id}"), format!("bench_durare_{id}"));
    let admin = pg_pool(None).await;
    sqlx::query(&format!("CREATE SCHEMA {ours_schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let ours = Db::from_pool(Pool::Postgres(pg_pool(Some(&ours_schema)).await), PG);
    let provider =
        durare::PostgresProvider::from_pool_with_schema(pg_pool(None).await, &durare_schema)
            .unwrap();
    Backend {
        ours,
        ours_commits: CommitCounter::Xid(admin.clone()),
        durare: durare_engine(Arc::new(provider)).await,
        durare_commits: CommitCounter::Xid(admin),
        _dir: None,
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
    // Every sample runs many sagas; equal-sized samples keep ramp-up and
    // drain (the first and last 64) a small, constant share of each.
    group.sampling_mode(SamplingMode::Flat);
    for name in [
        "sqlite_normal",
        "sqlite_full",
        "postgres",
        "sqlite_normal_1conn",
    ] {
        let b = rt.block_on(async {
            match name {
                "sqlite_normal" => sqlite(SqliteSynchronous::Normal, POOL_SIZE).await,
                "sqlite_full" => sqlite(SqliteSynchronous::Full, POOL_SIZE).await,
                "sqlite_normal_1conn" => sqlite(SqliteSynchronous::Normal, 1).await,
                _ => postgres().await,
            }
        });
        rt.block_on(b.ours.migrate(&SAGA_SCHEMA)).unwrap();
        rt.block_on(async {
            with_pool!(b.ours, p => sqlx::query("CREATE TABLE raw_commits (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
                .execute(p).await.map(|_| ())).unwrap();
        });
        let engine = SagaEngine::new(
            SqlSagaStore::new(b.ours.clone()),
            vec![noop_saga()],
            EngineConfig {
                max_concurrent: IN_FLIGHT as u32,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        let run_ours = |_| {
            let engine = engine.clone();
            async move {
                let r = engine.run("noop", json!({})).await.unwrap();
                assert_eq!(r.status, SagaStatus::Completed);
            }
        };
        let durare = b.durare.clone();
        let run_durare = |i| {
            let durare = durare.clone();
            async move {
                let handle = durare
                    .start::<u64, u64>("noop", i, WorkflowOptions::default())
                    .await
                    .unwrap();
                assert_eq!(handle.await.unwrap(), i);
            }
        };

        // Commits per saga, counted at the database, outside the timed runs.
        let ours = rt.block_on(b.ours_commits.count(async {
            in_flight(COUNTED, run_ours).await;
        }));
        let theirs = rt.block_on(b.durare_commits.count(async {
            in_flight(COUNTED, run_durare).await;
        }));
        println!(
            "COMMITS {name}: rempart-saga {:.2} per saga, durare {:.2} per saga ({COUNTED} sagas each, {IN_FLIGHT} in flight)",
            ours as f64 / COUNTED as f64,
            theirs as f64 / COUNTED as f64
        );

        group.bench_function(format!("{name}/rempart_sagas"), |bencher| {
            bencher
                .to_async(&rt)
                .iter_custom(|iters| in_flight(iters, run_ours))
        });
        group.bench_function(format!("{name}/durare_sagas"), |bencher| {
            bencher
                .to_async(&rt)
                .iter_custom(|iters| in_flight(iters, run_durare))
        });
        let next = AtomicI64::new(0);
        let db = b.ours.clone();
        group.bench_function(format!("{name}/raw_single_row_commits"), |bencher| {
            bencher.to_async(&rt).iter_custom(|iters| {
                in_flight(iters, |_| {
                    let db = db.clone();
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    async move {
                        with_pool!(db, p => sqlx::query("INSERT INTO raw_commits (id, v) VALUES ($1, 'x')")
                            .bind(id).execute(p).await.map(|_| ()))
                        .unwrap()
                    }
                })
            })
        });
        // The engine's transaction shape without the engine: BEGIN, three
        // single-row writes, COMMIT (a `save` is BEGIN, UPDATE, two upserts,
        // COMMIT). Its rate ÷ 4 is the ceiling for 4 such commits per saga.
        group.bench_function(format!("{name}/raw_3_write_transactions"), |bencher| {
            bencher.to_async(&rt).iter_custom(|iters| {
                in_flight(iters, |_| {
                    let db = db.clone();
                    let id = next.fetch_add(3, Ordering::Relaxed);
                    async move {
                        with_pool!(db, p => async {
                            let mut tx = p.begin().await?;
                            for k in id..id + 3 {
                                sqlx::query("INSERT INTO raw_commits (id, v) VALUES ($1, 'x')")
                                    .bind(k)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            tx.commit().await
                        }.await)
                        .unwrap()
                    }
                })
            })
        });
        drop(b);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
