//! `rempart demo saga`: seed 001 case 2's order saga, durable, live.
//!
//! Three simulated services (inventory, payment, shipping) keep their
//! effects in their own tables, each in its own statements, never in the
//! engine's transactions, so a kill can fall between a service's effect and
//! the engine's record of it, as in production. A rerun on the same
//! database first recovers what a killed run left. The run ends with the
//! invariant check "paid without shipment: 0".

use std::sync::Arc;
use std::time::Duration;

use rempart::chaos::Chaos;
use rempart::rng::SplitMix64;
use rempart_db::{Component, Db, Migration, with_pool};
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{EngineConfig, Limits, Saga, SagaEngine, SqlSagaStore, Step, StepError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::{EXIT_FAILURE, EXIT_USAGE};

/// The demo services' tables, a component of their own.
const DEMO_SCHEMA: Component = Component {
    name: "demo_saga",
    migrations: &[Migration {
        version: 1,
        name: "demo services",
        // saga_id has the type of sagas.id, so the checks can join on it.
        sqlite: "
CREATE TABLE demo_stock_reservations (saga_id BLOB PRIMARY KEY, status VARCHAR(20) NOT NULL);
CREATE TABLE demo_payments (
  saga_id BLOB NOT NULL, idempotency_key VARCHAR(200) NOT NULL UNIQUE,
  amount_cents BIGINT NOT NULL, status VARCHAR(20) NOT NULL);
CREATE TABLE demo_shipments (saga_id BLOB PRIMARY KEY, status VARCHAR(20) NOT NULL);
",
        postgres: "
CREATE TABLE demo_stock_reservations (saga_id UUID PRIMARY KEY, status VARCHAR(20) NOT NULL);
CREATE TABLE demo_payments (
  saga_id UUID NOT NULL, idempotency_key VARCHAR(200) NOT NULL UNIQUE,
  amount_cents BIGINT NOT NULL, status VARCHAR(20) NOT NULL);
CREATE TABLE demo_shipments (saga_id UUID PRIMARY KEY, status VARCHAR(20) NOT NULL);
",
    }],
};

/// The demo's options.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaDemoArgs {
    /// New sagas to start (0: only recover what a previous run left).
    #[arg(long, default_value_t = 50)]
    pub sagas: u32,
    /// Share of calls that fail: payment declines, shipping outages, refund
    /// failures, and calls whose effect is applied but whose answer is lost.
    #[arg(long, default_value_t = 0.2)]
    pub failure_rate: f64,
    /// Seed of the failure schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The database (default: SQLite in a new temporary directory).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Run the engine as a child process, SIGKILL it after this long, then
    /// rerun to recover, e.g. "300ms".
    #[arg(long, value_parser = humantime::parse_duration)]
    pub crash_after: Option<Duration>,
    /// Append each table instead of redrawing it.
    #[arg(long)]
    pub no_redraw: bool,
    /// Exit 1 if sagas are still unfinished after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: i64,
    /// The failure schedule this saga was started with (`--seed`,
    /// `--failure-rate`): a rerun with other options that recovers it draws
    /// the same fate for it, as a real service answers a key the same way.
    #[serde(default)]
    schedule: Option<(u64, f64)>,
}

impl Order {
    /// A draw in [0, 1) fixed by the saga's schedule, its id and `label`,
    /// and the failure rate it is compared with.
    fn draw(&self, run: (u64, f64), saga: uuid::Uuid, label: u64) -> (f64, f64) {
        let (seed, rate) = self.schedule.unwrap_or(run);
        (fixed_draw(seed, saga, label), rate)
    }
}

