//! The revenue projection kept in a table, `chiffre_affaires(date,
//! store_id, total_ht, total_tva, ticket_count)`, on SQLite or PostgreSQL,
//! fed from an [`EventStore`] in global-position order.
//!
//! The seed's upsert added a ticket again whenever its event was replayed.
//! Here each page of events is folded by the pure [`plan_page`] against the
//! checkpoint read *inside* the write transaction, and the rows and the new
//! checkpoint are committed together: a page applied twice, or a crash
//! between the rows and the checkpoint, changes nothing. [`RevenueTable::rebuild`]
//! replaces the rows and the checkpoint in one transaction with a fold from
//! position 1, so readers never see a half-rebuilt table.
//!
//! Amounts are integer cents; the date is the ticket's business date
//! (`YYYY-MM-DD` text, so it sorts), from the event's metadata.

use std::collections::BTreeMap;

use rempart_db::{Component, Db, DbError, Migration, with_pool};

use crate::envelope::{EnvelopeError, decode};
use crate::money::{Cents, MoneyError};
use crate::projection::{Revenue, Step, step};
use crate::store::{EventStore, RecordedEvent, StoreError};
use crate::ticket::{BusinessDate, StoreId};

/// The checkpoint row's name: one table could hold several projections'.
const PROJECTION: &str = "chiffre_affaires";

/// Events read per transaction.
const PAGE: u32 = 1_000;

/// The projection's schema (component `revenue`). Derived data: rows may be
/// updated and deleted, unlike the events.
pub const REVENUE_SCHEMA: Component = Component {
    name: "revenue",
    migrations: &[Migration {
        version: 1,
        name: "chiffre_affaires and projection checkpoints",
        sqlite: REVENUE_TABLES,
        postgres: REVENUE_TABLES,
    }],
};

const REVENUE_TABLES: &str = "
CREATE TABLE chiffre_affaires (
  date         TEXT NOT NULL,
  store_id     TEXT NOT NULL,
  total_ht     BIGINT NOT NULL,
  total_tva    BIGINT NOT NULL,
  ticket_count BIGINT NOT NULL,
  PRIMARY KEY (date, store_id)
);
CREATE TABLE projection_checkpoints (
  projection       TEXT PRIMARY KEY,
  position         BIGINT NOT NULL,
  last_recorded_at BIGINT NOT NULL
);
";

/// Why the projection could not advance. Nothing is half-applied: the
/// transaction rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The projection's database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading the events.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `TICKET_CLOS` that cannot be read: the projection stops there
    /// rather than leave a ticket out of the figures.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The figures overflow.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// Events handed over out of order or with a hole.
    #[error(
        "the projection is at position {checkpoint} and was given position {found} next: pass events in global-position order, from checkpoint + 1"
    )]
    Gap {
        /// The checkpoint.
        checkpoint: u64,
        /// The position given.
        found: u64,
    },
    /// A row the code cannot read.
    #[error("chiffre_affaires row unreadable: {0}")]
    Corrupt(String),
}

/// The last event the projection applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Its global position: the checkpoint.
    pub position: u64,
    /// When it was recorded (ms since the Unix epoch).
    pub recorded_at: i64,
}

/// What a page of events does to the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PagePlan {
    /// Amounts to add, per (date, store).
    pub changes: BTreeMap<(BusinessDate, StoreId), Revenue>,
    /// The new checkpoint; `None` when every event was already applied.
    pub last: Option<Applied>,
    /// Events newly applied (counted or not).
    pub events: u64,
}

fn add_count(a: u64, b: u64) -> Result<u64, MoneyError> {
    a.checked_add(b).ok_or(MoneyError::Overflow {
        what: "a ticket count",
    })
}

