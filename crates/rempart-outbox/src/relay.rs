//! The relay: claim a batch, publish it, record the outcomes; wake on
//! `LISTEN/NOTIFY` (PostgreSQL) or the poll interval.
//!
//! On PostgreSQL a cycle is ONE transaction: the claim locks the heads of
//! the aggregates it takes (`SKIP LOCKED`), the publishes run while it is
//! open, and the outcomes are written and committed in it. Several relays
//! share the table; a relay that dies mid-cycle leaves nothing behind (its
//! transaction rolls back, its locks go) and the rows are published again,
//! with the same message id. One relay runs several cycles at once
//! ([`RelayConfig::pipelines`]): each is such a transaction, so they exclude
//! each other per aggregate exactly as separate relays do, and one's claim
//! and commit overlap the others' publishes.
//!
//! On SQLite a writer transaction would block the application's writers
//! during the publishes, so a single relay holds a lease row instead, reads
//! without a lock, and writes the outcomes in a short transaction checked
//! against its fencing token; it runs one cycle at a time.
//!
//! # Waking: notifications only while a relay waits
//!
//! PostgreSQL commits the transactions that ran `NOTIFY` one at a time (a
//! database-wide lock held through the commit's WAL flush): with a notify in
//! every enqueue, 16 writers managed 254 commits/s where 1,514 commit
//! without (pgbench, BENCHMARKS.md). So writers notify only while a relay
//! waits for it:
//! - a pipeline whose claims keep finding rows claims again at once after a
//!   full claim, else after [`RelayConfig::busy_poll_interval`]; nobody
//!   notifies it, and a claim that found rows wakes an idle sibling;
//! - after [`RelayConfig::idle_after`] without a row it is idle ([`crate::pace::next`],
//!   a pure function of its cycles and the time passed). When every pipeline
//!   of the relay is idle, the last one writes the relay's row in
//!   `outbox_relay_waiting` (autocommit), then claims once more; the
//!   trigger, deferred to the writer's commit, notifies while any row is
//!   unexpired. Idle pipelines wait for a notification or
//!   [`RelayConfig::poll_interval`];
//! - the first idle pipeline whose claim finds rows deletes the row: the
//!   relay is busy again.
//!
//! Several relays: each has its own row (keyed by owner and run), so one
//! waking never clears another's; writers notify while any relay waits. A
//! row carries an expiry (3 polls + 1 s, renewed as idle pipelines wake),
//! so a relay killed while waiting stops the notifications soon.
//! What a wake-up can miss, the poll catches, never later: a writer that
//! read the table just before a row was written and committed after the
//! claim that follows it (the window is that writer's commit itself, the
//! trigger being deferred), a registration that failed, a lost listener.
//! Considered and not taken: one shared flag (clearing it would strand
//! another waiting relay) and a counter of waiters (a dead relay's count
//! never comes down, and then writers notify for ever).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use rempart::CircuitBreaker;
use rempart::clock::{Clock, UnixClock};
use rempart::retry::Backoff;
use rempart::rng::SplitMix64;
use rempart_db::{DbError, Pool};
use sqlx::Connection;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::decision::{
    self, Attempt, CycleReport, FailureKind, PayloadChecks, PublishError, RetryPolicy, RowOutcome,
};
use crate::destination::Destination;
use crate::message::Envelope;
use crate::metrics::OutboxMetrics;
use crate::pace::{self, Next, Pace};
use crate::store::{Backlog, OutboxStore, apply_in, claim_in};
use crate::waiters::Waiters;

/// The PostgreSQL channel the outbox trigger notifies (payload: the schema).
pub const NOTIFY_CHANNEL: &str = "rempart_outbox";

/// A relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This relay's name (the SQLite lease's owner); unique per process.
    pub owner: String,
    /// Aggregates claimed per cycle.
    pub aggregates_per_claim: u32,
    /// Rows of one aggregate per cycle (published one after the other).
    pub rows_per_aggregate: u32,
    /// The safety-net poll when no notification comes (SQLite: the only wake-up).
    pub poll_interval: Duration,
    /// The deadline of one publish, ack included.
    pub publish_timeout: Duration,
    /// How a failed row is retried or dead-lettered.
    pub retry: RetryPolicy,
    /// The relay's pause after cycles with transient failures (the n-th in a row).
    pub backoff: Backoff,
    /// SQLite: how long the relay lease lasts without renewal.
    pub lease: Duration,
    /// PostgreSQL: cycles in flight at once, so one cycle's claim and marks
    /// overlap others' publishes (a cycle alone leaves the broker idle
    /// while it claims and commits). Each is a relay of its own on the
    /// table (its own transaction and `SKIP LOCKED` heads, so an aggregate
    /// is in one cycle at a time) and holds a pooled connection for its
    /// cycle. Default 4: faster than 1 or 2 in the bench (BENCHMARKS.md),
    /// and half the default pool of 8 is left to the application. SQLite
    /// runs one (its lease).
    pub pipelines: u32,
    /// The pause between claims while rows keep coming, with no
    /// notification asked for (see the module doc).
    pub busy_poll_interval: Duration,
    /// How long a pipeline goes without a row before it is idle; when all
    /// are, writers notify the relay. Zero: idle at the first empty claim.
    pub idle_after: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            owner: format!("relay-{}", Uuid::new_v4().simple()),
            aggregates_per_claim: 256,
            rows_per_aggregate: 16,
            poll_interval: Duration::from_millis(500),
            publish_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(5),
            },
            lease: Duration::from_secs(15),
            pipelines: 4,
            busy_poll_interval: Duration::from_millis(5),
            idle_after: Duration::from_millis(25),
        }
    }
}

