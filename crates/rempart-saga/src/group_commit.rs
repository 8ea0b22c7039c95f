//! Group commit: the engine's writes of many in-flight sagas share one
//! transaction.
//!
//! Every saga transition is a commit (see [`crate::engine`]), and a commit's
//! cost is mostly fixed: SQLite's write lock and WAL append, PostgreSQL's
//! WAL flush. With many sagas in flight, their writers queued on that lock
//! one by one. Here one writer task per store takes every write that is
//! waiting, runs them in one transaction and answers each caller after the
//! commit. A caller still returns only once its write is durable, so what a
//! crash can lose is unchanged; nothing waits for a batch to fill (a lone
//! write goes at once).
//!
//! Each write keeps its own fencing check: a write whose lease was lost is
//! answered [`StoreError::LeaseLost`] and the others in its batch commit.
//! If the batch's transaction fails, each write is retried alone, so one
//! bad write never fails its neighbours.

use rempart_db::{Db, with_pool};
use sqlx::Row;
use sqlx::types::Json;
use tokio::sync::{mpsc, oneshot};

use crate::record::SagaRecord;
use crate::store::{Lease, StoreError};

/// The most writes one transaction takes: bounds how long the write lock is held.
const MAX_BATCH: usize = 256;

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
    /// Starts the writer task for `db` on the current tokio runtime. It ends
    /// when every `Writer` clone is dropped.
    pub(crate) fn spawn(db: Db) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, rx));
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

async fn run(db: Db, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let writes: Vec<&Write> = batch.iter().map(|(w, _)| w).collect();
        match write_batch(&db, &writes).await {
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
                    let _ = reply.send(write_one(&db, &write).await);
                }
            }
        }
    }
}

/// One write in a transaction of its own.
pub(crate) async fn write_one(db: &Db, write: &Write) -> Written {
    match write_batch(db, &[write]).await {
        Ok(mut results) => results.pop().expect("one result"),
        Err(e) => Err(StoreError::Db(db.error(e))),
    }
}

const INSERT_SAGA: &str = "INSERT INTO sagas (id, type, status, payload, current_step, next_attempt_at, deadline_at, lease_owner, lease_expires_at, fence)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const UPDATE_SAGA: &str =
    "UPDATE sagas SET status = $1, current_step = $2, error = $3, next_attempt_at = $4,
   lease_owner = CASE WHEN $5 THEN NULL ELSE lease_owner END,
   lease_expires_at = CASE WHEN $5 THEN 0 ELSE $6 END,
   updated_at = CURRENT_TIMESTAMP
 WHERE id = $7 AND fence = $8 AND lease_owner = $9 AND lease_expires_at > $10
 RETURNING abort_requested";

pub(crate) const UPSERT_STEP: &str = "
INSERT INTO saga_steps (saga_id, step_name, step_index, status, result, attempts, compensation_attempts, last_error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (saga_id, step_name) DO UPDATE SET
  status = excluded.status, result = excluded.result, attempts = excluded.attempts,
  compensation_attempts = excluded.compensation_attempts, last_error = excluded.last_error,
  executed_at = CASE WHEN excluded.status = 'COMPLETED' THEN CURRENT_TIMESTAMP ELSE saga_steps.executed_at END,
  compensated_at = CASE WHEN excluded.status = 'COMPENSATED' THEN CURRENT_TIMESTAMP ELSE saga_steps.compensated_at END";

pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The upsert of one step row, bound (also used by an operator's resume).
macro_rules! bind_step {
    ($id:expr, $i:expr, $s:expr) => {
        sqlx::query($crate::group_commit::UPSERT_STEP)
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

/// Runs `writes` in one transaction; one answer per write, in order. An
/// `Err` means the transaction failed as a whole and nothing was written.
async fn write_batch(db: &Db, writes: &[&Write]) -> Result<Vec<Written>, sqlx::Error> {
    let mut results = Vec::with_capacity(writes.len());
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        for write in writes {
            match write {
                Write::Create { saga, lease } => {
                    sqlx::query(INSERT_SAGA)
                        .bind(saga.id)
                        .bind(&saga.saga_type)
                        .bind(saga.status.as_str())
                        .bind(Json(&saga.payload))
                        .bind(saga.current_step.clone())
                        .bind(ms(saga.next_attempt_at))
                        .bind(saga.deadline.map(ms))
                        .bind(&lease.owner)
                        .bind(ms(lease.expires_at))
                        .bind(lease.fence)
                        .execute(&mut *tx)
                        .await?;
                    for (i, s) in saga.steps.iter().enumerate() {
                        bind_step!(saga.id, i, s).execute(&mut *tx).await?;
                    }
                    results.push(Ok(false));
                }
                Write::Save { saga, changed, lease, now, release } => {
                    let row = sqlx::query(UPDATE_SAGA)
                        .bind(saga.status.as_str())
                        .bind(saga.current_step.clone())
                        .bind(saga.error.clone())
                        .bind(ms(saga.next_attempt_at))
                        .bind(*release)
                        .bind(ms(lease.expires_at))
                        .bind(saga.id)
                        .bind(lease.fence)
                        .bind(&lease.owner)
                        .bind(ms(*now))
                        .fetch_optional(&mut *tx)
                        .await?;
                    // Fenced out: this saga's steps are not written; the batch goes on.
                    let Some(row) = row else {
                        results.push(Err(StoreError::LeaseLost(saga.id)));
                        continue;
                    };
                    let abort: bool = row.try_get(0)?;
                    let mut seen: Vec<usize> = Vec::with_capacity(changed.len());
                    for &i in changed {
                        if seen.contains(&i) {
                            continue;
                        }
                        seen.push(i);
                        bind_step!(saga.id, i, &saga.steps[i]).execute(&mut *tx).await?;
                    }
                    results.push(Ok(abort));
                }
            }
        }
        tx.commit().await?;
    });
    Ok(results)
}