/// Folds `events` (in position order) into what they add to a projection at
/// `checkpoint`: events at or below it are skipped, the others must follow
/// it without a hole.
pub fn plan_page(
    checkpoint: Option<u64>,
    events: &[RecordedEvent],
) -> Result<PagePlan, ProjectionError> {
    let mut plan = PagePlan::default();
    let mut at = checkpoint;
    for e in events {
        if at.is_some_and(|c| e.position <= c) {
            continue;
        }
        let expected = at.unwrap_or(0) + 1;
        if e.position != expected {
            return Err(ProjectionError::Gap {
                checkpoint: at.unwrap_or(0),
                found: e.position,
            });
        }
        // Only a close carries figures; other events just move the checkpoint.
        let change = match decode(e)? {
            Some((meta, event)) if e.event_type == "TICKET_CLOS" => {
                match step(at, e.position, &meta, &event)? {
                    Step::Advance { change, .. } => change,
                    Step::AlreadyApplied => None,
                }
            }
            _ => None,
        };
        if let Some(c) = change {
            let row = plan.changes.entry((c.date, c.store_id)).or_default();
            row.total_ht = row.total_ht.checked_add(c.total_ht)?;
            row.total_tva = row.total_tva.checked_add(c.total_tva)?;
            row.ticket_count = add_count(row.ticket_count, c.ticket_count)?;
        }
        at = Some(e.position);
        plan.events += 1;
        plan.last = Some(Applied {
            position: e.position,
            recorded_at: e.recorded_at,
        });
    }
    Ok(plan)
}

/// How far behind the store the projection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Lag {
    /// The store's last position.
    pub head: u64,
    /// The projection's checkpoint (0: nothing applied).
    pub checkpoint: u64,
    /// Events not yet applied.
    pub behind: u64,
    /// Ms from the recording of the last applied event to `now`; `None`
    /// before the first. Events are timed by their register's clock.
    pub since_last_applied_ms: Option<i64>,
}

impl Lag {
    /// The lag at `now_ms` of a projection at `applied` on a store whose head is `head`.
    pub fn at(head: u64, applied: Option<Applied>, now_ms: i64) -> Lag {
        let checkpoint = applied.map_or(0, |a| a.position);
        Lag {
            head,
            checkpoint,
            behind: head.saturating_sub(checkpoint),
            since_last_applied_ms: applied.map(|a| now_ms.saturating_sub(a.recorded_at)),
        }
    }
}

/// One row of `chiffre_affaires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueRow {
    /// The business day.
    pub date: BusinessDate,
    /// The store.
    pub store_id: StoreId,
    /// The figures.
    pub revenue: Revenue,
}

/// The `chiffre_affaires` table on one database (central's, usually the
/// event store's own).
#[derive(Debug, Clone)]
pub struct RevenueTable {
    db: Db,
}

impl RevenueTable {
    /// The table on `db`, migrated.
    pub async fn open(db: Db) -> Result<RevenueTable, ProjectionError> {
        db.migrate(&REVENUE_SCHEMA).await?;
        Ok(RevenueTable { db })
    }

    fn err(&self, e: sqlx::Error) -> ProjectionError {
        ProjectionError::Db(self.db.error(e))
    }

