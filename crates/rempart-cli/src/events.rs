//! `rempart events`: the event store's operator commands.
//!
//! `verify PATH` checks a register's SQLite file, central's store (a
//! `postgres://` URL or a SQLite file) or an archive file, and exits 0 when
//! intact, 65 when altered (naming the first bad record), 64 when PATH is not
//! a store or an option is wrong, 1 when a database cannot be reached.

use std::collections::HashMap;

use clap::Subcommand;
use rempart_db::{DbError, with_pool};
use rempart_events::chain::unhex;
use rempart_events::verify::{Anchor, Report, VerifyError, VerifyOptions, open_for_verify, verify};

use crate::saga::runtime;

#[path = "events_close.rs"]
mod close;
use crate::{EXIT_FAILURE, EXIT_USAGE};
use close::PeriodKind;

/// Exit code when a store was altered (sysexits' `EX_DATAERR`).
pub(crate) const EXIT_ALTERED: u8 = 65;

/// The `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Check a store or archive for tampering (NF 525): the hash chain, the
    /// signatures, the journal, closures and archive manifests.
    ///
    /// Exits 0 intact, 65 altered (naming the first bad record: stream,
    /// position, what is wrong), 64 when PATH is not a store.
    Verify {
        /// A register's SQLite file, an archive file, or central's store
        /// (a SQLite file or a postgres:// URL).
        #[arg(value_name = "PATH")]
        path: String,
        /// Central's store: the chain heads it acknowledged for each register
        /// must be reached, so a tail cut after the last closure shows.
        #[arg(long, value_name = "PATH")]
        central: Option<String>,
        /// Central's copy of the registers' public keys: lines
        /// `REGISTER_ID HEX_PUBLIC_KEY`; these are trusted instead of the file's.
        #[arg(long, value_name = "FILE")]
        keys: Option<std::path::PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record a closure (NF 525 clôture) in a register's store: the period's
    /// totals per VAT rate and the perpetual grand total, chained and
    /// signed with the register's key, and journaled.
    ///
    /// A day is closed once, in order; a month from its days, a year from
    /// its months, once their last day has come. Exits 64 when the request
    /// is refused (saying what to close first), 1 when the database cannot
    /// be reached.
    Close {
        /// The register's store: sqlite://PATH (or a postgres:// URL).
        #[arg(long, value_name = "URL")]
        database: String,
        /// What to close.
        #[arg(long, value_enum)]
        period: PeriodKind,
        /// A day YYYY-MM-DD (a month: YYYY-MM, a year: YYYY, or any day in
        /// it); default today (UTC).
        #[arg(long, value_name = "DATE")]
        date: Option<String>,
        /// The register; default the one whose key the store records.
        #[arg(long, value_name = "ID")]
        register: Option<String>,
        /// The register's secret key file; default PATH with extension `.key`.
        #[arg(long, value_name = "FILE")]
        key: Option<std::path::PathBuf>,
        /// Print the closure as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the archive of a period (NF 525 archivage): one SQLite file
    /// holding the period's events as stored, the journal, the public keys
    /// and a manifest signed with the register's key. `rempart events
    /// verify FILE` checks it.
    Archive {
        /// The register's store: sqlite://PATH (or a postgres:// URL).
        #[arg(long, value_name = "URL")]
        database: String,
        /// The period: a month YYYY-MM, a year YYYY or a day YYYY-MM-DD
        /// (events recorded in it, UTC).
        #[arg(long, value_name = "PERIOD")]
        period: String,
        /// The archive file to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// The register; default the one whose key the store records.
        #[arg(long, value_name = "ID")]
        register: Option<String>,
        /// The register's secret key file; default PATH with extension `.key`.
        #[arg(long, value_name = "FILE")]
        key: Option<std::path::PathBuf>,
    },
    /// Bring the revenue projection `chiffre_affaires` (date, store, HT,
    /// TVA, tickets) up to date from the store, and print it with how far
    /// behind it was. Its checkpoint is committed with its rows, so running
    /// it twice, or after a crash, counts nothing twice.
    Revenue {
        /// The store: sqlite://PATH or a postgres:// URL (the table is kept there).
        #[arg(long, value_name = "URL")]
        database: String,
        /// Recompute from the first event instead (same rows).
        #[arg(long)]
        rebuild: bool,
        /// Print as JSON (amounts in cents).
        #[arg(long)]
        json: bool,
    },
    /// Run central's sync API: registers push their events and pull their
    /// shop's (see `events_serve.rs` for the routes). Runs until Ctrl-C or
    /// SIGTERM; exits 64 on a bad option, 1 when the store or the address
    /// is unavailable.
    Serve {
        /// Central's store: `postgres://…` or `sqlite://PATH`.
        #[arg(long, value_name = "URL")]
        database: String,
        /// The address to listen on, e.g. 127.0.0.1:7878.
        #[arg(long, value_name = "ADDR")]
        listen: String,
    },
}

type Failure = (u8, String);

fn verify_failure(e: VerifyError) -> Failure {
    match e {
        VerifyError::NotAStore { .. } => (EXIT_USAGE, e.to_string()),
        VerifyError::Db(e) => db_failure(e),
        e => (EXIT_FAILURE, e.to_string()),
    }
}

fn db_failure(e: DbError) -> Failure {
    (
        if e.is_usage() {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        },
        e.to_string(),
    )
}

/// Runs an `events` subcommand; returns the exit code.
pub(crate) fn run(cmd: EventsCommand) -> u8 {
    let runtime = match runtime(1) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run_async(cmd)) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

fn read_keys(path: &std::path::Path) -> Result<HashMap<String, Vec<[u8; 32]>>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| (EXIT_USAGE, format!("--keys {}: {e}", path.display())))?;
    let mut keys: HashMap<String, Vec<[u8; 32]>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            (
                EXIT_USAGE,
                format!(
                    "--keys {} line {}: expected `REGISTER_ID HEX_PUBLIC_KEY` (64 hex characters)",
                    path.display(),
                    n + 1
                ),
            )
        };
        let (register, key) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let key: [u8; 32] = unhex(key.trim())
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        keys.entry(register.to_owned()).or_default().push(key);
    }
    Ok(keys)
}

