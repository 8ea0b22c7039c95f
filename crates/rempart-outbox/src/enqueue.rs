//! Writing into the outbox and the inbox inside the caller's own transaction.

use std::future::Future;

use sqlx::types::Json;
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::inbox_order::{Order, Position, decide};
use crate::message::{InvalidMessage, Message};

/// Why an enqueue or an inbox record failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The message's fields are not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    /// The database failed; the caller's transaction should be rolled back.
    #[error("outbox: {0}; is the outbox schema migrated (Db::migrate(&OUTBOX_SCHEMA))?")]
    Db(#[from] sqlx::Error),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for sqlx::Postgres {}
    impl Sealed for sqlx::Sqlite {}
}

/// The two backends a transaction can be on: PostgreSQL and SQLite.
pub trait Backend: sqlx::Database + sealed::Sealed {
    #[doc(hidden)]
    fn enqueue<'a>(
        tx: &'a mut Transaction<'_, Self>,
        message: &'a Message,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a;

    #[doc(hidden)]
    fn record_delivery<'a>(
        tx: &'a mut Transaction<'_, Self>,
        consumer: &'a str,
        message_id: &'a str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a;

    #[doc(hidden)]
    fn lock_last_seq<'a>(
        tx: &'a mut Transaction<'_, Self>,
        consumer: &'a str,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a;

    #[doc(hidden)]
    fn set_last_seq<'a>(
        tx: &'a mut Transaction<'_, Self>,
        consumer: &'a str,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        last_seq: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
}

// The next number of an aggregate, with the insert, in one statement (one
// round trip). The counter row's write is held to commit, so a second writer
// of the same aggregate waits for the first and numbers after it (seq order
// is commit order), and a rollback undoes the bump (no gap). PostgreSQL: a
// data-modifying CTE upserts the counter (its row lock serialises writers).
const ENQUEUE_PG: &str = "WITH s AS (
  INSERT INTO outbox_sequences (aggregate_type, aggregate_id, last_seq) VALUES ($2, $3, 1)
  ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_seq = outbox_sequences.last_seq + 1
  RETURNING last_seq)
INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload, headers)
SELECT $1, $2, $3, s.last_seq, $4, $5, $6 FROM s
RETURNING seq";

// SQLite has no data-modifying CTE: the insert reads the counter and the
// `outbox_sequence` trigger (migration 2) moves it. The statement holds the
// database's write lock from its start, so no other writer reads the counter
// between the two; it stays held to commit.
const ENQUEUE_SQLITE: &str =
    "INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload, headers)
VALUES ($1, $2, $3,
  COALESCE((SELECT last_seq FROM outbox_sequences WHERE aggregate_type = $2 AND aggregate_id = $3), 0) + 1,
  $4, $5, $6)
RETURNING seq";

const RECORD: &str = "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT (consumer, message_id) DO NOTHING";

// The upsert creates the row (0: nothing applied) or takes its row lock
// (PostgreSQL; SQLite's write lock on both) until the commit, so two
// deliveries of one aggregate decide one after the other.
const LOCK_LAST_SEQ: &str = "INSERT INTO inbox_sequences (consumer, aggregate_type, aggregate_id, last_seq)
VALUES ($1, $2, $3, 0)
ON CONFLICT (consumer, aggregate_type, aggregate_id) DO UPDATE SET last_seq = inbox_sequences.last_seq
RETURNING last_seq";

const SET_LAST_SEQ: &str =
    "INSERT INTO inbox_sequences (consumer, aggregate_type, aggregate_id, last_seq)
VALUES ($1, $2, $3, $4)
ON CONFLICT (consumer, aggregate_type, aggregate_id) DO UPDATE SET last_seq = excluded.last_seq";

macro_rules! enqueue_in {
    ($sql:ident, $tx:ident, $m:ident) => {
        sqlx::query_scalar($sql)
            .bind($m.id)
            .bind(&$m.aggregate_type)
            .bind(&$m.aggregate_id)
            .bind(&$m.event_type)
            .bind(Json(&$m.payload))
            .bind(Json(&$m.headers))
            .fetch_one(&mut **$tx)
            .await
    };
}

macro_rules! backend {
    ($db:ty, $enqueue:ident) => {
        impl Backend for $db {
            async fn enqueue(
                tx: &mut Transaction<'_, Self>,
                m: &Message,
            ) -> Result<i64, sqlx::Error> {
                enqueue_in!($enqueue, tx, m)
            }

            async fn record_delivery(
                tx: &mut Transaction<'_, Self>,
                consumer: &str,
                message_id: &str,
            ) -> Result<bool, sqlx::Error> {
                let r = sqlx::query(RECORD)
                    .bind(consumer)
                    .bind(message_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn lock_last_seq(
                tx: &mut Transaction<'_, Self>,
                consumer: &str,
                aggregate_type: &str,
                aggregate_id: &str,
            ) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(LOCK_LAST_SEQ)
                    .bind(consumer)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .fetch_one(&mut **tx)
                    .await
            }

            async fn set_last_seq(
                tx: &mut Transaction<'_, Self>,
                consumer: &str,
                aggregate_type: &str,
                aggregate_id: &str,
                last_seq: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(SET_LAST_SEQ)
                    .bind(consumer)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(last_seq)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            }
        }
    };
}

backend!(Postgres, ENQUEUE_PG);
backend!(Sqlite, ENQUEUE_SQLITE);

/// The producer side: messages written in the same transaction as the
/// business change, so both commit or neither does.
#[derive(Debug, Clone, Copy)]
pub struct Outbox;

impl Outbox {
    /// Writes `message` in `tx`; returns its place in its aggregate (1, 2, …).
    ///
    /// Two transactions writing the same aggregate are serialised (the second
    /// waits at this call until the first ends), which is what keeps the
    /// aggregate's order; different aggregates do not wait on each other.
    pub async fn enqueue<DB: Backend>(
        tx: &mut Transaction<'_, DB>,
        message: &Message,
    ) -> Result<i64, EnqueueError> {
        message.check()?;
        Ok(DB::enqueue(tx, message).await?)
    }
}

/// What [`Inbox::handle_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled<T> {
    /// First delivery: the handler ran in the transaction.
    Applied(T),
    /// Seen before: the handler did not run.
    Duplicate,
    /// Ahead of its aggregate (an earlier seq is not applied yet): the
    /// handler did not run; hand the message back to the broker for a
    /// redelivery. Only [`Inbox::handle_in_order`] returns it.
    Early {
        /// The seq the inbox waits for in this aggregate.
        expected: i64,
    },
}