    /// The last event applied, if any.
    pub async fn applied(&self) -> Result<Option<Applied>, ProjectionError> {
        let err = |e| self.err(e);
        let row: Option<(i64, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT position, last_recorded_at FROM projection_checkpoints WHERE projection = $1")
                .bind(PROJECTION).fetch_optional(pool).await.map_err(err)?
        });
        Ok(row.map(|(p, at)| Applied {
            position: p as u64,
            recorded_at: at,
        }))
    }

    /// Applies `events` (a page read from the store, in order) in one
    /// transaction with the checkpoint; events already applied are skipped.
    /// Returns how many were newly applied.
    pub async fn apply(&self, events: &[RecordedEvent]) -> Result<u64, ProjectionError> {
        self.write(Write::Page(events)).await
    }

    /// Applies everything the store holds past the checkpoint, page by page;
    /// returns how many events were newly applied.
    pub async fn catch_up(&self, store: &EventStore) -> Result<u64, ProjectionError> {
        let mut total = 0;
        loop {
            let from = self.applied().await?.map_or(0, |a| a.position) + 1;
            let page = store.read_all(from, PAGE).await?;
            if page.is_empty() {
                return Ok(total);
            }
            total += self.apply(&page).await?;
        }
    }

    /// Recomputes the table from position 1 and replaces rows and checkpoint
    /// in one transaction; returns how many events were folded.
    pub async fn rebuild(&self, store: &EventStore) -> Result<u64, ProjectionError> {
        let mut plan = PagePlan::default();
        loop {
            let from = plan.last.map_or(0, |a| a.position) + 1;
            let page = store.read_all(from, PAGE).await?;
            if page.is_empty() {
                break;
            }
            let next = plan_page(plan.last.map(|a| a.position), &page)?;
            for (key, r) in next.changes {
                let row = plan.changes.entry(key).or_default();
                row.total_ht = row.total_ht.checked_add(r.total_ht)?;
                row.total_tva = row.total_tva.checked_add(r.total_tva)?;
                row.ticket_count = add_count(row.ticket_count, r.ticket_count)?;
            }
            plan.events += next.events;
            plan.last = next.last.or(plan.last);
        }
        let events = plan.events;
        self.write(Write::Replace(plan)).await?;
        Ok(events)
    }

    async fn write(&self, what: Write<'_>) -> Result<u64, ProjectionError> {
        let err = |e| self.err(e);
        let sqlite = self.db.backend() == "sqlite";
        with_pool!(&self.db, pool => {
            let mut conn = pool.acquire().await.map_err(err)?;
            // One writer: the checkpoint read below is the one committed on.
            let mut tx = if sqlite {
                sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.map_err(err)?
            } else {
                sqlx::Connection::begin(&mut *conn).await.map_err(err)?
            };
            if !sqlite {
                sqlx::query("LOCK TABLE projection_checkpoints IN EXCLUSIVE MODE")
                    .execute(&mut *tx).await.map_err(err)?;
            }
            let checkpoint: Option<i64> = sqlx::query_scalar(
                "SELECT position FROM projection_checkpoints WHERE projection = $1")
                .bind(PROJECTION).fetch_optional(&mut *tx).await.map_err(err)?;
            let replace = matches!(what, Write::Replace(_));
            let plan = match what {
                Write::Page(events) => plan_page(checkpoint.map(|c| c as u64), events)?,
                Write::Replace(plan) => {
                    sqlx::query("DELETE FROM chiffre_affaires").execute(&mut *tx).await.map_err(err)?;
                    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
                        .bind(PROJECTION).execute(&mut *tx).await.map_err(err)?;
                    plan
                }
            };
            let Some(last) = plan.last else {
                // Nothing new; a rebuild of an empty store still empties the table.
                if replace {
                    tx.commit().await.map_err(err)?;
                }
                return Ok(0);
            };
            for ((date, store), r) in &plan.changes {
                sqlx::query(
                    "INSERT INTO chiffre_affaires (date, store_id, total_ht, total_tva, ticket_count)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (date, store_id) DO UPDATE SET
                       total_ht = chiffre_affaires.total_ht + excluded.total_ht,
                       total_tva = chiffre_affaires.total_tva + excluded.total_tva,
                       ticket_count = chiffre_affaires.ticket_count + excluded.ticket_count")
                    .bind(date.to_string()).bind(store.as_str())
                    .bind(r.total_ht.get()).bind(r.total_tva.get())
                    .bind(i64::try_from(r.ticket_count).unwrap_or(i64::MAX))
                    .execute(&mut *tx).await.map_err(err)?;
            }
            sqlx::query(
                "INSERT INTO projection_checkpoints (projection, position, last_recorded_at) VALUES ($1, $2, $3)
                 ON CONFLICT (projection) DO UPDATE SET position = excluded.position,
                   last_recorded_at = excluded.last_recorded_at")
                .bind(PROJECTION).bind(last.position as i64).bind(last.recorded_at)
                .execute(&mut *tx).await.map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(plan.events)
        })
    }

    /// Every row, by date then store.
    pub async fn rows(&self) -> Result<Vec<RevenueRow>, ProjectionError> {
        let err = |e| self.err(e);
        let rows: Vec<(String, String, i64, i64, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT date, store_id, total_ht, total_tva, ticket_count FROM chiffre_affaires ORDER BY date, store_id")
                .fetch_all(pool).await.map_err(err)?
        });
        rows.into_iter()
            .map(|(date, store, ht, tva, count)| {
                Ok(RevenueRow {
                    date: date
                        .parse()
                        .map_err(|e| ProjectionError::Corrupt(format!("{e}")))?,
                    store_id: StoreId(store),
                    revenue: Revenue {
                        total_ht: Cents::new(ht),
                        total_tva: Cents::new(tva),
                        ticket_count: count as u64,
                    },
                })
            })
            .collect()
    }

    /// How far behind `store` the table is at `now_ms`.
    pub async fn lag(&self, store: &EventStore, now_ms: i64) -> Result<Lag, ProjectionError> {
        let head = store.head_position().await?;
        Ok(Lag::at(head, self.applied().await?, now_ms))
    }
}

enum Write<'a> {
    /// Fold a page against the committed checkpoint.
    Page(&'a [RecordedEvent]),
    /// Replace everything with a fold from position 1.
    Replace(PagePlan),
}