/// What stops a relay cycle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The database failed; the cycle's rows stay pending.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A relay from one outbox table to one destination.
#[derive(Debug)]
pub struct Relay<D: Destination> {
    store: OutboxStore,
    destination: D,
    config: RelayConfig,
    checks: PayloadChecks,
    clock: Arc<dyn Clock>,
    breaker: CircuitBreaker,
    rng: Mutex<SplitMix64>,
    metrics: OutboxMetrics,
}

impl<D: Destination> Relay<D> {
    /// A relay with the wall clock and a circuit breaker around the
    /// destination (3 failed cycles in a row open it for 5 s).
    pub fn new(store: OutboxStore, destination: D, config: RelayConfig) -> Self {
        let breaker = CircuitBreaker::builder()
            .name(format!("outbox-{}", destination.name()))
            .failure_threshold(3)
            .open_timeout(Duration::from_secs(5))
            .build()
            .expect("constant breaker settings are valid");
        Relay {
            store,
            destination,
            config,
            checks: PayloadChecks::new(),
            clock: Arc::new(UnixClock::new()),
            breaker,
            rng: Mutex::new(SplitMix64::from_entropy()),
            metrics: OutboxMetrics::default(),
        }
    }

    /// Metrics shared with a registry (see [`OutboxMetrics::register`]).
    pub fn with_metrics(mut self, metrics: OutboxMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reads the backlog and sets `outbox_pending` and
    /// `outbox_oldest_pending_age_seconds` (the relay's loop does it about
    /// once a second).
    pub async fn refresh_backlog(&self) -> Result<Backlog, RelayError> {
        let b = self.store.backlog().await?;
        self.metrics
            .pending
            .set(i64::try_from(b.pending).unwrap_or(i64::MAX));
        self.metrics.oldest_pending_age.set(b.oldest_age_seconds);
        Ok(b)
    }

    /// Declared payload shapes: a payload that does not match is dead-lettered.
    pub fn with_checks(mut self, checks: PayloadChecks) -> Self {
        self.checks = checks;
        self
    }

    /// Another breaker around the destination.
    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// Another clock (its nanoseconds read as time since the Unix epoch,
    /// shared with every relay on the table).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The destination.
    pub fn destination(&self) -> &D {
        &self.destination
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().as_nanos() / 1_000_000
    }

    /// One cycle: claim, publish, record. Publishes nothing while the breaker is open.
    pub async fn run_once(&self) -> Result<CycleReport, RelayError> {
        let Ok(permit) = self.breaker.try_acquire() else {
            return Ok(CycleReport::default());
        };
        let report = self.cycle().await;
        match &report {
            Ok(r) if r.destination_failing() => permit.failure(),
            Ok(r) if r.claimed > 0 => permit.success(),
            _ => permit.ignore(),
        }
        report
    }

    async fn cycle(&self) -> Result<CycleReport, RelayError> {
        let now = self.now_ms();
        let (aggs, per) = (
            self.config.aggregates_per_claim.max(1),
            self.config.rows_per_aggregate.max(1),
        );
        let err = |e| RelayError::Db(self.store.err(e));
        match self.store.db().pool() {
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(err)?;
                let rows = claim_in!(&mut *tx, true, now, aggs, per).map_err(err)?;
                let (report, outcomes) = self.publish(rows, aggs).await;
                apply_in!(&mut *tx, &outcomes).map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(report)
            }
            Pool::Sqlite(pool) => {
                let until = now.saturating_add(duration_ms(self.config.lease));
                let Some(fence) = self.store.lease(&self.config.owner, now, until).await? else {
                    return Ok(CycleReport::default());
                };
                let rows = claim_in!(pool, false, now, aggs, per).map_err(err)?;
                if rows.is_empty() {
                    return Ok(CycleReport::default());
                }
                let (report, outcomes) = self.publish(rows, aggs).await;
                let mut conn = pool.acquire().await.map_err(err)?;
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
                let held: Option<i64> = sqlx::query_scalar(
                    "SELECT fence FROM outbox_relay_lease WHERE name = 'relay' AND owner = $1 AND fence = $2",
                )
                .bind(&self.config.owner)
                .bind(fence)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                if held.is_none() {
                    // Another relay took over: it publishes these rows again
                    // (same message ids); writing here could undo its marks.
                    tracing::warn!(owner = %self.config.owner, "outbox relay lease lost; outcomes dropped");
                    return Ok(CycleReport::default());
                }
                apply_in!(&mut *tx, &outcomes).map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(report)
            }
        }
    }

