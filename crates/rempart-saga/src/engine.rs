//! The engine: runs the pure decision against the store and the steps.
//!
//! A saga is driven by one engine at a time, the holder of its lease. Each
//! write carries the fencing token, so a worker that lost its lease stops at
//! its next write. The writes are arranged so a 3-step saga writes 4 times:
//! the start (saga row, step rows, step 1 STARTED), then each step's result
//! together with the next step's start (or the saga's final status). The
//! SQL store group-commits the writes of sagas in flight (`group_commit.rs`),
//! so with many sagas running a saga costs fewer than 4 commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rempart::bulkhead::Bulkhead;
use rempart::clock::{Clock, UnixClock};
use rempart::rng::SplitMix64;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::decision::{self, Action, Limits, Outcome};
use crate::definition::Saga;
use crate::metrics::SagaMetrics;
use crate::record::{SagaRecord, SagaStatus, StepRecord};
use crate::step::{StepContext, StepError};
use crate::store::{Lease, SagaStore, StoreError};

/// An engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This worker's name in `lease_owner` (unique per process).
    pub owner: String,
    /// How long a claim holds a saga without renewal.
    pub lease: Duration,
    /// How often a worker looks for due and stuck sagas.
    pub poll_interval: Duration,
    /// Sagas driven at once (rempart's bulkhead).
    pub max_concurrent: u32,
    /// Retry limits and backoff.
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            owner: format!("engine-{}", Uuid::new_v4().simple()),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            max_concurrent: 64,
            limits: Limits::default(),
        }
    }
}

/// What can stop an engine call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// No definition with this name was registered with the engine.
    #[error("unknown saga type {0:?}; this engine knows {1}")]
    UnknownType(String, String),
    /// The stored steps do not match the definition (it changed under a running saga).
    #[error("saga {id}: its stored steps {stored:?} do not match the definition's {defined:?}")]
    ShapeMismatch {
        /// The saga.
        id: Uuid,
        /// Step names in the database.
        stored: Vec<String>,
        /// Step names in the definition.
        defined: Vec<String>,
    },
    /// The store failed (including a lost lease).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Two definitions share a name, or the bulkhead could not be built.
    #[error("{0}")]
    Config(String),
}

/// Runs sagas of the registered definitions on a store.
#[derive(Debug, Clone)]
pub struct SagaEngine<S: SagaStore> {
    inner: Arc<Inner<S>>,
}

#[derive(Debug)]
struct Inner<S> {
    store: S,
    sagas: HashMap<String, Saga>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    bulkhead: Bulkhead,
    metrics: SagaMetrics,
    rng: Mutex<SplitMix64>,
}

impl<S: SagaStore> SagaEngine<S> {
    /// An engine for `sagas` on `store`, reading wall-clock time.
    pub fn new(store: S, sagas: Vec<Saga>, config: EngineConfig) -> Result<Self, SagaError> {
        Self::with_clock(store, sagas, config, Arc::new(UnixClock::new()))
    }