/// Runs the demo; returns the exit code.
pub(crate) fn run(args: SagaDemoArgs) -> u8 {
    if !(0.0..=1.0).contains(&args.failure_rate) {
        eprintln!(
            "error: --failure-rate {} is outside 0.0 to 1.0",
            args.failure_rate
        );
        return EXIT_USAGE;
    }
    let mut dir = None;
    let url = match &args.database {
        Some(u) => u.clone(),
        None => match tempfile::tempdir() {
            Ok(d) => {
                let u = format!("sqlite://{}", d.path().join("demo.db").display());
                dir = Some(d);
                u
            }
            Err(e) => {
                eprintln!("error: no temporary directory: {e}");
                return EXIT_FAILURE;
            }
        },
    };
    if let Some(after) = args.crash_after {
        return crash_then_recover(&args, &url, after);
    }
    let runtime = match crate::saga::runtime(2) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(run_engine(&args, &url));
    drop(dir);
    code
}

/// `--crash-after`: the same demo in a child process, killed, then a recovery run.
fn crash_then_recover(args: &SagaDemoArgs, url: &str, after: Duration) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this binary to restart it: {e}");
            return EXIT_FAILURE;
        }
    };
    let child_args = |sagas: u32| {
        vec![
            "demo".to_owned(),
            "saga".into(),
            "--no-redraw".into(),
            format!("--sagas={sagas}"),
            format!("--failure-rate={}", args.failure_rate),
            format!("--seed={}", args.seed),
            format!("--database={url}"),
            format!("--max-wait={}", humantime::format_duration(args.max_wait)),
        ]
    };
    let mut child = match std::process::Command::new(&exe)
        .args(child_args(args.sagas))
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the engine process: {e}");
            return EXIT_FAILURE;
        }
    };
    if let Ok(rt) = crate::saga::runtime(1) {
        rt.block_on(async { tokio::time::sleep(after).await });
    }
    // Child::kill is SIGKILL on Unix: no chance to save or release anything.
    let _ = child.kill();
    let _ = child.wait();
    println!("engine process killed after {after:?} (SIGKILL); restarting it to recover");
    match std::process::Command::new(&exe)
        .args(child_args(0))
        .status()
    {
        Ok(s) => s
            .code()
            .map_or(EXIT_FAILURE, |c| u8::try_from(c).unwrap_or(EXIT_FAILURE)),
        Err(e) => {
            eprintln!("error: cannot restart the engine: {e}");
            EXIT_FAILURE
        }
    }
}

/// A draw in [0, 1) that depends only on the seed, the saga and a label:
/// the same on every attempt and after a restart.
fn fixed_draw(seed: u64, saga: uuid::Uuid, label: u64) -> f64 {
    use rempart::rng::Rng;
    let (hi, lo) = saga.as_u64_pair();
    SplitMix64::seeded(seed ^ hi ^ lo.rotate_left(17) ^ label.wrapping_mul(0x9E37)).next_f64()
}

