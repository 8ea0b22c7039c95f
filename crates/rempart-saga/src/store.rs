//! Where sagas live: the [`SagaStore`] trait and its SQL implementation for
//! SQLite and PostgreSQL (one piece of SQL, run on either pool).
//!
//! Every write an engine makes while it runs a saga is conditional on its
//! lease: same owner, same fencing token, not expired. A worker whose lease
//! expired, or was taken over, gets [`StoreError::LeaseLost`] and writes
//! nothing. A claim takes due sagas under a lease inside one transaction
//! (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so workers never wait on each
//! other; SQLite: `BEGIN IMMEDIATE`, the single writer) and bumps the token.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use rempart_db::{Db, DbError, with_pool};
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::group_commit::{Counters, Write, Writer, bind_step, ms, write_one};
use crate::record::{SagaRecord, SagaStatus, StepRecord, StepStatus};

/// A worker's hold on a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker's name.
    pub owner: String,
    /// The fencing token: bumped by every claim, checked by every write.
    pub fence: i64,
    /// Until when the hold is good (ms since the Unix epoch).
    pub expires_at: u64,
}

/// A store's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// This worker's lease on the saga expired or was taken over: it must stop.
    #[error("saga {0}: this worker's lease expired or was taken over; it stops writing")]
    LeaseLost(Uuid),
    /// The store's group-commit writer stopped (its runtime shut down)
    /// before answering: the write may or may not have committed.
    #[error("the saga store's writer stopped before answering; the write may not have committed")]
    WriterStopped,
    /// No such saga.
    #[error("no saga {0} in the database")]
    NotFound(Uuid),
    /// A row the code cannot read (an unknown status, a bad JSON value).
    #[error("saga {id}: unreadable row: {what}")]
    Corrupt {
        /// The saga.
        id: Uuid,
        /// What is wrong.
        what: String,
    },
    /// An operator action that does not apply to the saga's status.
    #[error("saga {id} is {status}: {what}")]
    WrongStatus {
        /// The saga.
        id: Uuid,
        /// Its status.
        status: SagaStatus,
        /// Why the action does not apply.
        what: String,
    },
}

/// What the engine's writes (creates and saves) have cost this store so
/// far. Statements per saga, more than commits, bound the rate once writes
/// are group-committed: each is a round trip and a parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteCounts {
    /// Transactions committed (or tried).
    pub transactions: u64,
    /// SQL statements run inside them (BEGIN and COMMIT not counted).
    pub statements: u64,
}

/// A one-line view of a saga, for listings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SagaSummary {
    /// The saga's id.
    pub id: Uuid,
    /// Its type.
    pub saga_type: String,
    /// Its status.
    pub status: SagaStatus,
    /// The step being run or compensated.
    pub current_step: Option<String>,
    /// The last error.
    pub error: Option<String>,
}

