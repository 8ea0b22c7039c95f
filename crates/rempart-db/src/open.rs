//! Opening a pool from a URL, with a deadline on every wait.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{DbError, redact};

/// How hard SQLite flushes a commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: a commit survives a crash of the
    /// process; the last commits may be lost if the machine loses power.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced; survives power loss.
    Full,
}

/// Knobs for [`Db::open`]; the defaults suit a service.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// SQLite's commit durability.
    pub durability: Durability,
    /// How long SQLite waits for another writer's lock before failing.
    pub busy_timeout: Duration,
    /// PostgreSQL: the deadline to open the first connection.
    pub connect_timeout: Duration,
    /// PostgreSQL and SQLite: the deadline to get a connection from the pool
    /// (this includes connecting when the pool has to open one).
    pub acquire_timeout: Duration,
    /// PostgreSQL: the server aborts a statement running longer than this.
    pub statement_timeout: Duration,
    /// The pool's size.
    pub max_connections: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            max_connections: 8,
        }
    }
}

/// Rows a SQLite query's worker thread may run ahead of its reader. sqlx's
/// default (50) makes a 1,000-row page ping-pong between the two threads
/// every 50 rows; this lets a page go through in one run. Memory is bounded
/// by what a query returns anyway (`fetch_all` keeps every row).
const SQLITE_ROW_BUFFER: usize = 1024;

/// Opening a pool under a deadline: the driver's error, or the deadline, as text.
async fn within<T>(
    deadline: Duration,
    open: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    tokio::time::timeout(deadline, open)
        .await
        .map_err(|_| format!("no answer within {deadline:?}"))?
        .map_err(|e| e.to_string())
}

/// A pool on one of the two backends.
#[derive(Debug, Clone)]
pub enum Pool {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// An open database: its pool, and its URL (redacted) for error messages.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    url: String,
}

impl Db {
    /// Opens `url` with default options. See [`Db::open_with`].
    pub async fn open(url: &str) -> Result<Db, DbError> {
        Db::open_with(url, &OpenOptions::default()).await
    }

    /// Opens a pool on `sqlite://PATH` or `postgres://…` (`postgresql://` too)
    /// and checks that one connection works, within `connect_timeout`.
    ///
    /// A PostgreSQL URL may set the schema with `?options[search_path]=NAME`.
    pub async fn open_with(url: &str, opts: &OpenOptions) -> Result<Db, DbError> {
        let unreachable = |reason: String| DbError::Unreachable {
            url: redact(url),
            reason,
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(DbError::InvalidUrl {
                    url: redact(url),
                    reason: "no file path; write sqlite://PATH, e.g. sqlite://sagas.db or sqlite:///var/lib/app/sagas.db".into(),
                });
            }
            let connect = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match opts.durability {
                    Durability::Normal => SqliteSynchronous::Normal,
                    Durability::Full => SqliteSynchronous::Full,
                })
                .busy_timeout(opts.busy_timeout)
                .foreign_keys(true)
                .row_buffer_size(SQLITE_ROW_BUFFER);
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect);
            let pool = within(opts.connect_timeout, pool)
                .await
                .map_err(unreachable)?;
            return Ok(Db {
                pool: Pool::Sqlite(pool),
                url: redact(url),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| DbError::InvalidUrl {
                    url: redact(url),
                    reason: e.to_string(),
                })?
                .options([(
                    "statement_timeout",
                    format!("{}", opts.statement_timeout.as_millis()),
                )]);
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect);
            let pool = within(opts.connect_timeout, pool)
                .await
                .map_err(unreachable)?;
            return Ok(Db {
                pool: Pool::Postgres(pool),
                url: redact(url),
            });
        }
        Err(DbError::UnknownScheme { url: redact(url) })
    }

    /// Wraps a pool the caller built (for settings [`OpenOptions`] does not
    /// cover, e.g. a per-connection hook); `url` names it in error messages.
    pub fn from_pool(pool: Pool, url: &str) -> Db {
        Db {
            pool,
            url: redact(url),
        }
    }

    /// Which backend: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The pool, for queries (see [`with_pool!`](crate::with_pool)).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The URL this was opened from, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Wraps a driver error with this database's URL.
    pub fn error(&self, source: sqlx::Error) -> DbError {
        DbError::Query {
            url: self.url.clone(),
            source,
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        crate::with_pool!(self, p => p.close().await)
    }
}