fn order_saga(db: &Db, rate: f64, seed: u64) -> Saga {
    let run = (seed, rate);
    let outage = Arc::new(
        Chaos::<(), StepError>::error(rate, || StepError::retryable("503 service unavailable"))
            .expect("rate checked")
            .with_rng(SplitMix64::seeded(seed)),
    );
    let (d1, d2, d3, d4, d5, d6) = (
        db.clone(),
        db.clone(),
        db.clone(),
        db.clone(),
        db.clone(),
        db.clone(),
    );
    let (o1, o2, o3) = (outage.clone(), outage.clone(), outage);
    Saga::builder("create_order")
        .step_timeout(Duration::from_secs(5))
        .step(Step::compensable(
            "RESERVE_STOCK",
            move |ctx, _o: Order| {
                let db = d1.clone();
                async move {
                    with_pool!(db, p => sqlx::query("INSERT INTO demo_stock_reservations (saga_id, status) VALUES ($1, 'reserved') ON CONFLICT (saga_id) DO NOTHING")
                        .bind(ctx.saga_id).execute(p).await.map(|_| ()))
                        .map_err(StepError::retryable)?;
                    Ok(json!({"reservation": ctx.saga_id.to_string()}))
                }
            },
            move |ctx, _o: Order, _out: Option<serde_json::Value>| {
                let db = d2.clone();
                async move {
                    with_pool!(db, p => sqlx::query("UPDATE demo_stock_reservations SET status = 'released' WHERE saga_id = $1")
                        .bind(ctx.saga_id).execute(p).await.map(|_| ()))
                        .map_err(StepError::retryable)
                }
            },
        ))
        .step(Step::compensable(
            "PROCESS_PAYMENT",
            move |ctx, o: Order| {
                let db = d3.clone();
                async move {
                    // The charge is applied but its answer is lost (a gateway
                    // timeout), on every attempt for some sagas (the saga gives
                    // up on a STARTED step that did take effect: recovery must
                    // refund it by key), on the first two for others (the
                    // retry must find the charge by key, not charge again).
                    let (lost, rate) = o.draw(run, ctx.saga_id, 4);
                    if lost < rate / 3.0 || (lost < rate / 1.5 && ctx.attempt <= 2) {
                        with_pool!(db, p => sqlx::query("INSERT INTO demo_payments (saga_id, idempotency_key, amount_cents, status) VALUES ($1, $2, $3, 'charged') ON CONFLICT (idempotency_key) DO NOTHING")
                            .bind(ctx.saga_id).bind(&ctx.idempotency_key).bind(o.amount_cents).execute(p).await.map(|_| ()))
                            .map_err(StepError::retryable)?;
                        return Err(StepError::retryable("504 gateway timeout after the charge was sent"));
                    }
                    // Like a real payment API: a repeated key answers the first outcome.
                    let charged: Option<i64> = with_pool!(db, p => sqlx::query_scalar("SELECT amount_cents FROM demo_payments WHERE idempotency_key = $1")
                        .bind(&ctx.idempotency_key).fetch_optional(p).await)
                        .map_err(StepError::retryable)?;
                    if let Some(amount) = charged {
                        return Ok(json!({"charged": amount}));
                    }
                    let (declined, rate) = o.draw(run, ctx.saga_id, 1);
                    if declined < rate / 2.0 {
                        return Err(StepError::refused("card declined"));
                    }
                    // One charge per idempotency key, whatever the retries.
                    with_pool!(db, p => sqlx::query("INSERT INTO demo_payments (saga_id, idempotency_key, amount_cents, status) VALUES ($1, $2, $3, 'charged') ON CONFLICT (idempotency_key) DO NOTHING")
                        .bind(ctx.saga_id).bind(&ctx.idempotency_key).bind(o.amount_cents).execute(p).await.map(|_| ()))
                        .map_err(StepError::retryable)?;
                    Ok(json!({"charged": o.amount_cents}))
                }
            },
            move |ctx, o: Order, _out: Option<serde_json::Value>| {
                let db = d4.clone();
                let flaky = o1.clone();
                async move {
                    // Some refunds fail for good: the saga ends COMPENSATION_FAILED.
                    let (rejects, rate) = o.draw(run, ctx.saga_id, 2);
                    if rejects < rate / 10.0 {
                        return Err(StepError::retryable("refund service rejects this card"));
                    }
                    flaky.call(|| async { Ok(()) }).await?;
                    // By idempotency key, not by the step's output: a STARTED
                    // step has none, and its charge may still exist.
                    with_pool!(db, p => sqlx::query("UPDATE demo_payments SET status = 'refunded' WHERE idempotency_key = $1")
                        .bind(&ctx.idempotency_key).execute(p).await.map(|_| ()))
                        .map_err(StepError::retryable)
                }
            },
        ))
        .step(Step::compensable(
            "CREATE_SHIPMENT",
            move |ctx, o: Order| {
                let db = d5.clone();
                let flaky = o2.clone();
                async move {
                    // The shipment is created but every answer is lost: the
                    // saga gives up on a STARTED step; recovery cancels it.
                    let (lost, rate) = o.draw(run, ctx.saga_id, 5);
                    if lost < rate / 6.0 {
                        with_pool!(db, p => sqlx::query("INSERT INTO demo_shipments (saga_id, status) VALUES ($1, 'created') ON CONFLICT (saga_id) DO NOTHING")
                            .bind(ctx.saga_id).execute(p).await.map(|_| ()))
                            .map_err(StepError::retryable)?;
                        return Err(StepError::retryable("shipping API timed out after the request was sent"));
                    }
                    let created: Option<String> = with_pool!(db, p => sqlx::query_scalar("SELECT status FROM demo_shipments WHERE saga_id = $1")
                        .bind(ctx.saga_id).fetch_optional(p).await)
                        .map_err(StepError::retryable)?;
                    if created.is_some() {
                        return Ok(json!({"shipment": ctx.saga_id.to_string()}));
                    }
                    let (refused, rate) = o.draw(run, ctx.saga_id, 3);
                    if refused < rate / 4.0 {
                        return Err(StepError::refused("address not deliverable"));
                    }
                    flaky.call(|| async { Ok(()) }).await?;
                    with_pool!(db, p => sqlx::query("INSERT INTO demo_shipments (saga_id, status) VALUES ($1, 'created') ON CONFLICT (saga_id) DO NOTHING")
                        .bind(ctx.saga_id).execute(p).await.map(|_| ()))
                        .map_err(StepError::retryable)?;
                    Ok(json!({"shipment": ctx.saga_id.to_string()}))
                }
            },
            move |ctx, _o: Order, _out: Option<serde_json::Value>| {
                let db = d6.clone();
                let flaky = o3.clone();
                async move {
                    flaky.call(|| async { Ok(()) }).await?;
                    with_pool!(db, p => sqlx::query("UPDATE demo_shipments SET status = 'cancelled' WHERE saga_id = $1")
                        .bind(ctx.saga_id).execute(p).await.map(|_| ()))
                        .map_err(StepError::retryable)
                }
            },
        ))
        .build()
        .expect("a valid definition")
}