/// Persistence for sagas. Every engine write goes through one of these.
pub trait SagaStore: Send + Sync + 'static {
    /// Inserts a new saga and its step rows in one commit, held by `lease`.
    fn create(
        &self,
        saga: &SagaRecord,
        lease: &Lease,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes the saga row and the step rows `changed` in one commit, if
    /// `lease` still holds at `now`; extends the lease to `lease.expires_at`,
    /// or lets it go when `release`. Returns whether an abort was requested.
    fn save(
        &self,
        saga: &SagaRecord,
        changed: &[usize],
        lease: &Lease,
        now: u64,
        release: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Claims up to `limit` due, unfinished sagas of the given types whose
    /// lease is free or expired, and loads them.
    fn claim(
        &self,
        owner: &str,
        types: &[String],
        now: u64,
        lease_until: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(SagaRecord, Lease)>, StoreError>> + Send;

    /// Extends a held lease (fails with `LeaseLost` if it is gone).
    fn renew(
        &self,
        id: Uuid,
        lease: &Lease,
        now: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Loads a saga and its steps.
    fn load(&self, id: Uuid) -> impl Future<Output = Result<SagaRecord, StoreError>> + Send;

    /// The most recent sagas, newest first.
    fn list(&self, limit: u32)
    -> impl Future<Output = Result<Vec<SagaSummary>, StoreError>> + Send;

    /// Operator: take up a COMPENSATION_FAILED or stuck saga again. Any
    /// current holder loses its lease (the token moves on).
    fn resume(&self, id: Uuid) -> impl Future<Output = Result<SagaStatus, StoreError>> + Send;

    /// Operator: ask the engines to compensate a running saga.
    fn abort(&self, id: Uuid) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The SQL store, on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlSagaStore {
    db: Db,
    // The group-commit writer, started on first write (see group_commit.rs).
    writer: Arc<OnceLock<Writer>>,
    counters: Arc<Counters>,
}

impl SqlSagaStore {
    /// A store on `db`, whose saga schema must be migrated
    /// (`db.migrate(&SAGA_SCHEMA)`; [`SqlSagaStore::open`] does it).
    pub fn new(db: Db) -> Self {
        SqlSagaStore {
            db,
            writer: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// Opens `url`, migrates the saga schema, and returns the store.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let db = Db::open(url).await?;
        db.migrate(&crate::schema::SAGA_SCHEMA).await?;
        Ok(SqlSagaStore::new(db))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// What the engine's writes have cost so far.
    pub fn write_counts(&self) -> WriteCounts {
        use std::sync::atomic::Ordering::Relaxed;
        WriteCounts {
            transactions: self.counters.transactions.load(Relaxed),
            statements: self.counters.statements.load(Relaxed),
        }
    }
}

const SELECT_SAGA: &str = "SELECT id, type, status, payload, current_step, error, next_attempt_at, deadline_at, abort_requested FROM sagas";

fn corrupt(id: Uuid, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id,
        what: what.into(),
    }
}

impl SqlSagaStore {
    fn err(&self, e: sqlx::Error) -> StoreError {
        StoreError::Db(self.db.error(e))
    }

    /// A create or a save, through the group-commit writer; written
    /// directly if the writer's runtime is gone.
    async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let writer = self
            .writer
            .get_or_init(|| Writer::spawn(self.db.clone(), self.counters.clone()))
            .clone();
        match writer.write(write).await {
            Ok(written) => written,
            Err(write) => write_one(&self.db, &self.counters, &write).await,
        }
    }

    async fn load_many(&self, ids: &[Uuid]) -> Result<Vec<SagaRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.load(*id).await?);
        }
        Ok(out)
    }
}

impl SagaStore for SqlSagaStore {
    async fn create(&self, saga: &SagaRecord, lease: &Lease) -> Result<(), StoreError> {
        self.write(Write::Create {
            saga: saga.clone(),
            lease: lease.clone(),
        })
        .await
        .map(|_| ())
    }

    async fn save(
        &self,
        saga: &SagaRecord,
        changed: &[usize],
        lease: &Lease,
        now: u64,
        release: bool,
    ) -> Result<bool, StoreError> {
        self.write(Write::Save {
            saga: saga.clone(),
            changed: changed.to_vec(),
            lease: lease.clone(),
            now,
            release,
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        types: &[String],
        now: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<(SagaRecord, Lease)>, StoreError> {
        if types.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let type_list = (0..types.len())
            .map(|i| format!("${}", i + 5))
            .collect::<Vec<_>>()
            .join(", ");
        let due = format!(
            "SELECT id FROM sagas
             WHERE status IN ('STARTED', 'IN_PROGRESS', 'COMPENSATING')
               AND lease_expires_at < $1 AND next_attempt_at <= $1 AND type IN ({type_list})
             ORDER BY next_attempt_at LIMIT $4"
        );
        let claimed: Vec<(Uuid, i64)> = with_pool!(self.db, pool => {
            let sql = if self.db.backend() == "postgres" {
                format!("WITH due AS ({due} FOR UPDATE SKIP LOCKED)
                         UPDATE sagas SET lease_owner = $2, lease_expires_at = $3, fence = sagas.fence + 1
                         FROM due WHERE sagas.id = due.id RETURNING sagas.id, sagas.fence")
            } else {
                format!("UPDATE sagas SET lease_owner = $2, lease_expires_at = $3, fence = fence + 1
                         WHERE id IN ({due}) RETURNING id, fence")
            };
            let mut conn = pool.acquire().await.map_err(|e| self.err(e))?;
            let mut tx = if self.db.backend() == "sqlite" {
                sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.map_err(|e| self.err(e))?
            } else {
                sqlx::Connection::begin(&mut *conn).await.map_err(|e| self.err(e))?
            };
            let mut q = sqlx::query(&sql)
                .bind(ms(now))
                .bind(owner)
                .bind(ms(lease_until))
                .bind(i64::from(limit));
            for t in types {
                q = q.bind(t);
            }
            let rows = q.fetch_all(&mut *tx).await.map_err(|e| self.err(e))?;
            tx.commit().await.map_err(|e| self.err(e))?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|e| self.err(e))?
        });
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.0).collect();
        let records = self.load_many(&ids).await?;
        Ok(records
            .into_iter()
            .zip(claimed)
            .map(|(r, (_, fence))| {
                (
                    r,
                    Lease {
                        owner: owner.to_owned(),
                        fence,
                        expires_at: lease_until,
                    },
                )
            })
            .collect())
    }

    async fn renew(&self, id: Uuid, lease: &Lease, now: u64) -> Result<(), StoreError> {
        let n = with_pool!(self.db, pool => {
            sqlx::query(
                "UPDATE sagas SET lease_expires_at = $1
                 WHERE id = $2 AND fence = $3 AND lease_owner = $4 AND lease_expires_at > $5",
            )
            .bind(ms(lease.expires_at))
            .bind(id)
            .bind(lease.fence)
            .bind(&lease.owner)
            .bind(ms(now))
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::LeaseLost(id));
        }
        Ok(())
    }

    async fn load(&self, id: Uuid) -> Result<SagaRecord, StoreError> {
        with_pool!(self.db, pool => {
            let row = sqlx::query(&format!("{SELECT_SAGA} WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(|e| self.err(e))?
                .ok_or(StoreError::NotFound(id))?;
            let steps = sqlx::query(
                "SELECT step_name, status, result, attempts, compensation_attempts, last_error
                 FROM saga_steps WHERE saga_id = $1 ORDER BY step_index",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            let get = |e: sqlx::Error| corrupt(id, e.to_string());
            let status: String = row.try_get("status").map_err(get)?;
            let payload: Json<Value> = row.try_get("payload").map_err(get)?;
            let next: i64 = row.try_get("next_attempt_at").map_err(get)?;
            let deadline: Option<i64> = row.try_get("deadline_at").map_err(get)?;
            let mut record = SagaRecord {
                id,
                saga_type: row.try_get("type").map_err(get)?,
                status: SagaStatus::parse(&status)
                    .ok_or_else(|| corrupt(id, format!("unknown saga status {status:?}")))?,
                payload: payload.0,
                current_step: row.try_get("current_step").map_err(get)?,
                error: row.try_get("error").map_err(get)?,
                next_attempt_at: u64::try_from(next).unwrap_or(0),
                deadline: deadline.map(|d| u64::try_from(d).unwrap_or(0)),
                abort_requested: row.try_get("abort_requested").map_err(get)?,
                steps: Vec::with_capacity(steps.len()),
            };
            for s in steps {
                let status: String = s.try_get("status").map_err(get)?;
                let output: Option<Json<Value>> = s.try_get("result").map_err(get)?;
                let attempts: i32 = s.try_get("attempts").map_err(get)?;
                let comp: i32 = s.try_get("compensation_attempts").map_err(get)?;
                record.steps.push(StepRecord {
                    name: s.try_get("step_name").map_err(get)?,
                    status: StepStatus::parse(&status)
                        .ok_or_else(|| corrupt(id, format!("unknown step status {status:?}")))?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    compensation_attempts: u32::try_from(comp).unwrap_or(0),
                    output: output.map(|j| j.0),
                    last_error: s.try_get("last_error").map_err(get)?,
                });
            }
            Ok(record)
        })
    }

    async fn list(&self, limit: u32) -> Result<Vec<SagaSummary>, StoreError> {
        with_pool!(self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, type, status, current_step, error FROM sagas ORDER BY created_at DESC, id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|r| {
                    let id: Uuid = r.try_get("id").map_err(|e| self.err(e))?;
                    let status: String = r.try_get("status").map_err(|e| self.err(e))?;
                    Ok(SagaSummary {
                        id,
                        saga_type: r.try_get("type").map_err(|e| self.err(e))?,
                        status: SagaStatus::parse(&status)
                            .ok_or_else(|| corrupt(id, format!("unknown saga status {status:?}")))?,
                        current_step: r.try_get("current_step").map_err(|e| self.err(e))?,
                        error: r.try_get("error").map_err(|e| self.err(e))?,
                    })
                })
                .collect()
        })
    }

    async fn resume(&self, id: Uuid) -> Result<SagaStatus, StoreError> {
        let mut record = self.load(id).await?;
        if matches!(
            record.status,
            SagaStatus::Completed | SagaStatus::Compensated
        ) {
            return Err(StoreError::WrongStatus {
                id,
                status: record.status,
                what: "it is finished; there is nothing to resume".into(),
            });
        }
        crate::decision::resume(&mut record);
        with_pool!(self.db, pool => {
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            sqlx::query(
                "UPDATE sagas SET status = $1, next_attempt_at = 0, lease_owner = NULL,
                   lease_expires_at = 0, fence = fence + 1, updated_at = CURRENT_TIMESTAMP WHERE id = $2",
            )
            .bind(record.status.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            for (i, s) in record.steps.iter().enumerate() {
                bind_step!(id, i, s).execute(&mut *tx).await.map_err(|e| self.err(e))?;
            }
            tx.commit().await.map_err(|e| self.err(e))?;
        });
        Ok(record.status)
    }

    async fn abort(&self, id: Uuid) -> Result<(), StoreError> {
        let record = self.load(id).await?;
        if record.status.is_final() {
            return Err(StoreError::WrongStatus {
                id,
                status: record.status,
                what: "only a running saga can be aborted".into(),
            });
        }
        with_pool!(self.db, pool => {
            sqlx::query("UPDATE sagas SET abort_requested = TRUE, next_attempt_at = 0 WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map_err(|e| self.err(e))?;
        });
        Ok(())
    }
}