    /// Publishes the claimed rows: one chain per aggregate, chains side by
    /// side, a chain's rows in order and stopping at its first transient
    /// failure; then [`decision::settle`] decides what becomes of each row.
    async fn publish(
        &self,
        rows: Vec<Envelope>,
        aggregates: u32,
    ) -> (CycleReport, Vec<(Uuid, RowOutcome)>) {
        let claimed = rows.len();
        let chains = decision::chains(rows);
        let full = chains.len() >= aggregates as usize;
        let results = join_all(chains.into_iter().map(|chain| self.publish_chain(chain))).await;
        let attempts: Vec<Attempt> = results.into_iter().flatten().collect();
        let now = self.now_ms();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let (mut report, outcomes) = decision::settle(attempts, &self.config.retry, now, &mut *rng);
        report.claimed = claimed;
        report.full = full;
        for (id, o) in &outcomes {
            if let RowOutcome::Dead { error, .. } = o {
                tracing::warn!(%id, %error, "outbox message dead-lettered");
            }
        }
        (report, outcomes)
    }

    async fn publish_chain(&self, chain: Vec<Envelope>) -> Vec<Attempt> {
        let mut out = Vec::with_capacity(chain.len());
        for row in chain {
            let result =
                match decision::admissible(&row, self.destination.max_payload(), &self.checks) {
                    Err(why) => Err(PublishError::permanent(why)),
                    Ok(()) => tokio::time::timeout(
                        self.config.publish_timeout,
                        self.destination.publish(&row),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(PublishError::transient(format!(
                            "no ack from {} within {:?}",
                            self.destination.name(),
                            self.config.publish_timeout
                        )))
                    }),
                };
            let labels = OutboxMetrics::of(self.destination.name());
            if result.is_ok() {
                self.metrics.published.get_or_create(&labels).inc();
                let lag_ms = i64::try_from(self.now_ms()).unwrap_or(i64::MAX) - row.created_ms;
                self.metrics.lag.observe(lag_ms.max(0) as f64 / 1000.0);
            } else {
                self.metrics.errors.get_or_create(&labels).inc();
            }
            // A transient failure stops the chain: later rows of this
            // aggregate wait for this one. A dead letter does not.
            let stop = matches!(&result, Err(e) if e.kind == FailureKind::Transient);
            out.push(Attempt {
                id: row.id,
                attempts: row.attempts,
                result,
            });
            if stop {
                break;
            }
        }
        out
    }

    /// Cycles in flight at once: 1 on SQLite (one lease holder), else
    /// [`RelayConfig::pipelines`].
    fn pipelines(&self) -> usize {
        match self.store.db().pool() {
            Pool::Sqlite(_) => 1,
            Pool::Postgres(_) => self.config.pipelines.max(1) as usize,
        }
    }

    /// Runs cycles until none claims a row (nothing due, or the breaker
    /// open), with [`RelayConfig::pipelines`] cycles in flight; returns how
    /// many rows were published. For a backlog, a test, a bench.
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let pipelines = (0..self.pipelines()).map(|_| async {
            let mut published = 0;
            loop {
                let r = self.run_once().await?;
                published += r.published;
                // Empty: the rest is held by the other pipelines, which
                // claim again after their cycle; the last one to stop saw none.
                if r.claimed == 0 {
                    return Ok::<_, RelayError>(published);
                }
            }
        });
        join_all(pipelines).await.into_iter().sum()
    }

    /// Runs cycles until `shutdown` completes: [`RelayConfig::pipelines`]
    /// loops, each claiming again at once after a full batch, shortly while
    /// rows come, and, once idle (module doc), at a notification of a
    /// commit (PostgreSQL; one listener for all) or the poll interval;
    /// after failures (database or broker), with backoff. At `shutdown`
    /// each finishes its cycle and stops.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let (stop, stopped) = watch::channel(false);
        let wake = Notify::new();
        let listener = self.listen().await;
        let pool = match (&listener, self.store.db().pool()) {
            (Some(_), Pool::Postgres(pool)) => Some(pool.clone()),
            _ => None,
        };
        let waiters = Waiters::new(
            pool,
            &self.config.owner,
            self.pipelines(),
            self.config.poll_interval,
            self.metrics.waiting.clone(),
        );
        let pipelines =
            (0..self.pipelines()).map(|i| self.pipeline(i == 0, stopped.clone(), &wake, &waiters));
        let mut work = std::pin::pin!(join_all(pipelines));
        let mut notifications = std::pin::pin!(self.forward_notifications(listener, &wake));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = &mut work => return Ok(()),
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    stop.send_replace(true);
                }
                () = &mut notifications => {}
            }
        }
    }

    async fn cycle_logged(&self) -> CycleReport {
        self.metrics.cycles.inc();
        match self.run_once().await {
            Ok(r) => {
                self.metrics.claimed.inc_by(r.claimed as u64);
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay cycle failed; rows stay pending");
                CycleReport {
                    retried: 1,
                    ..CycleReport::default()
                }
            }
        }
    }

    /// One loop of cycles; `refreshes` makes it the one that refreshes the
    /// backlog gauges.
    async fn pipeline(
        &self,
        refreshes: bool,
        mut stopped: watch::Receiver<bool>,
        wake: &Notify,
        waiters: &Waiters,
    ) {
        let pace = Pace {
            busy_poll: self.config.busy_poll_interval,
            idle_after: self.config.idle_after,
            backoff: self.config.backoff,
        };
        let mut failures: u32 = 0;
        let mut refreshed_at: u64 = 0;
        let mut rows_at = tokio::time::Instant::now();
        let mut idle = false;
        while !*stopped.borrow() {
            let now = self.now_ms();
            if refreshes && now.saturating_sub(refreshed_at) >= 1000 {
                refreshed_at = now;
                if let Err(e) = self.refresh_backlog().await {
                    tracing::debug!(error = %e, "outbox relay: backlog not read");
                }
            }
            let report = self.cycle_logged().await;
            failures = if report.destination_failing() {
                failures.saturating_add(1)
            } else {
                0
            };
            if report.claimed > 0 || failures > 0 {
                rows_at = tokio::time::Instant::now();
                if idle {
                    idle = false;
                    self.metrics.idle_pipelines.dec();
                    waiters.leave().await;
                }
            }
            if report.published + report.dead > 0 {
                // Rows are coming, and writers do not notify a busy relay:
                // keep a sibling in (else the others sleep to their poll and
                // one pipeline carries the load; the lag bench showed it).
                wake.notify_one();
            }
            match pace::next(&report, failures, rows_at.elapsed(), &pace) {
                Next::Now => {}
                Next::Poll(d) | Next::Backoff(d) => {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        () = tokio::time::sleep(d) => {}
                    }
                }
                Next::Idle if !idle => {
                    // Registered (if last): claim once more before waiting,
                    // for a writer that committed without notifying.
                    idle = true;
                    self.metrics.idle_pipelines.inc();
                    waiters.enter().await;
                }
                Next::Idle => {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                        () = wake.notified() => {}
                    }
                    // Still idle unless the next claim finds rows: the row
                    // must outlive this wait (a no-op until half a poll old).
                    waiters.renew().await;
                }
            }
        }
        if idle {
            self.metrics.idle_pipelines.dec();
            waiters.leave().await;
        }
    }

    /// Passes this schema's notifications to one waiting pipeline each, or,
    /// when all are in a cycle, to the next to finish (one permit): so a
    /// commit notified after a claim began is always followed by another
    /// claim, without waking every pipeline for one row. Never completes
    /// (without a listener it waits for ever).
    async fn forward_notifications(
        &self,
        listener: Option<(sqlx::postgres::PgListener, String)>,
        wake: &Notify,
    ) {
        let Some((mut l, schema)) = listener else {
            return std::future::pending().await;
        };
        loop {
            match l.recv().await {
                Ok(n) if n.payload() == schema.as_str() => {
                    wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    // The listener reconnects on its next call; until then the poll covers.
                    tracing::debug!(error = %e, "outbox relay: notification stream broke");
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        }
    }

    /// PostgreSQL: a listener on [`NOTIFY_CHANNEL`] and this schema's name.
    async fn listen(&self) -> Option<(sqlx::postgres::PgListener, String)> {
        let Pool::Postgres(pool) = self.store.db().pool() else {
            return None;
        };
        let setup = async {
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(pool)
                .await?;
            let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>((l, schema))
        };
        match tokio::time::timeout(Duration::from_secs(5), setup).await {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "outbox relay: LISTEN failed; polling only");
                None
            }
            Err(_) => {
                tracing::warn!("outbox relay: LISTEN timed out; polling only");
                None
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
