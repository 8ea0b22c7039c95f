//! The relay's SQL: claim a batch, record what became of each row, the
//! SQLite relay lease, retention and dead letters. One piece of SQL serves
//! both backends where it can (`with_pool!`); the claim differs only by
//! PostgreSQL's row lock.

use rempart_db::{Db, DbError, with_pool};
use sqlx::Row;
use uuid::Uuid;

use crate::schema::OUTBOX_SCHEMA;

/// The claim: the oldest heads (lowest pending `seq`) of up to `$2`
/// aggregates that are due, then up to `$3` pending rows of each of those
/// aggregates in `seq` order. Ordered by `created_at` alone, so the
/// database walks `outbox_pending_age` and stops at the limit (adding `seq`
/// made it sort the whole backlog: 64 ms instead of 5 ms for 1,024 heads of
/// 20,000 rows). SQLite's text; PostgreSQL has its own, [`CLAIM_POSTGRES`].
pub(crate) const CLAIM: &str = "
WITH heads AS (
  SELECT o.id, o.aggregate_type, o.aggregate_id FROM outbox o
  WHERE o.state = 'pending' AND o.next_attempt_at <= $1
    AND NOT EXISTS (SELECT 1 FROM outbox p
                    WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
                      AND p.state = 'pending' AND p.seq < o.seq)
  ORDER BY o.created_at
  LIMIT $2
)
SELECT id, aggregate_type, aggregate_id, seq, event_type, payload, headers, attempts, created_ms FROM (
  SELECT o.id, o.aggregate_type, o.aggregate_id, o.seq, o.event_type,
         CAST(o.payload AS TEXT) AS payload, CAST(o.headers AS TEXT) AS headers, o.attempts, {created_ms} AS created_ms,
         row_number() OVER (PARTITION BY o.aggregate_type, o.aggregate_id ORDER BY o.seq) AS rn
  FROM outbox o JOIN heads h ON o.aggregate_type = h.aggregate_type AND o.aggregate_id = h.aggregate_id
  WHERE o.state = 'pending'
) x WHERE rn <= $3
ORDER BY aggregate_type, aggregate_id, seq";

/// The claim on PostgreSQL: the same rows as [`CLAIM`], the heads locked
/// with `SKIP LOCKED`, so a relay holding an aggregate's head holds the
/// aggregate until its transaction ends and other relays take other ones.
///
/// Written so that every per-aggregate lookup is an index probe whatever
/// the planner believes: a scalar subquery (never turned into a join) for
/// the head test, "no pending row of the aggregate before this one", and a
/// `LATERAL ... LIMIT` for the rows behind. The test reads `<=` rather than
/// `IS NULL` or `=` because the planner guesses a third of the rows pass an
/// inequality: it then walks `outbox_pending_age` and stops at the limit,
/// where a rarer-looking test made it read and sort the whole backlog. Planned as
/// joins (the `NOT EXISTS` and window form of [`CLAIM`]), PostgreSQL scanned
/// every pending row once per head whenever its statistics said few rows
/// were pending (a new table, or one that is usually drained): 1,000
/// pending rows cost 0.3-0.5 s a claim, 4,000 cost 2 s, so a backlog made
/// the relay slower and the backlog larger (the lag bench's seconds-long
/// p99). `outbox_pending_age` is unusable for these lookups (its predicate
/// names `next_attempt_at`, migration 4), so they probe `outbox_pending`.
pub(crate) const CLAIM_POSTGRES: &str = "
WITH heads AS (
  SELECT o.aggregate_type, o.aggregate_id FROM outbox o
  WHERE o.state = 'pending' AND o.next_attempt_at <= $1
    AND o.seq <= COALESCE((SELECT p.seq FROM outbox p
                           WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
                             AND p.state = 'pending' AND p.seq < o.seq
                           LIMIT 1), o.seq)
  ORDER BY o.created_at
  LIMIT $2 FOR UPDATE OF o SKIP LOCKED
)
SELECT r.id, r.aggregate_type, r.aggregate_id, r.seq, r.event_type, r.payload, r.headers, r.attempts, r.created_ms
FROM heads h CROSS JOIN LATERAL (
  SELECT o.id, o.aggregate_type, o.aggregate_id, o.seq, o.event_type,
         CAST(o.payload AS TEXT) AS payload, CAST(o.headers AS TEXT) AS headers, o.attempts,
         CAST(EXTRACT(EPOCH FROM o.created_at) * 1000 AS BIGINT) AS created_ms
  FROM outbox o
  WHERE o.aggregate_type = h.aggregate_type AND o.aggregate_id = h.aggregate_id AND o.state = 'pending'
  ORDER BY o.seq LIMIT $3
) r
ORDER BY r.aggregate_type, r.aggregate_id, r.seq";

const LEASE: &str = "
INSERT INTO outbox_relay_lease (name, owner, expires_at, fence) VALUES ('relay', $1, $2, 1)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,
  fence = outbox_relay_lease.fence + 1
