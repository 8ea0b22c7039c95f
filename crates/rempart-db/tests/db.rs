//! The database layer against the real PostgreSQL and SQLite files.

use std::time::Duration;

use rempart_db::test_support::TestDb;
use rempart_db::{Component, Db, DbError, Migration, OpenOptions};

const V1: Migration = Migration {
    version: 1,
    name: "widgets",
    sqlite: "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    postgres: "CREATE TABLE widgets (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);",
};
const V2: Migration = Migration {
    version: 2,
    name: "widget colour",
    sqlite: "ALTER TABLE widgets ADD COLUMN colour TEXT; CREATE INDEX widgets_colour ON widgets (colour);",
    postgres: "ALTER TABLE widgets ADD COLUMN colour TEXT; CREATE INDEX widgets_colour ON widgets (colour);",
};
const BROKEN: Migration = Migration {
    version: 2,
    name: "broken",
    sqlite: "ALTER TABLE widgets ADD COLUMN size INTEGER; THIS IS NOT SQL;",
    postgres: "ALTER TABLE widgets ADD COLUMN size INTEGER; THIS IS NOT SQL;",
};
const WIDGETS_V1: Component = Component {
    name: "widgets",
    migrations: &[V1],
};
const WIDGETS_V2: Component = Component {
    name: "widgets",
    migrations: &[V1, V2],
};

async fn column_exists(db: &Db, column: &str) -> bool {
    let q = format!("SELECT {column} FROM widgets LIMIT 1");
    rempart_db::with_pool!(db, p => sqlx::query(&q).fetch_optional(p).await.is_ok())
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name("postgres").await } )* }
    };
}

both_backends!(
    migrations_apply_once_and_in_order,
    a_schema_newer_than_the_binary_is_refused,
    a_failed_migration_leaves_the_old_schema,
    components_keep_their_own_versions,
);

async fn migrations_apply_once_and_in_order(backend: &str) {
    let t = TestDb::new(backend).await.unwrap();
    assert_eq!(t.db.migrate(&WIDGETS_V1).await.unwrap(), 1);
    assert_eq!(t.db.migrate(&WIDGETS_V1).await.unwrap(), 0);
    assert!(!column_exists(&t.db, "colour").await);
    assert_eq!(t.db.migrate(&WIDGETS_V2).await.unwrap(), 1);
    assert!(column_exists(&t.db, "colour").await);
    assert_eq!(t.db.schema_version("widgets").await.unwrap(), 2);
}

async fn a_schema_newer_than_the_binary_is_refused(backend: &str) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&WIDGETS_V2).await.unwrap();
    let err = t.db.migrate(&WIDGETS_V1).await.unwrap_err();
    assert!(
        matches!(
            err,
            DbError::SchemaTooNew {
                found: 2,
                known: 1,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("widgets schema") && msg.contains("newer"),
        "{msg}"
    );
}

async fn a_failed_migration_leaves_the_old_schema(backend: &str) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&WIDGETS_V1).await.unwrap();
    let broken = Component {
        name: "widgets",
        migrations: &[V1, BROKEN],
    };
    let err = t.db.migrate(&broken).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("migration widgets v2 (broken) failed"),
        "{err}"
    );
    assert_eq!(t.db.schema_version("widgets").await.unwrap(), 1);
    assert!(
        !column_exists(&t.db, "size").await,
        "the half-applied migration was rolled back"
    );
}

async fn components_keep_their_own_versions(backend: &str) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&WIDGETS_V2).await.unwrap();
    let other = Component {
        name: "gadgets",
        migrations: &[Migration {
            version: 1,
            name: "gadgets",
            sqlite: "CREATE TABLE gadgets (id INTEGER PRIMARY KEY);",
            postgres: "CREATE TABLE gadgets (id BIGINT PRIMARY KEY);",
        }],
    };
    // The other component's version 2 is neither "missing" nor "newer" for this one.
    assert_eq!(t.db.migrate(&other).await.unwrap(), 1);
    assert_eq!(t.db.migrate(&WIDGETS_V2).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_starting_together_apply_each_migration_once_on_postgres() {
    let t = TestDb::postgres().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = t.url.clone();
        tasks.push(tokio::spawn(async move {
            let db = Db::open(&url).await.unwrap();
            db.migrate(&WIDGETS_V2).await.unwrap()
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(
        total, 2,
        "each migration ran exactly once across the workers"
    );
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let db = Db::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    let mode: String = rempart_db::with_pool!(db, p => sqlx::query_scalar("PRAGMA journal_mode").fetch_one(p).await.unwrap());
    assert_eq!(mode, "wal");
    let sync: i64 = rempart_db::with_pool!(db, p => sqlx::query_scalar("PRAGMA synchronous").fetch_one(p).await.unwrap());
    assert_eq!(sync, 1, "NORMAL by default");
}

#[tokio::test]
async fn an_unknown_scheme_is_a_usage_error_that_says_what_works() {
    let err = Db::open("mysql://root:hunter2@localhost/x")
        .await
        .unwrap_err();
    assert!(err.is_usage());
    let msg = err.to_string();
    assert!(
        msg.contains("sqlite://PATH") && msg.contains("postgres://"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "the password never shows: {msg}");
}

#[tokio::test]
async fn an_unreachable_server_fails_in_time_and_names_the_url_without_its_password() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/test");
    let opts = OpenOptions {
        connect_timeout: Duration::from_secs(3),
        acquire_timeout: Duration::from_secs(2),
        ..OpenOptions::default()
    };
    let err = Db::open_with(&url, &opts).await.unwrap_err();
    assert!(!err.is_usage());
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}
