//! What the engine tests share: a store that counts commits, simulated
//! services, the order saga and a worker run until sagas are final.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rempart_db::test_support::TestDb;
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{
    EngineConfig, Lease, Limits, Saga, SagaBuilder, SagaEngine, SagaRecord, SagaStatus, SagaStore,
    SagaSummary, SqlSagaStore, Step, StepError, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// Counts commits: every `create` and `save` is one transaction.
#[derive(Debug, Clone)]
pub(crate) struct Counting {
    pub(crate) inner: SqlSagaStore,
    pub(crate) commits: Arc<AtomicU32>,
}

impl SagaStore for Counting {
    async fn create(&self, s: &SagaRecord, l: &Lease) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.create(s, l).await
    }
    async fn save(
        &self,
        s: &SagaRecord,
        c: &[usize],
        l: &Lease,
        now: u64,
        release: bool,
    ) -> Result<bool, StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.save(s, c, l, now, release).await
    }
    async fn claim(
        &self,
        o: &str,
        t: &[String],
        now: u64,
        until: u64,
        n: u32,
    ) -> Result<Vec<(SagaRecord, Lease)>, StoreError> {
        self.inner.claim(o, t, now, until, n).await
    }
    async fn renew(&self, id: Uuid, l: &Lease, now: u64) -> Result<(), StoreError> {
        self.inner.renew(id, l, now).await
    }
    async fn load(&self, id: Uuid) -> Result<SagaRecord, StoreError> {
        self.inner.load(id).await
    }
    async fn list(&self, n: u32) -> Result<Vec<SagaSummary>, StoreError> {
        self.inner.list(n).await
    }
    async fn resume(&self, id: Uuid) -> Result<SagaStatus, StoreError> {
        self.inner.resume(id).await
    }
    async fn abort(&self, id: Uuid) -> Result<(), StoreError> {
        self.inner.abort(id).await
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) order_id: u32,
    pub(crate) total_cents: i64,
}

/// What the simulated services did, and what they are told to do.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub(crate) log: Mutex<Vec<String>>,
    /// Calls to fail (retryably) per "step" or "undo step" before succeeding.
    pub(crate) fail_first: Mutex<HashMap<String, u32>>,
    pub(crate) decline_payment: std::sync::atomic::AtomicBool,
    /// Sagas with a call in flight, to catch two workers on one saga.
    pub(crate) active: Mutex<HashSet<Uuid>>,
    pub(crate) overlaps: AtomicU32,
    pub(crate) step_delay_ms: AtomicU32,
    /// Calls that never answer (until the step timeout drops them).
    pub(crate) hang: Mutex<HashSet<String>>,
}

impl World {
    pub(crate) async fn call(&self, what: &str, saga: Uuid) -> Result<(), StepError> {
        if self.hang.lock().unwrap().contains(what) {
            std::future::pending::<()>().await;
        }
        if !self.active.lock().unwrap().insert(saga) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let delay = self.step_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
        }
        self.active.lock().unwrap().remove(&saga);
        let mut fails = self.fail_first.lock().unwrap();
        if let Some(n) = fails.get_mut(what)
            && *n > 0
        {
            *n -= 1;
            return Err(StepError::retryable(format!("{what}: 503")));
        }
        drop(fails);
        self.log.lock().unwrap().push(what.to_owned());
        Ok(())
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

pub(crate) fn order_saga(world: &Arc<World>) -> Saga {
    order_builder(world).build().unwrap()
}

/// Reserve stock, charge, ship: each compensable, calling [`World`].
pub(crate) fn order_builder(world: &Arc<World>) -> SagaBuilder {
    let (w1, w2, w3, w4, w5) = (
        world.clone(),
        world.clone(),
        world.clone(),
        world.clone(),
        world.clone(),
    );
    Saga::builder("create_order")
        .step(Step::compensable(
            "RESERVE_STOCK",
            move |ctx, o: Order| {
                let w = w1.clone();
                async move {
                    w.call("reserve", ctx.saga_id).await?;
                    Ok(json!({"reservation": format!("r-{}", o.order_id)}))
                }
            },
            move |ctx, _o: Order, out: Option<Value>| {
                let w = w2.clone();
                async move {
                    let what = match out {
                        Some(v) => format!("undo reserve {}", v["reservation"].as_str().unwrap()),
                        None => "undo reserve by key".to_owned(),
                    };
                    w.call(&what, ctx.saga_id).await
                }
            },
        ))
        .step(Step::compensable(
            "PROCESS_PAYMENT",
            move |ctx, o: Order| {
                let w = w3.clone();
                async move {
                    if w.decline_payment.load(Ordering::SeqCst) {
                        return Err(StepError::refused("card declined"));
                    }
                    w.call("charge", ctx.saga_id).await?;
                    Ok(o.total_cents)
                }
            },
            move |ctx, _o: Order, _charged: Option<i64>| {
                let w = w4.clone();
                async move { w.call("refund", ctx.saga_id).await }
            },
        ))
        .step(Step::compensable(
            "CREATE_SHIPMENT",
            move |ctx, _o: Order| {
                let w = w5.clone();
                async move {
                    w.call("ship", ctx.saga_id).await?;
                    Ok("s-1".to_owned())
                }
            },
            |_ctx, _o: Order, _s: Option<String>| async { Ok(()) },
        ))
}

pub(crate) fn config() -> EngineConfig {
    EngineConfig {
        lease: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        limits: Limits {
            max_compensation_attempts: 3,
            backoff: rempart::retry::Backoff::constant(Duration::from_millis(5)),
            ..Limits::default()
        },
        ..EngineConfig::default()
    }
}

pub(crate) async fn setup(backend: &str) -> (Counting, Arc<World>, TestDb) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&SAGA_SCHEMA).await.unwrap();
    let store = Counting {
        inner: SqlSagaStore::new(t.db.clone()),
        commits: Arc::new(AtomicU32::new(0)),
    };
    (store, Arc::new(World::default()), t)
}

pub(crate) fn order() -> Value {
    json!({"order_id": 7, "total_cents": 1999})
}

/// Runs a worker until every listed saga is final.
pub(crate) async fn run_until_final(
    engine: &SagaEngine<Counting>,
    ids: &[Uuid],
) -> Vec<SagaRecord> {
    let store = engine.store().clone();
    let ids = ids.to_vec();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        loop {
            let mut all = Vec::new();
            for id in &ids {
                all.push(store.load(*id).await.unwrap());
            }
            if all.iter().all(|r| r.status.is_final()) {
                let _ = tx.send(());
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::timeout(
        Duration::from_secs(60),
        engine.run_worker(async {
            let _ = rx.await;
        }),
    )
    .await
    .expect("the sagas finish");
    watcher.await.unwrap()
}

#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )* }
    };
}
