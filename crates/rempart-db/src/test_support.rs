//! A private database per test, so tests run in parallel and rerun: a
//! PostgreSQL schema of its own (`search_path` in the URL), or a SQLite file
//! in a temporary directory.

use crate::{Db, DbError};

/// The PostgreSQL the tests use: the real server on this machine.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A test's own database; on drop the SQLite directory is removed and the
/// PostgreSQL schema dropped (set `REMPART_KEEP_TEST_SCHEMAS=1` to keep it
/// for a look after a failure).
#[derive(Debug)]
pub struct TestDb {
    /// The open pool.
    pub db: Db,
    /// A URL that opens the same database (another process can use it).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        if std::env::var_os("REMPART_KEEP_TEST_SCHEMAS").is_some() {
            return;
        }
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // the schema is dropped from a thread of its own, with a lock
        // timeout so a connection still in a transaction cannot hang it.
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(admin) = Db::open(POSTGRES_URL).await else {
                    return;
                };
                crate::with_pool!(admin, pool => {
                    let _ = sqlx::raw_sql(&format!(
                        "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                    ))
                    .execute(pool)
                    .await;
                });
                admin.close().await;
            });
        });
        let _ = dropped.join();
    }
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> Result<TestDb, DbError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let db = Db::open(&url).await?;
        Ok(TestDb {
            db,
            url,
            _dir: Some(dir),
            schema: None,
        })
    }

    /// A fresh schema `t_<uuid>` on [`POSTGRES_URL`].
    pub async fn postgres() -> Result<TestDb, DbError> {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::open(POSTGRES_URL).await?;
        crate::with_pool!(admin, pool => {
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(pool)
                .await
                .map_err(|e| admin.error(e))?;
        });
        admin.close().await;
        let url = format!("{POSTGRES_URL}?options[search_path]={schema}");
        let db = Db::open(&url).await?;
        Ok(TestDb {
            db,
            url,
            _dir: None,
            schema: Some(schema),
        })
    }

    /// The backend by name: `"sqlite"` or `"postgres"`.
    pub async fn new(backend: &str) -> Result<TestDb, DbError> {
        match backend {
            "sqlite" => TestDb::sqlite().await,
            _ => TestDb::postgres().await,
        }
    }
}