async fn run_engine(args: &SagaDemoArgs, url: &str) -> u8 {
    let db = match Db::open(url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            };
        }
    };
    for c in [&SAGA_SCHEMA, &DEMO_SCHEMA] {
        if let Err(e) = db.migrate(c).await {
            eprintln!("error: {e}");
            return EXIT_FAILURE;
        }
    }
    println!("database: {}", db.url());
    let config = EngineConfig {
        lease: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        max_concurrent: 32,
        limits: Limits {
            max_compensation_attempts: 4,
            backoff: rempart::retry::Backoff::Exponential {
                initial: Duration::from_millis(10),
                multiplier: 2.0,
                max: Duration::from_millis(200),
            },
            ..Limits::default()
        },
        ..EngineConfig::default()
    };
    let store = SqlSagaStore::new(db.clone());
    let engine = match SagaEngine::new(
        store,
        vec![order_saga(&db, args.failure_rate, args.seed)],
        config,
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILURE;
        }
    };
    let recovering = count_unfinished(&db).await.unwrap_or(0);
    if recovering > 0 {
        println!("recovering {recovering} unfinished sagas from an earlier run");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .run_worker(async {
                    let _ = stop_rx.await;
                })
                .await
        })
    };
    for i in 0..args.sagas {
        let order = json!({
            "order_id": i,
            "amount_cents": 1_000 + i64::from(i),
            "schedule": [args.seed, args.failure_rate],
        });
        if let Err(e) = engine.start("create_order", order).await {
            eprintln!("error: {e}");
            return EXIT_FAILURE;
        }
    }
    let mut waited = Duration::ZERO;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        waited += Duration::from_millis(250);
        let unfinished = count_unfinished(&db).await.unwrap_or(u64::MAX);
        if waited.as_millis().is_multiple_of(1000) || unfinished == 0 {
            print_table(&db, args.no_redraw, recovering).await;
        }
        if unfinished == 0 {
            break;
        }
        if waited > args.max_wait {
            eprintln!(
                "error: {unfinished} sagas still unfinished after {:?}",
                args.max_wait
            );
            return EXIT_FAILURE;
        }
    }
    let _ = stop_tx.send(());
    let _ = worker.await;
    let flagged: i64 = with_pool!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM sagas WHERE status = 'COMPENSATION_FAILED'").fetch_one(p).await).unwrap_or(-1);
    println!("flagged for an operator (COMPENSATION_FAILED): {flagged}");
    match check_invariants(&db).await {
        Ok(v) if v.iter().all(|(_, n)| *n == 0) => {
            for (what, n) in v {
                println!("{what}: {n}");
            }
            0
        }
        Ok(v) => {
            for (what, n) in v {
                println!("{what}: {n}");
            }
            eprintln!("error: an invariant is broken");
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

async fn count_unfinished(db: &Db) -> Result<u64, sqlx::Error> {
    let n: i64 = with_pool!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM sagas WHERE status IN ('STARTED', 'IN_PROGRESS', 'COMPENSATING')").fetch_one(p).await)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn print_table(db: &Db, no_redraw: bool, recovered: u64) {
    let rows: Result<Vec<(String, i64)>, sqlx::Error> = with_pool!(db, p => {
        sqlx::query("SELECT status, COUNT(*) FROM sagas GROUP BY status ORDER BY status")
            .fetch_all(p)
            .await
            .and_then(|rows| rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect())
    });
    let Ok(rows) = rows else { return };
    if !no_redraw {
        print!("\x1b[2J\x1b[H");
    }
    println!("{:<20} {:>6}", "STATUS", "SAGAS");
    for (status, n) in rows {
        println!("{status:<20} {n:>6}");
    }
    let compensated: i64 = with_pool!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM saga_steps WHERE status = 'COMPENSATED'").fetch_one(p).await).unwrap_or(0);
    println!("steps compensated: {compensated}, sagas recovered from a killed run: {recovered}");
}

/// The checks a reader can also run by hand on the tables; each must be 0.
/// Sagas flagged COMPENSATION_FAILED (a refund that failed for good) are the
/// operators' to fix, and are counted apart.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "unfinished sagas",
        "SELECT COUNT(*) FROM sagas WHERE status IN ('STARTED', 'IN_PROGRESS', 'COMPENSATING')",
    ),
    (
        "paid without shipment",
        "SELECT COUNT(*) FROM demo_payments p WHERE p.status = 'charged'
           AND NOT EXISTS (SELECT 1 FROM demo_shipments s WHERE s.saga_id = p.saga_id AND s.status = 'created')
           AND NOT EXISTS (SELECT 1 FROM sagas g WHERE g.id = p.saga_id AND g.status = 'COMPENSATION_FAILED')",
    ),
    (
        "reservation held by a compensated saga",
        "SELECT COUNT(*) FROM demo_stock_reservations r JOIN sagas g ON g.id = r.saga_id
           WHERE r.status = 'reserved' AND g.status = 'COMPENSATED'",
    ),
    (
        "charged twice",
        "SELECT COUNT(*) FROM (SELECT saga_id FROM demo_payments GROUP BY saga_id HAVING COUNT(*) > 1) t",
    ),
    (
        "shipped without payment",
        "SELECT COUNT(*) FROM demo_shipments s WHERE s.status = 'created'
           AND NOT EXISTS (SELECT 1 FROM demo_payments p WHERE p.saga_id = s.saga_id AND p.status = 'charged')",
    ),
];

async fn check_invariants(db: &Db) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let mut out = Vec::new();
    for (what, sql) in INVARIANTS {
        let n: i64 = with_pool!(db, p => sqlx::query_scalar(sql).fetch_one(p).await)?;
        out.push((*what, n));
    }
    Ok(out)
}
