//! Group commit: the engine's writes of many in-flight sagas share one
//! transaction.
//!
//! Every saga transition is a commit (see [`crate::engine`]), and a commit's
//! cost is mostly fixed: SQLite's write lock and WAL append, PostgreSQL's
//! WAL flush. With many sagas in flight, their writers queued on that lock
//! one by one. Here a writer task per store (two on PostgreSQL) takes every
//! write that is waiting, runs them in one transaction and answers each
//! caller after the commit. A caller still returns only once its write is
//! durable, so what a crash can lose is unchanged; nothing waits for a
//! batch to fill (a lone write goes at once).
//!
//! A batch costs three statements, however many sagas it holds (then the
//! round trips, not the commits, bounded the rate): one multi-row INSERT
//! of new sagas, one multi-row UPDATE of saved ones, one multi-row upsert
//! of their step rows.
//!
//! Each write keeps its own fencing check, row by row in the UPDATE: a
//! write whose lease was lost is missing from its RETURNING, is answered
//! [`StoreError::LeaseLost`], its step rows are left out, and the others in
//! its batch commit.
//! If the batch's transaction fails, each write is retried alone, so one
//! bad write never fails its neighbours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rempart_db::{Db, with_pool};
use sqlx::Row;
use sqlx::types::Json;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::record::SagaRecord;
use crate::store::{Lease, StoreError};

/// The most writes one transaction takes: bounds how long the write lock is held.
const MAX_BATCH: usize = 256;

/// Writer tasks on PostgreSQL: while one batch waits for its commit's WAL
/// flush, another is being written (PostgreSQL flushes concurrent commits
/// together). SQLite has one writer at a time, so it gets one task.
const POSTGRES_WRITERS: usize = 2;

/// What the writes cost, counted by the store (see [`crate::store::WriteCounts`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) statements: AtomicU64,
}

impl Counters {
    fn statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }
}

/// One engine write.
#[derive(Debug)]
pub(crate) enum Write {
    /// A new saga: its row and its step rows.
    Create { saga: SagaRecord, lease: Lease },
    /// A transition: the saga row (fenced) and the changed step rows.
    Save {
        saga: SagaRecord,
        changed: Vec<usize>,
        lease: Lease,
        now: u64,
        release: bool,
    },
}

/// What a write did: `Save` answers whether an abort was requested.
pub(crate) type Written = Result<bool, StoreError>;

type Job = (Write, oneshot::Sender<Written>);

/// The sending side of a store's writer task.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer tasks for `db` on the current tokio runtime. They
    /// end when every `Writer` clone is dropped.
    pub(crate) fn spawn(db: Db, counters: Arc<Counters>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let tasks = if db.backend() == "postgres" {
            POSTGRES_WRITERS
        } else {
            1
        };
        for _ in 0..tasks {
            tokio::spawn(run(db.clone(), counters.clone(), rx.clone()));
        }
        Writer { tx }
    }

    /// Sends `write` to the task and waits for its commit. `Err(write)` when
    /// the task is gone (its runtime shut down) before taking it: the caller
    /// writes directly.
    pub(crate) async fn write(&self, write: Write) -> Result<Written, Write> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((write, _))) = self.tx.send((write, reply)) {
            return Err(write);
        }
        // Taken but not answered: the task stopped mid-batch, so the write
        // may or may not have committed. Say so; the lease expires and the
        // saga is claimed again from what the database holds.
        Ok(answer.await.unwrap_or(Err(StoreError::WriterStopped)))
    }
}

async fn run(db: Db, counters: Arc<Counters>, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // One task takes what is waiting; the others wait their turn.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let writes: Vec<&Write> = batch.iter().map(|(w, _)| w).collect();
        match write_batch(&db, &counters, &writes).await {
            Ok(results) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) if batch.len() == 1 => {
                let (_, reply) = batch.pop().expect("one job");
                let _ = reply.send(Err(StoreError::Db(db.error(e))));
            }
            Err(_) => {
                for (write, reply) in batch.drain(..) {
                    let _ = reply.send(write_one(&db, &counters, &write).await);
                }
            }
        }
    }
}

/// One write in a transaction of its own.
pub(crate) async fn write_one(db: &Db, counters: &Counters, write: &Write) -> Written {
    match write_batch(db, counters, &[write]).await {
        Ok(mut results) => results.pop().expect("one result"),
        Err(e) => Err(StoreError::Db(db.error(e))),
    }
}

pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The upsert of one step row, bound (also used by an operator's resume).
macro_rules! bind_step {
    ($id:expr, $i:expr, $s:expr) => {
        sqlx::query(&$crate::group_commit::upsert_steps_sql(1))
            .bind($id)
            .bind(&$s.name)
            .bind($i as i32)
            .bind($s.status.as_str())
            .bind($s.output.clone().map(sqlx::types::Json))
            .bind($s.attempts as i32)
            .bind($s.compensation_attempts as i32)
            .bind($s.last_error.clone())
    };
}
pub(crate) use bind_step;

/// At most this many bound values per statement: under SQLite's limit
/// (32,766 since 3.32) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

/// The rows of one kind that fit in one statement.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns).max(1)
}

/// `($1, $2, $3), ($4, $5, $6)`: `rows` tuples of `columns` placeholders.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * columns + c + 1));
        }
        out.push(')');
    }
    out
}

const SAGA_COLUMNS: usize = 10;

fn insert_sagas_sql(rows: usize) -> String {
    format!(
        "INSERT INTO sagas (id, type, status, payload, current_step, next_attempt_at, deadline_at, lease_owner, lease_expires_at, fence) VALUES {}",
        placeholders(rows, SAGA_COLUMNS)
    )
}

const SAVE_COLUMNS: usize = 10;

/// One fenced UPDATE for many sagas: each row of `v` carries its saga's
/// new values and the lease its writer holds, checked per row. A row whose
/// lease was lost matches nothing and is missing from RETURNING.
fn update_sagas_sql(rows: usize) -> String {
    format!(
        "WITH v (saga_id, new_status, new_step, new_error, new_next, release_lease, new_expires, held_fence, held_owner, now_ms)
 AS (VALUES {})
UPDATE sagas SET status = v.new_status, current_step = v.new_step, error = v.new_error,
  next_attempt_at = v.new_next,
  lease_owner = CASE WHEN v.release_lease THEN NULL ELSE sagas.lease_owner END,
  lease_expires_at = CASE WHEN v.release_lease THEN 0 ELSE v.new_expires END,
  updated_at = CURRENT_TIMESTAMP
FROM v
WHERE sagas.id = v.saga_id AND sagas.fence = v.held_fence AND sagas.lease_owner = v.held_owner
  AND sagas.lease_expires_at > v.now_ms
RETURNING id, abort_requested",
        placeholders(rows, SAVE_COLUMNS)
    )
}

const STEP_COLUMNS: usize = 8;

pub(crate) fn upsert_steps_sql(rows: usize) -> String {
    format!(
        "INSERT INTO saga_steps (saga_id, step_name, step_index, status, result, attempts, compensation_attempts, last_error)
VALUES {}
ON CONFLICT (saga_id, step_name) DO UPDATE SET
  status = excluded.status, result = excluded.result, attempts = excluded.attempts,
  compensation_attempts = excluded.compensation_attempts, last_error = excluded.last_error,
  executed_at = CASE WHEN excluded.status = 'COMPLETED' THEN CURRENT_TIMESTAMP ELSE saga_steps.executed_at END,
  compensated_at = CASE WHEN excluded.status = 'COMPENSATED' THEN CURRENT_TIMESTAMP ELSE saga_steps.compensated_at END",
        placeholders(rows, STEP_COLUMNS)
    )
}

/// Splits a batch so no saga appears twice in one part: a multi-row UPDATE
/// or upsert must not touch a row twice. (One saga has one write in flight
/// per holder, so this is one part but for a fenced-out rival's write.)
fn rounds(writes: &[&Write]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<(std::collections::HashSet<uuid::Uuid>, Vec<usize>)> = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let id = w.saga().id;
        match rounds.iter_mut().find(|(ids, _)| !ids.contains(&id)) {
            Some((ids, members)) => {
                ids.insert(id);
                members.push(i);
            }
            None => rounds.push(([id].into_iter().collect(), vec![i])),
        }
    }
    rounds.into_iter().map(|(_, members)| members).collect()
}

impl Write {
    fn saga(&self) -> &SagaRecord {
        match self {
            Write::Create { saga, .. } | Write::Save { saga, .. } => saga,
        }
    }
}

