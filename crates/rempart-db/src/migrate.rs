//! Embedded migrations, versioned per component.
//!
//! One table, `rempart_schema_versions(component, version)`, holds each
//! component's version. [`Db::migrate`] applies a component's pending
//! migrations in ONE transaction with the version bump, so a crash leaves
//! either the old schema or the new one. On PostgreSQL the transaction first
//! takes an advisory lock keyed on the schema, so two workers starting at
//! once apply each migration once; on SQLite `BEGIN IMMEDIATE` takes the
//! single writer lock. A database whose version for the component is above
//! the binary's latest is refused before anything runs.

use futures_util::StreamExt;
use sqlx::Connection;

use crate::error::DbError;
use crate::open::Db;

/// One schema change, with its SQL for each backend (several statements allowed).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, … in order, without gaps.
    pub version: i64,
    /// A short name, shown in errors.
    pub name: &'static str,
    /// The SQL for SQLite.
    pub sqlite: &'static str,
    /// The SQL for PostgreSQL.
    pub postgres: &'static str,
}

/// A component's schema: its name (`saga`, `outbox`, …) and its migrations.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// The component's name, the key in `rempart_schema_versions`.
    pub name: &'static str,
    /// Its migrations, versions 1..=n in order.
    pub migrations: &'static [Migration],
}

impl Component {
    /// The latest version this binary knows.
    pub fn latest(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version)
    }
}

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS rempart_schema_versions (
    component  VARCHAR(100) PRIMARY KEY,
    version    BIGINT NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)";

impl Db {
    /// Brings `component`'s schema up to date; returns how many migrations ran.
    /// Refuses ([`DbError::SchemaTooNew`]) a database migrated by a newer binary.
    pub async fn migrate(&self, component: &Component) -> Result<usize, DbError> {
        debug_assert!(
            component
                .migrations
                .iter()
                .enumerate()
                .all(|(i, m)| m.version == i as i64 + 1),
            "migrations of {} must be numbered 1..=n",
            component.name
        );
        let err = |e| self.error(e);
        crate::with_pool!(self, pool => {
            let mut conn = pool.acquire().await.map_err(err)?;
            let mut tx = if self.backend() == "sqlite" {
                conn.begin_with("BEGIN IMMEDIATE").await.map_err(err)?
            } else {
                conn.begin().await.map_err(err)?
            };
            if self.backend() == "postgres" {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/rempart_schema_versions'))")
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(VERSION_TABLE).execute(&mut *tx).await.map_err(err)?;
            let current: Option<i64> =
                sqlx::query_scalar("SELECT version FROM rempart_schema_versions WHERE component = $1")
                    .bind(component.name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err)?;
            let current = current.unwrap_or(0);
            if current > component.latest() {
                return Err(DbError::SchemaTooNew {
                    url: self.url().to_owned(),
                    component: component.name.to_owned(),
                    found: current,
                    known: component.latest(),
                });
            }
            let mut applied = 0;
            for m in component.migrations.iter().filter(|m| m.version > current) {
                let sql = if self.backend() == "sqlite" { m.sqlite } else { m.postgres };
                // `execute_many`, not `execute`: the latter's future is not
                // `Send` for every lifetime (sqlx#3150), which a spawned worker needs.
                let mut results = sqlx::raw_sql(sql).execute_many(&mut *tx);
                while let Some(r) = results.next().await {
                    r.map_err(|source| DbError::Migration {
                        url: self.url().to_owned(),
                        component: component.name.to_owned(),
                        version: m.version,
                        name: m.name.to_owned(),
                        source,
                    })?;
                }
                drop(results);
                applied += 1;
            }
            if applied > 0 {
                sqlx::query(
                    "INSERT INTO rempart_schema_versions (component, version) VALUES ($1, $2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version, applied_at = CURRENT_TIMESTAMP",
                )
                .bind(component.name)
                .bind(component.latest())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                tracing::info!(component = component.name, from = current, to = component.latest(), db = self.url(), "schema migrated");
            }
            tx.commit().await.map_err(err)?;
            Ok(applied)
        })
    }

    /// The version of `component`'s schema in the database (0 if none).
    pub async fn schema_version(&self, component: &str) -> Result<i64, DbError> {
        let err = |e| self.error(e);
        crate::with_pool!(self, pool => {
            sqlx::query(VERSION_TABLE).execute(pool).await.map_err(err)?;
            let v: Option<i64> =
                sqlx::query_scalar("SELECT version FROM rempart_schema_versions WHERE component = $1")
                    .bind(component)
                    .fetch_optional(pool)
                    .await
                    .map_err(err)?;
            Ok(v.unwrap_or(0))
        })
    }
}