/// Central's head for every register: what it acknowledged.
async fn central_anchors(path: &str) -> Result<Vec<Anchor>, Failure> {
    let db = open_for_verify(path).await.map_err(verify_failure)?;
    let err = |e| db_failure(db.error(e));
    let heads: Vec<(String, i64, Vec<u8>)> = with_pool!(db, pool => {
        sqlx::query_as(
            "SELECT e.register_id, e.chain_seq, e.chain_hash FROM events e
             JOIN (SELECT register_id, MAX(chain_seq) AS seq FROM events GROUP BY register_id) h
               ON h.register_id = e.register_id AND h.seq = e.chain_seq",
        )
        .fetch_all(pool)
        .await
        .map_err(err)?
    });
    db.close().await;
    Ok(heads
        .into_iter()
        .filter_map(|(register_id, seq, hash)| {
            Some(Anchor {
                register_id,
                chain_seq: seq as u64,
                chain_hash: hash.try_into().ok()?,
                source: format!("central ({path})"),
            })
        })
        .collect())
}

fn print_report(path: &str, report: &Report, json: bool) {
    if json {
        let mut v = serde_json::to_value(report).unwrap_or_default();
        v["intact"] = serde_json::Value::Bool(report.intact());
        v["path"] = serde_json::Value::String(path.to_owned());
        println!("{v}");
        return;
    }
    let what = if report.archive { "archive" } else { "store" };
    let counts = format!(
        "{} events, {} register chain(s), {} signatures, {} journal records",
        report.events, report.registers, report.signatures, report.journal_records
    );
    match report.findings.first() {
        None => println!("{path}: intact {what}: {counts}"),
        Some(f) => {
            println!("{path}: ALTERED {what}");
            println!(
                "first bad record: stream {} position {}{}",
                f.stream.as_deref().unwrap_or("-"),
                f.position.map_or("-".to_owned(), |p| p.to_string()),
                match (&f.register_id, f.chain_seq) {
                    (Some(r), Some(s)) => format!(" (register {r}, chain seq {s})"),
                    _ => String::new(),
                }
            );
            println!("what is wrong: {:?}: {}", f.damage, f.detail);
            for other in &report.findings[1..] {
                println!("also: {other}");
            }
            println!("read before the first bad record: {counts}");
        }
    }
}

async fn run_async(cmd: EventsCommand) -> Result<u8, Failure> {
    match cmd {
        EventsCommand::Serve { database, listen } => {
            Ok(crate::events_serve::serve(&database, &listen).await)
        }
        EventsCommand::Verify {
            path,
            central,
            keys,
            json,
        } => {
            let mut opts = VerifyOptions::default();
            if let Some(k) = keys {
                opts.trusted_keys = read_keys(&k)?;
            }
            if let Some(c) = central {
                opts.anchors = central_anchors(&c).await?;
            }
            let db = open_for_verify(&path).await.map_err(verify_failure)?;
            let report = verify(&db, &opts).await.map_err(verify_failure)?;
            db.close().await;
            print_report(&path, &report, json);
            Ok(if report.intact() { 0 } else { EXIT_ALTERED })
        }
        EventsCommand::Close {
            database,
            period,
            date,
            register,
            key,
            json,
        } => close::close(&database, period, date.as_deref(), register, key, json).await,
        EventsCommand::Archive {
            database,
            period,
            out,
            register,
            key,
        } => close::archive(&database, &period, &out, register, key).await,
        EventsCommand::Revenue {
            database,
            rebuild,
            json,
        } => close::revenue(&database, rebuild, json).await,
    }
}