/// The consumer side: a message's effects applied at most once per
/// consumer and, for messages with a [`Position`], in their aggregate's order
/// (see [`handle_in_order`](Inbox::handle_in_order)).
#[derive(Debug, Clone, Copy)]
pub struct Inbox;

impl Inbox {
    /// Records `(consumer, message_id)` in `tx`; `true` the first time. A
    /// concurrent transaction recording the same pair waits for this one and
    /// then gets `false`, so commit this transaction with the handler's effects.
    pub async fn first_delivery<DB: Backend>(
        tx: &mut Transaction<'_, DB>,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, EnqueueError> {
        Ok(DB::record_delivery(tx, consumer, message_id).await?)
    }

    /// Runs `handler` in `tx` unless `consumer` has seen `message_id`. The
    /// caller commits `tx`, then acks the broker: a crash before the commit
    /// redelivers and applies once; after it, the redelivery is a `Duplicate`.
    pub async fn handle_once<'t, 'c, DB, T, E, F>(
        tx: &'t mut Transaction<'c, DB>,
        consumer: &str,
        message_id: &str,
        handler: F,
    ) -> Result<Handled<T>, E>
    where
        DB: Backend,
        E: From<EnqueueError>,
        F: AsyncFnOnce(&'t mut Transaction<'c, DB>) -> Result<T, E>,
    {
        if !Self::first_delivery(tx, consumer, message_id).await? {
            crate::metrics::INBOX_DUPLICATES
                .get_or_create(&vec![("consumer", consumer.to_owned())])
                .inc();
            return Ok(Handled::Duplicate);
        }
        handler(tx).await.map(Handled::Applied)
    }

    /// Like [`handle_once`](Inbox::handle_once), and for a message at a
    /// `position` (its `rempart-*` headers), only if it is its aggregate's
    /// next: a seq already applied is a `Duplicate`, a later one is `Early`
    /// (nothing runs; the caller hands it back to the broker). Without a
    /// position it is `handle_once`. The aggregate's row stays locked to the
    /// end of `tx`, so commit `tx` with the handler's effects.
    pub async fn handle_in_order<'t, 'c, DB, T, E, F>(
        tx: &'t mut Transaction<'c, DB>,
        consumer: &str,
        message_id: &str,
        position: Option<&Position>,
        handler: F,
    ) -> Result<Handled<T>, E>
    where
        DB: Backend,
        E: From<EnqueueError>,
        F: AsyncFnOnce(&'t mut Transaction<'c, DB>) -> Result<T, E>,
    {
        let Some(p) = position else {
            return Self::handle_once(tx, consumer, message_id, handler).await;
        };
        let labels = || vec![("consumer", consumer.to_owned())];
        let last = DB::lock_last_seq(tx, consumer, &p.aggregate_type, &p.aggregate_id)
            .await
            .map_err(EnqueueError::from)?;
        match decide(Some(last), p.seq) {
            Order::Duplicate => {
                crate::metrics::INBOX_DUPLICATES
                    .get_or_create(&labels())
                    .inc();
                return Ok(Handled::Duplicate);
            }
            Order::Early { expected } => {
                crate::metrics::INBOX_OUT_OF_ORDER
                    .get_or_create(&labels())
                    .inc();
                return Ok(Handled::Early { expected });
            }
            Order::Apply => {}
        }
        DB::set_last_seq(tx, consumer, &p.aggregate_type, &p.aggregate_id, p.seq)
            .await
            .map_err(EnqueueError::from)?;
        // The id was applied without its order (before the upgrade to the
        // ordered inbox): it is this seq, done; the aggregate moves past it.
        if !Self::first_delivery(tx, consumer, message_id).await? {
            crate::metrics::INBOX_DUPLICATES
                .get_or_create(&labels())
                .inc();
            return Ok(Handled::Duplicate);
        }
        handler(tx).await.map(Handled::Applied)
    }

    /// Seeds `consumer`'s place in an aggregate: the next message it applies
    /// is `last_seq + 1`. For a consumer that starts after retention deleted
    /// the aggregate's first messages (it would wait for seq 1 forever), or
    /// one moving from the unordered inbox; the caller commits `tx`.
    pub async fn start_at<DB: Backend>(
        tx: &mut Transaction<'_, DB>,
        consumer: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        last_seq: i64,
    ) -> Result<(), EnqueueError> {
        Ok(DB::set_last_seq(tx, consumer, aggregate_type, aggregate_id, last_seq).await?)
    }
}

/// The outbox id as the broker's message id.
pub fn message_id(id: Uuid) -> String {
    id.hyphenated().to_string()
}
