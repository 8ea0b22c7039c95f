//! `rempart saga`: operators look at sagas and act on them; the engines run
//! inside the services. Exit 64 for bad input (URL scheme, saga id), 1 when
//! the database cannot be reached (named, never waited on without a deadline).

use clap::Subcommand;
use rempart_db::{Db, DbError};
use rempart_saga::schema::SAGA_SCHEMA;
use rempart_saga::{SagaStore, SqlSagaStore, StoreError};
use uuid::Uuid;

use crate::{EXIT_FAILURE, EXIT_USAGE};

/// The `saga` subcommands.
#[derive(Debug, Subcommand)]
pub enum SagaCommand {
    /// The most recent sagas, newest first.
    List {
        /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`.
        #[arg(long, value_name = "URL")]
        database: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One saga and its steps.
    Show {
        /// The saga's id (a UUID).
        id: String,
        /// `sqlite://PATH` or `postgres://…`.
        #[arg(long, value_name = "URL")]
        database: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Take up a COMPENSATION_FAILED or stuck saga again (once its cause is fixed).
    Resume {
        /// The saga's id.
        id: String,
        /// `sqlite://PATH` or `postgres://…`.
        #[arg(long, value_name = "URL")]
        database: String,
    },
    /// Ask the engines to compensate a running saga (not past its pivot).
    Abort {
        /// The saga's id.
        id: String,
        /// `sqlite://PATH` or `postgres://…`.
        #[arg(long, value_name = "URL")]
        database: String,
    },
}

/// Runs a `saga` subcommand; returns the exit code.
pub(crate) fn run(cmd: SagaCommand) -> u8 {
    let runtime = match runtime(1) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run_async(cmd)) {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

/// A tokio runtime with `threads` workers (1: the current thread), or the
/// exit code after saying why there is none.
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, u8> {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        EXIT_FAILURE
    })
}

type Failure = (u8, String);

pub(crate) fn db_failure(e: DbError) -> Failure {
    let code = if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    };
    (code, e.to_string())
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Db(e) => db_failure(e),
        e @ (StoreError::NotFound(_) | StoreError::WrongStatus { .. }) => {
            (EXIT_USAGE, e.to_string())
        }
        e => (EXIT_FAILURE, e.to_string()),
    }
}

fn parse_id(id: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(id).map_err(|e| {
        (
            EXIT_USAGE,
            format!(
                "{id:?} is not a saga id ({e}); ids are UUIDs such as 67e55044-10b1-426f-9247-bb680e5fe0c8, see `rempart saga list`"
            ),
        )
    })
}

/// An operator's typo must not create an empty database somewhere: a
/// `sqlite://` URL must name an existing file (`whose`: "the engine's").
pub(crate) fn existing_sqlite(url: &str, whose: &str) -> Result<(), Failure> {
    if let Some(path) = url.strip_prefix("sqlite://")
        && !path.is_empty()
        && !std::path::Path::new(path).exists()
    {
        return Err((
            EXIT_USAGE,
            format!("{url}: no such file; give the path of {whose} SQLite database"),
        ));
    }
    Ok(())
}

async fn open(url: &str) -> Result<SqlSagaStore, Failure> {
    existing_sqlite(url, "the engine's")?;
    let db = Db::open(url).await.map_err(db_failure)?;
    db.migrate(&SAGA_SCHEMA).await.map_err(db_failure)?;
    Ok(SqlSagaStore::new(db))
}

async fn run_async(cmd: SagaCommand) -> Result<(), Failure> {
    match cmd {
        SagaCommand::List {
            database,
            json,
            limit,
        } => {
            let store = open(&database).await?;
            let sagas = store.list(limit).await.map_err(store_failure)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&sagas).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<36}  {:<20}  {:<19}  {:<20}  ERROR",
                    "ID", "TYPE", "STATUS", "CURRENT STEP"
                );
                for s in sagas {
                    println!(
                        "{:<36}  {:<20}  {:<19}  {:<20}  {}",
                        s.id,
                        s.saga_type,
                        s.status.as_str(),
                        s.current_step.as_deref().unwrap_or("-"),
                        s.error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        SagaCommand::Show { id, database, json } => {
            let id = parse_id(&id)?;
            let store = open(&database).await?;
            let saga = store.load(id).await.map_err(store_failure)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&saga).unwrap_or_default()
                );
            } else {
                println!("saga     {}", saga.id);
                println!("type     {}", saga.saga_type);
                println!("status   {}", saga.status);
                if let Some(e) = &saga.error {
                    println!("error    {e}");
                }
                if saga.abort_requested {
                    println!("abort    requested");
                }
                println!("payload  {}", saga.payload);
                println!();
                println!(
                    "{:<24}  {:<12}  {:>8}  {:>13}  OUTPUT / LAST ERROR",
                    "STEP", "STATUS", "ATTEMPTS", "COMPENSATIONS"
                );
                for s in &saga.steps {
                    let detail = match (&s.output, &s.last_error) {
                        (Some(o), _) => o.to_string(),
                        (None, Some(e)) => e.clone(),
                        _ => String::new(),
                    };
                    println!(
                        "{:<24}  {:<12}  {:>8}  {:>13}  {detail}",
                        s.name,
                        s.status.as_str(),
                        s.attempts,
                        s.compensation_attempts
                    );
                }
            }
        }
        SagaCommand::Resume { id, database } => {
            let id = parse_id(&id)?;
            let store = open(&database).await?;
            let status = store.resume(id).await.map_err(store_failure)?;
            println!("saga {id}: {status}, due now; a running engine takes it up");
        }
        SagaCommand::Abort { id, database } => {
            let id = parse_id(&id)?;
            let store = open(&database).await?;
            store.abort(id).await.map_err(store_failure)?;
            println!(
                "saga {id}: abort requested; its engine compensates it (unless past the pivot)"
            );
        }
    }
    Ok(())
}