    /// The same, on a given clock (its nanoseconds are read as time since the
    /// Unix epoch, shared by every engine on the store).
    pub fn with_clock(
        store: S,
        sagas: Vec<Saga>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SagaError> {
        let mut map = HashMap::new();
        for s in sagas {
            if let Some(old) = map.insert(s.name.clone(), s) {
                return Err(SagaError::Config(format!(
                    "two definitions are named {:?}",
                    old.name
                )));
            }
        }
        let bulkhead = Bulkhead::builder()
            .name("saga")
            .max_concurrent(config.max_concurrent)
            .build()
            .map_err(|e| SagaError::Config(e.to_string()))?;
        Ok(SagaEngine {
            inner: Arc::new(Inner {
                store,
                sagas: map,
                config,
                clock,
                bulkhead,
                metrics: SagaMetrics::default(),
                rng: Mutex::new(SplitMix64::from_entropy()),
            }),
        })
    }

    /// The engine's metrics (register them with [`SagaMetrics::register`]).
    pub fn metrics(&self) -> &SagaMetrics {
        &self.inner.metrics
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Persists a new saga (with its first step STARTED) and drives it in a
    /// background task. When the engine is at its concurrency limit, the saga
    /// is left for a worker ([`SagaEngine::run_worker`]) to pick up.
    pub async fn start(&self, saga_type: &str, payload: Value) -> Result<Uuid, SagaError> {
        let (record, lease, first) = self.inner.create(saga_type, payload).await?;
        let id = record.id;
        match self.inner.bulkhead.try_acquire_owned() {
            Ok(permit) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = inner.drive(record, lease, Some(first), &NEVER_STOP).await;
                });
            }
            Err(_) => {
                let now = self.inner.now();
                self.inner
                    .store
                    .save(&record, &[], &lease, now, true)
                    .await?;
            }
        }
        Ok(id)
    }

    /// Persists a new saga and drives it to a final status or a backoff in
    /// this task; returns the record as it was last written.
    pub async fn run(&self, saga_type: &str, payload: Value) -> Result<SagaRecord, SagaError> {
        let (record, lease, first) = self.inner.create(saga_type, payload).await?;
        self.inner
            .drive(record, lease, Some(first), &NEVER_STOP)
            .await
    }

    /// Picks up due and stuck sagas until `shutdown` resolves, then drains:
    /// the sagas it holds finish their current call, are saved and released.
    /// (Sagas driven by [`SagaEngine::start`] go on to their end or backoff.)
    pub async fn run_worker(&self, shutdown: impl std::future::Future<Output = ()>) {
        let inner = &self.inner;
        let types: Vec<String> = inner.sagas.keys().cloned().collect();
        // This worker's drain signal (several workers may share an engine).
        let stopping = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let free = inner
                .config
                .max_concurrent
                .saturating_sub(inner.bulkhead.in_flight());
            if free > 0 {
                let now = inner.now();
                let until = now + duration_ms(inner.config.lease);
                match inner
                    .store
                    .claim(&inner.config.owner, &types, now, until, free)
                    .await
                {
                    Ok(claimed) => {
                        for (record, lease) in claimed {
                            let Ok(permit) = inner.bulkhead.try_acquire_owned() else {
                                break; // released by lease expiry
                            };
                            let inner = inner.clone();
                            let stopping = stopping.clone();
                            tasks.spawn(async move {
                                let _permit = permit;
                                let _ = inner.drive(record, lease, None, &stopping).await;
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming sagas failed; retrying"),
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(inner.config.poll_interval) => {}
            }
            while tasks.try_join_next().is_some() {}
        }
        stopping.store(true, Ordering::SeqCst);
        while tasks.join_next().await.is_some() {}
    }
}

/// The drain flag of drives that no worker owns (`start`, `run`): they go on
/// until their saga is final or waits a backoff.
static NEVER_STOP: AtomicBool = AtomicBool::new(false);

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<S: SagaStore> Inner<S> {
    fn now(&self) -> u64 {
        self.clock.now().as_nanos() / 1_000_000
    }

    fn definition(&self, saga_type: &str) -> Result<&Saga, SagaError> {
        self.sagas.get(saga_type).ok_or_else(|| {
            let mut known: Vec<&str> = self.sagas.keys().map(String::as_str).collect();
            known.sort_unstable();
            SagaError::UnknownType(saga_type.to_owned(), format!("{known:?}"))
        })
    }

    async fn create(
        &self,
        saga_type: &str,
        payload: Value,
    ) -> Result<(SagaRecord, Lease, Action), SagaError> {
        let def = self.definition(saga_type)?;
        let now = self.now();
        let mut record = SagaRecord {
            id: Uuid::new_v4(),
            saga_type: saga_type.to_owned(),
            status: SagaStatus::Started,
            payload,
            current_step: None,
            error: None,
            next_attempt_at: 0,
            deadline: def.deadline.map(|d| now + duration_ms(d)),
            abort_requested: false,
            steps: def
                .steps
                .iter()
                .map(|s| StepRecord::pending(&s.name))
                .collect(),
        };
        let first = decision::decide(&def.kinds, &record, now);
        decision::begin(&mut record, first);
        let lease = Lease {
            owner: self.config.owner.clone(),
            fence: 1,
            expires_at: now + duration_ms(self.config.lease),
        };
        self.store.create(&record, &lease).await?;
        self.metrics
            .started
            .get_or_create(&SagaMetrics::of(saga_type))
            .inc();
        Ok((record, lease, first))
    }

    /// Drives a held saga until it is final, waits a backoff, loses its
    /// lease, or the engine stops.
    async fn drive(
        &self,
        record: SagaRecord,
        lease: Lease,
        first: Option<Action>,
        stopping: &AtomicBool,
    ) -> Result<SagaRecord, SagaError> {
        let span = tracing::info_span!("saga", id = %record.id, saga_type = %record.saga_type);
        let labels = SagaMetrics::of(&record.saga_type);
        let gauge = self.metrics.in_progress.get_or_create(&labels).clone();
        gauge.inc();
        let result = self
            .drive_held(record, lease, first, stopping)
            .instrument(span)
            .await;
        gauge.dec();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "saga left to another worker");
        }
        result
    }

    async fn drive_held(
        &self,
        mut record: SagaRecord,
        mut lease: Lease,
        first: Option<Action>,
        stopping: &AtomicBool,
    ) -> Result<SagaRecord, SagaError> {
        let def = self.definition(&record.saga_type)?;
        let names: Vec<&str> = record.steps.iter().map(|s| s.name.as_str()).collect();
        let defined: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
        if names != defined {
            return Err(SagaError::ShapeMismatch {
                id: record.id,
                stored: names.iter().map(|s| s.to_string()).collect(),
                defined: defined.iter().map(|s| s.to_string()).collect(),
            });
        }
        let mut unsaved: Vec<usize> = Vec::new();
        let mut action = match first {
            Some(a) => a,
            None => self.next(def, &mut record, &mut unsaved, stopping),
        };
        loop {
            let now = self.now();
            lease.expires_at = now + duration_ms(self.config.lease);
            match action {
                Action::Finish(_) | Action::WaitUntil(_) => {
                    self.store
                        .save(&record, &unsaved, &lease, now, true)
                        .await?;
                    if let Action::Finish(status) = action {
                        self.finished(&record.saga_type, status);
                    }
                    return Ok(record);
                }
                Action::Run { step, attempt } | Action::Compensate { step, attempt } => {
                    if !unsaved.is_empty() {
                        record.abort_requested = self
                            .store
                            .save(&record, &unsaved, &lease, now, false)
                            .await?;
                        unsaved.clear();
                    }
                    let compensating = matches!(action, Action::Compensate { .. });
                    let outcome = self
                        .call(def, &record, step, attempt, compensating, &mut lease)
                        .await?;
                    let now = self.now();
                    let limits = &self.config.limits;
                    let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                    if compensating {
                        decision::after_compensation(
                            &mut record,
                            step,
                            outcome,
                            now,
                            limits,
                            &mut *rng,
                        );
                    } else {
                        decision::after_step(
                            &def.kinds,
                            &mut record,
                            step,
                            outcome,
                            now,
                            limits,
                            &mut *rng,
                        );
                    }
                    unsaved.push(step);
                }
            }
            action = self.next(def, &mut record, &mut unsaved, stopping);
        }
    }

    /// The decision's next action, begun on the record.
    fn next(
        &self,
        def: &Saga,
        record: &mut SagaRecord,
        unsaved: &mut Vec<usize>,
        stopping: &AtomicBool,
    ) -> Action {
        if stopping.load(Ordering::SeqCst) {
            // Draining: save what we have and let the lease go.
            return Action::WaitUntil(record.next_attempt_at);
        }
        let action = decision::decide(&def.kinds, record, self.now());
        decision::begin(record, action);
        if let Action::Run { step, .. } | Action::Compensate { step, .. } = action {
            unsaved.push(step);
        }
        action
    }

    fn finished(&self, saga_type: &str, status: SagaStatus) {
        let labels = vec![
            ("type", saga_type.to_owned()),
            ("status", status.as_str().to_owned()),
        ];
        self.metrics.finished.get_or_create(&labels).inc();
        if status == SagaStatus::CompensationFailed {
            self.metrics
                .compensation_failed
                .get_or_create(&SagaMetrics::of(saga_type))
                .inc();
        }
    }

    /// Calls a step or its compensation under the step timeout, renewing the
    /// lease meanwhile; a lost lease abandons the call.
    async fn call(
        &self,
        def: &Saga,
        record: &SagaRecord,
        step: usize,
        attempt: u32,
        compensating: bool,
        lease: &mut Lease,
    ) -> Result<Outcome, SagaError> {
        let s = &def.steps[step];
        let now = self.now();
        let ctx = StepContext {
            saga_id: record.id,
            step: s.name.clone(),
            idempotency_key: format!("{}:{}", record.id, s.name),
            attempt,
            deadline: now + duration_ms(def.step_timeout),
        };
        let span = tracing::info_span!("step", step = %s.name, attempt, compensating);
        let call = async {
            if compensating {
                let Some(compensate) = &s.compensate else {
                    return Ok(Value::Null); // the decision never compensates these
                };
                let output = record.steps[step].output.clone();
                compensate(ctx, record.payload.clone(), output)
                    .await
                    .map(|()| Value::Null)
            } else {
                (s.execute)(ctx, record.payload.clone()).await
            }
        };
        let timed = tokio::time::timeout(def.step_timeout, call.instrument(span));
        tokio::pin!(timed);
        let renew_every = self.config.lease / 3;
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let result = loop {
            tokio::select! {
                r = &mut timed => break r,
                _ = renew.tick() => {
                    let now = self.now();
                    lease.expires_at = now + duration_ms(self.config.lease);
                    self.store.renew(record.id, lease, now).await?;
                }
            }
        };
        let elapsed = Duration::from_millis(self.now().saturating_sub(now));
        if !compensating {
            self.metrics
                .step_duration
                .get_or_create(&vec![
                    ("type", record.saga_type.clone()),
                    ("step", s.name.clone()),
                ])
                .observe(elapsed.as_secs_f64());
        }
        Ok(match result {
            Err(_) => Outcome::Retryable(format!("timed out after {:?}", def.step_timeout)),
            Ok(Ok(v)) => Outcome::Succeeded(v),
            Ok(Err(StepError::Retryable(e))) => Outcome::Retryable(e),
            Ok(Err(StepError::Refused(e))) => Outcome::Refused(e),
        })
    }
}