WHERE outbox_relay_lease.owner = excluded.owner OR outbox_relay_lease.expires_at < $3
RETURNING fence";

/// A row moved aside, for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The outbox id.
    pub id: Uuid,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its place in the aggregate.
    pub seq: i64,
    /// The event's type.
    pub event_type: String,
    /// Failed attempts.
    pub attempts: u32,
    /// Why it was moved aside.
    pub error: String,
}

/// What waits in the outbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows waiting to be published (not dead letters).
    pub pending: u64,
    /// Age of the oldest of them, 0 when there is none.
    pub oldest_age_seconds: f64,
}

/// An aggregate whose messages wait, for an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateBacklog {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its messages waiting to be published.
    pub pending: u64,
    /// Age of the oldest of them.
    pub oldest_age_seconds: f64,
    /// The last error of its next message, if its publish failed.
    pub last_error: Option<String>,
}

/// The outbox table, for relays and operators.
#[derive(Debug, Clone)]
pub struct OutboxStore {
    db: Db,
}

pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

macro_rules! envelope {
    ($r:expr) => {{
        let r = $r;
        let attempts: i32 = r.try_get("attempts")?;
        Ok::<_, sqlx::Error>($crate::message::Envelope {
            id: r.try_get("id")?,
            aggregate_type: r.try_get("aggregate_type")?,
            aggregate_id: r.try_get("aggregate_id")?,
            seq: r.try_get("seq")?,
            event_type: r.try_get("event_type")?,
            payload: r.try_get("payload")?,
            headers: r.try_get("headers")?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            created_ms: r.try_get("created_ms")?,
        })
    }};
}

/// Claims in `$exec`; on PostgreSQL (`$postgres`) it locks the heads.
macro_rules! claim_in {
    ($exec:expr, $postgres:expr, $now:expr, $aggregates:expr, $per:expr) => {
        async {
            use sqlx::Row as _;
            let sql = if $postgres {
                $crate::store::CLAIM_POSTGRES.to_owned()
            } else {
                $crate::store::CLAIM.replace(
                    "{created_ms}",
                    "CAST((julianday(o.created_at) - 2440587.5) * 86400000.0 AS INTEGER)",
                )
            };
            let rows = sqlx::query(&sql)
                .bind($crate::store::ms($now))
                .bind(i64::from($aggregates))
                .bind(i64::from($per))
                .fetch_all($exec)
                .await?;
            rows.iter()
                .map(|r| $crate::store::envelope!(r))
                .collect::<Result<Vec<$crate::message::Envelope>, sqlx::Error>>()
        }
        .await
    };
}

/// Applies outcomes in `$exec`: one statement marks every published row.
macro_rules! apply_in {
    ($exec:expr, $outcomes:expr) => {async {
        use $crate::decision::RowOutcome;
        use uuid::Uuid;
        let outcomes: &[(Uuid, RowOutcome)] = $outcomes;
        let published: Vec<Uuid> = outcomes
            .iter()
            .filter(|(_, o)| *o == RowOutcome::Published)
            .map(|(id, _)| *id)
            .collect();
        if !published.is_empty() {
            let list = (1..=published.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE outbox SET state = 'published', published_at = CURRENT_TIMESTAMP, last_error = NULL WHERE id IN ({list})"
            );
            let mut q = sqlx::query(&sql);
            for id in &published {
                q = q.bind(*id);
            }
            q.execute(&mut *$exec).await?;
        }
        for (id, o) in outcomes {
            let (state, attempts, next, error) = match o {
                RowOutcome::Published => continue,
                RowOutcome::Retry { attempts, next_attempt_at, error } => {
                    ("pending", *attempts, $crate::store::ms(*next_attempt_at), error)
                }
                RowOutcome::Dead { attempts, error } => ("dead", *attempts, 0, error),
            };
            sqlx::query(
                "UPDATE outbox SET state = $1, attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $5",
            )
            .bind(state)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(next)
            .bind(error)
            .bind(*id)
            .execute(&mut *$exec)
            .await?;
        }
        Ok::<(), sqlx::Error>(())
    }.await};
}
pub(crate) use {apply_in, claim_in, envelope};

impl OutboxStore {
    /// A store on `db`, whose outbox schema must be migrated
    /// (`db.migrate(&OUTBOX_SCHEMA)`; [`OutboxStore::open`] does it).
    pub fn new(db: Db) -> Self {
        OutboxStore { db }
    }

    /// Opens `url`, migrates the outbox schema, and returns the store.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let db = Db::open(url).await?;
        db.migrate(&OUTBOX_SCHEMA).await?;
        Ok(OutboxStore { db })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> DbError {
        self.db.error(e)
    }

