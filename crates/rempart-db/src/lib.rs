//! The workflow crates' one database layer: sagas today, the outbox and the
//! event store later, on SQLite or PostgreSQL through sqlx.
//!
//! - [`Db::open`]: a pool from a URL. `sqlite://PATH` is a file (created if
//!   missing, WAL, `synchronous=NORMAL` unless [`Durability::Full`] is asked
//!   for, a busy timeout); `postgres://…` gets a connect deadline and an acquire
//!   deadline, so no network wait is unbounded.
//! - [`DbError`]: every message names the URL (password hidden) and says what to do.
//! - [`Component`] and [`Migration`]: embedded migrations, versioned per
//!   component in one table `rempart_schema_versions`, applied at start in one
//!   transaction (on PostgreSQL under an advisory lock, so workers starting
//!   together do not race); a schema newer than the binary is refused.
//!
//! ## Why not sqlx's `Migrator`
//! sqlx 0.8's migrator keeps one `_sqlx_migrations` table per database (the
//! name is fixed in `sqlx-postgres`/`sqlx-sqlite`'s `migrate.rs`), and
//! `validate_applied_migrations` fails with `VersionMissing` on any applied
//! version it does not know, unless `ignore_missing` is set. Two components
//! (saga, outbox) sharing a database would each see the other's versions as
//! missing; setting `ignore_missing` makes it also accept a schema *newer*
//! than the binary, which is the refusal we need. So this crate runs its own
//! small runner: one row per component, its version compared before anything
//! is applied.

#![deny(missing_docs)]

mod error;
mod migrate;
mod open;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use error::{DbError, redact};
pub use migrate::{Component, Migration};
pub use open::{Db, Durability, OpenOptions, Pool};

/// Runs the same block on whichever pool a [`Db`] holds: the body is
/// type-checked once per backend, so one piece of SQL serves both (sqlx's
/// SQLite binds `$1`-style parameters like PostgreSQL).
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db.pool() {
            $crate::Pool::Sqlite($pool) => $body,
            $crate::Pool::Postgres($pool) => $body,
        }
    };
}