/// Runs `writes` in one transaction with a fixed number of statements per
/// round (see [`rounds`]): one INSERT of the new sagas, one fenced UPDATE
/// of the saved ones, one upsert of every step row they write. One answer
/// per write, in order; a fenced-out save is answered `LeaseLost` and its
/// step rows are left out. An `Err` means the transaction failed as a
/// whole and nothing was written.
async fn write_batch(
    db: &Db,
    counters: &Counters,
    writes: &[&Write],
) -> Result<Vec<Written>, sqlx::Error> {
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    let mut results: Vec<Written> = writes.iter().map(|_| Ok(false)).collect();
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        for round in rounds(writes) {
            let creates: Vec<(&SagaRecord, &Lease)> = round
                .iter()
                .filter_map(|&i| match writes[i] {
                    Write::Create { saga, lease } => Some((saga, lease)),
                    Write::Save { .. } => None,
                })
                .collect();
            for chunk in creates.chunks(rows_per_statement(SAGA_COLUMNS)) {
                let sql = insert_sagas_sql(chunk.len());
                let mut q = sqlx::query(&sql);
                for (saga, lease) in chunk {
                    q = q
                        .bind(saga.id)
                        .bind(&saga.saga_type)
                        .bind(saga.status.as_str())
                        .bind(Json(&saga.payload))
                        .bind(saga.current_step.clone())
                        .bind(ms(saga.next_attempt_at))
                        .bind(saga.deadline.map(ms))
                        .bind(&lease.owner)
                        .bind(ms(lease.expires_at))
                        .bind(lease.fence);
                }
                q.execute(&mut *tx).await?;
                counters.statement();
            }
            let saves: Vec<usize> = round
                .iter()
                .copied()
                .filter(|&i| matches!(writes[i], Write::Save { .. }))
                .collect();
            let mut kept: std::collections::HashMap<uuid::Uuid, bool> =
                std::collections::HashMap::with_capacity(saves.len());
            for chunk in saves.chunks(rows_per_statement(SAVE_COLUMNS)) {
                let sql = update_sagas_sql(chunk.len());
                let mut q = sqlx::query(&sql);
                for &i in chunk {
                    let Write::Save { saga, lease, now, release, .. } = writes[i] else {
                        unreachable!("saves only");
                    };
                    q = q
                        .bind(saga.id)
                        .bind(saga.status.as_str())
                        .bind(saga.current_step.clone())
                        .bind(saga.error.clone())
                        .bind(ms(saga.next_attempt_at))
                        .bind(*release)
                        .bind(ms(lease.expires_at))
                        .bind(lease.fence)
                        .bind(&lease.owner)
                        .bind(ms(*now));
                }
                for row in q.fetch_all(&mut *tx).await? {
                    kept.insert(row.try_get(0)?, row.try_get(1)?);
                }
                counters.statement();
            }
            // The step rows of new sagas, and the changed ones of saves that held.
            let mut steps: Vec<(&SagaRecord, usize)> = Vec::new();
            for &i in &round {
                match writes[i] {
                    Write::Create { saga, .. } => {
                        steps.extend((0..saga.steps.len()).map(|k| (saga, k)));
                    }
                    Write::Save { saga, changed, .. } => match kept.get(&saga.id) {
                        Some(&abort) => {
                            results[i] = Ok(abort);
                            let first = steps.len();
                            for &k in changed {
                                if !steps[first..].iter().any(|&(_, seen)| seen == k) {
                                    steps.push((saga, k));
                                }
                            }
                        }
                        // Fenced out: nothing of this saga is written.
                        None => results[i] = Err(StoreError::LeaseLost(saga.id)),
                    },
                }
            }
            for chunk in steps.chunks(rows_per_statement(STEP_COLUMNS)) {
                let sql = upsert_steps_sql(chunk.len());
                let mut q = sqlx::query(&sql);
                for &(saga, k) in chunk {
                    let s = &saga.steps[k];
                    q = q
                        .bind(saga.id)
                        .bind(&s.name)
                        .bind(k as i32)
                        .bind(s.status.as_str())
                        .bind(s.output.clone().map(Json))
                        .bind(s.attempts as i32)
                        .bind(s.compensation_attempts as i32)
                        .bind(s.last_error.clone());
                }
                q.execute(&mut *tx).await?;
                counters.statement();
            }
        }
        tx.commit().await?;
    });
    Ok(results)
}

#[cfg(test)]
#[path = "group_commit_tests.rs"]
mod tests;