    /// SQLite: takes or renews the single relay lease until `until`; the
    /// fence to check before writing, or `None` while another relay holds it.
    pub(crate) async fn lease(
        &self,
        owner: &str,
        now: u64,
        until: u64,
    ) -> Result<Option<i64>, DbError> {
        with_pool!(self.db, pool => {
            sqlx::query_scalar(LEASE)
                .bind(owner)
                .bind(ms(until))
                .bind(ms(now))
                .fetch_optional(pool)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Rows waiting to be published (not dead letters).
    pub async fn pending(&self) -> Result<u64, DbError> {
        self.count("pending").await
    }

    async fn count(&self, state: &str) -> Result<u64, DbError> {
        with_pool!(self.db, pool => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = $1")
                .bind(state)
                .fetch_one(pool)
                .await
                .map_err(|e| self.err(e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// SQL for the age in seconds of the oldest `column` of a group (database time).
    fn oldest_age(&self, column: &str) -> String {
        if self.db.backend() == "postgres" {
            format!("CAST(EXTRACT(EPOCH FROM NOW() - MIN({column})) AS DOUBLE PRECISION)")
        } else {
            format!("(julianday('now') - julianday(MIN({column}))) * 86400.0")
        }
    }

    /// The pending rows and the age of the oldest (database time).
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let sql = format!(
            "SELECT COUNT(*), {} FROM outbox WHERE state = 'pending'",
            self.oldest_age("created_at")
        );
        with_pool!(self.db, pool => {
            let (n, age): (i64, Option<f64>) = sqlx::query_as(&sql)
                .fetch_one(pool)
                .await
                .map_err(|e| self.err(e))?;
            Ok(Backlog {
                pending: u64::try_from(n).unwrap_or(0),
                oldest_age_seconds: age.unwrap_or(0.0).max(0.0),
            })
        })
    }

    /// The aggregates with messages waiting, oldest first, at most `limit`.
    pub async fn backlog_by_aggregate(&self, limit: u32) -> Result<Vec<AggregateBacklog>, DbError> {
        let age = self.oldest_age("o.created_at");
        let sql = format!(
            "SELECT o.aggregate_type, o.aggregate_id, COUNT(*) AS pending, {age} AS age,
               (SELECT h.last_error FROM outbox h WHERE h.aggregate_type = o.aggregate_type
                  AND h.aggregate_id = o.aggregate_id AND h.state = 'pending'
                ORDER BY h.seq LIMIT 1) AS last_error
             FROM outbox o WHERE o.state = 'pending'
             GROUP BY o.aggregate_type, o.aggregate_id ORDER BY MIN(o.created_at) LIMIT $1"
        );
        with_pool!(self.db, pool => {
            let rows = sqlx::query(&sql)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|r| {
                    let pending: i64 = r.try_get("pending")?;
                    let age: Option<f64> = r.try_get("age")?;
                    Ok(AggregateBacklog {
                        aggregate_type: r.try_get("aggregate_type")?,
                        aggregate_id: r.try_get("aggregate_id")?,
                        pending: u64::try_from(pending).unwrap_or(0),
                        oldest_age_seconds: age.unwrap_or(0.0).max(0.0),
                        last_error: r.try_get("last_error")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|e| self.err(e))
        })
    }

    /// How many rows are dead letters.
    pub async fn dead_count(&self) -> Result<u64, DbError> {
        self.count("dead").await
    }

    /// Up to `limit` dead letters, by aggregate and `seq`.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, DbError> {
        with_pool!(self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, aggregate_type, aggregate_id, seq, event_type, attempts, last_error FROM outbox
                 WHERE state = 'dead' ORDER BY aggregate_type, aggregate_id, seq LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|r| {
                    let attempts: i32 = r.try_get("attempts")?;
                    let error: Option<String> = r.try_get("last_error")?;
                    Ok(DeadLetter {
                        id: r.try_get("id")?,
                        aggregate_type: r.try_get("aggregate_type")?,
                        aggregate_id: r.try_get("aggregate_id")?,
                        seq: r.try_get("seq")?,
                        event_type: r.try_get("event_type")?,
                        attempts: u32::try_from(attempts).unwrap_or(0),
                        error: error.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|e| self.err(e))
        })
    }

    /// Deletes at most `batch` rows published at least `retention` ago
    /// (database time); returns how many. Pending and dead rows are never
    /// deleted. Short transactions: call it again until it returns less than `batch`.
    pub async fn delete_published(
        &self,
        retention: std::time::Duration,
        batch: u32,
    ) -> Result<u64, DbError> {
        let cutoff = if self.db.backend() == "postgres" {
            "published_at <= NOW() - ($1 * INTERVAL '1 millisecond')"
        } else {
            "published_at <= datetime('now', '-' || ($1 / 1000) || ' seconds')"
        };
        let sql = format!(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = 'published' AND {cutoff} LIMIT $2)"
        );
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        with_pool!(self.db, pool => {
            let r = sqlx::query(&sql)
                .bind(retention_ms)
                .bind(i64::from(batch))
                .execute(pool)
                .await
                .map_err(|e| self.err(e))?;
            Ok(r.rows_affected())
        })
    }

    /// Deletes every row published at least `retention` ago, `batch` rows per
    /// statement; returns how many.
    pub async fn purge_published(
        &self,
        retention: std::time::Duration,
        batch: u32,
    ) -> Result<u64, DbError> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.delete_published(retention, batch).await?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
