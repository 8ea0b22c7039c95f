//! `rempart events close` and `rempart events archive`: a register's
//! closures and archives (NF 525), written into its own store and signed
//! with its key.
//!
//! The key: `--key FILE`, or beside a SQLite store the file of the same
//! name with the extension `.key` (`caisse-01.sqlite` → `caisse-01.key`).
//! It is never created here: a new key would not match the one the store
//! and central recorded, and every signature made with it would fail
//! `verify`.

use std::path::{Path, PathBuf};

use rempart_db::{Db, with_pool};
use rempart_events::calendar::{bounds_ms, date_at, label, parse_period};
use rempart_events::closing::CloseError;
use rempart_events::closure::Period;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{EventStore, StoreError};
use rempart_events::ticket::BusinessDate;

use super::{EXIT_ALTERED, Failure, db_failure};
use crate::{EXIT_FAILURE, EXIT_USAGE};

/// Which kind of period `close` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeriodKind {
    /// One business day.
    Day,
    /// A calendar month, from its day closures.
    Month,
    /// A year, from its month closures.
    Year,
}

fn usage(msg: String) -> Failure {
    (EXIT_USAGE, msg)
}

fn today() -> BusinessDate {
    use rempart::clock::{Clock, UnixClock};
    let ms = UnixClock::new().now().as_nanos() / 1_000_000;
    date_at(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The period `close --period KIND [--date D]` names; `today` when no date.
pub(crate) fn close_period_of(
    kind: PeriodKind,
    date: Option<&str>,
    today: BusinessDate,
) -> Result<Period, Failure> {
    let given = match date {
        None => Period::Day { date: today },
        Some(d) => parse_period(d).map_err(|e| usage(format!("--date: {e}")))?,
    };
    let day = match given {
        Period::Day { date } => Some(date),
        _ => None,
    };
    Ok(match (kind, given, day) {
        (PeriodKind::Day, _, Some(date)) => Period::Day { date },
        (PeriodKind::Day, _, None) => {
            return Err(usage(format!(
                "--period day needs --date YYYY-MM-DD, not {}",
                label(given)
            )));
        }
        (PeriodKind::Month, Period::Month { .. }, _) => given,
        (PeriodKind::Month, _, Some(d)) => Period::Month {
            year: d.year(),
            month: d.month(),
        },
        (PeriodKind::Year, Period::Year { .. }, _) => given,
        (PeriodKind::Year, Period::Month { year, .. }, _) => Period::Year { year },
        (PeriodKind::Year, _, Some(d)) => Period::Year { year: d.year() },
        (_, _, None) => {
            return Err(usage(format!(
                "--period month needs --date YYYY-MM (or a day of the month), not {}",
                label(given)
            )));
        }
    })
}

fn sqlite_file(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
}

/// Opens an existing event store (never creates one, never migrates a
/// database that is not one).
async fn open_store(url: &str) -> Result<EventStore, Failure> {
    if let Some(file) = sqlite_file(url)
        && !Path::new(file).is_file()
    {
        return Err(usage(format!(
            "--database {url}: no such file; give the register's store (sqlite://PATH) or central's (postgres://…)"
        )));
    }
    let db = Db::open(url).await.map_err(db_failure)?;
    let version: Option<i64> = with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT version FROM rempart_schema_versions WHERE component = 'events'")
            .fetch_optional(pool).await.unwrap_or(None)
    });
    if version.is_none() {
        return Err(usage(format!(
            "--database {}: not a rempart event store (no `events` schema)",
            db.url()
        )));
    }
    Ok(EventStore::new(db))
}

/// `--register`, or the one register whose key the store records, or the
/// one register with events.
async fn which_register(store: &EventStore, given: Option<String>) -> Result<String, Failure> {
    if let Some(r) = given {
        return Ok(r);
    }
    let err = |e| db_failure(store.db().error(e));
    for sql in [
        "SELECT DISTINCT register_id FROM register_keys ORDER BY register_id",
        "SELECT DISTINCT register_id FROM events ORDER BY register_id",
    ] {
        let registers: Vec<String> = with_pool!(store.db(), pool => {
            sqlx::query_scalar(sql).fetch_all(pool).await.map_err(err)?
        });
        match registers.as_slice() {
            [one] => return Ok(one.clone()),
            [] => continue,
            many => {
                return Err(usage(format!(
                    "the store holds several registers ({}): pass --register ID",
                    many.join(", ")
                )));
            }
        }
    }
    Err(usage(
        "the store holds no register yet: pass --register ID".into(),
    ))
}

/// The register's key, checked against the public key the store recorded.
async fn register_key(
    store: &EventStore,
    url: &str,
    register: &str,
    given: Option<PathBuf>,
) -> Result<RegisterKey, Failure> {
    let path = match given {
        Some(p) => p,
        None => match sqlite_file(url) {
            Some(f) => Path::new(f).with_extension("key"),
            None => {
                return Err(usage(format!(
                    "register {register}'s key: pass --key FILE (a PostgreSQL store has no key beside it)"
                )));
            }
        },
    };
    if !path.is_file() {
        return Err(usage(format!(
            "no key file at {}: register {register}'s signing key is needed to sign; pass --key FILE",
            path.display()
        )));
    }
    let key = RegisterKey::load_or_create(&path, register).map_err(|e| usage(e.to_string()))?;
    let err = |e| db_failure(store.db().error(e));
    let recorded: Vec<Vec<u8>> = with_pool!(store.db(), pool => {
        sqlx::query_scalar("SELECT public_key FROM register_keys WHERE register_id = $1")
            .bind(register).fetch_all(pool).await.map_err(err)?
    });
    if !recorded.is_empty() && !recorded.iter().any(|k| k[..] == key.public_key()[..]) {
        return Err(usage(format!(
            "{} is not register {register}'s key: the store recorded another public key; use the register's own key file",
            path.display()
        )));
    }
    Ok(key)
}

fn close_failure(e: CloseError) -> Failure {
    match e {
        CloseError::Refused(r) => usage(format!("nothing recorded: {r}")),
        CloseError::UnknownRegister(_) => usage(e.to_string()),
        CloseError::Store(StoreError::Db(d)) => db_failure(d),
        CloseError::Store(e @ StoreError::WrongExpectedVersion { .. }) => (
            EXIT_FAILURE,
            format!("another close ran at the same time ({e}); run it again"),
        ),
        CloseError::Store(e) => (EXIT_FAILURE, e.to_string()),
        e @ (CloseError::Envelope(_) | CloseError::Corrupt { .. }) => (EXIT_ALTERED, e.to_string()),
        e => (EXIT_FAILURE, e.to_string()),
    }
}

/// `events close`.
pub(crate) async fn close(
    database: &str,
    kind: PeriodKind,
    date: Option<&str>,
    register: Option<String>,
    key: Option<PathBuf>,
    json: bool,
) -> Result<u8, Failure> {
    let today = today();
    let period = close_period_of(kind, date, today)?;
    let store = open_store(database).await?;
    let register = which_register(&store, register).await?;
    let key = register_key(&store, database, &register, key).await?;
    let store = store.with_key(key).await.map_err(|e| match e {
        StoreError::Db(d) => db_failure(d),
        e => (EXIT_FAILURE, e.to_string()),
    })?;
    let (closure, at) = store
        .close_period(&register, period, today)
        .await
        .map_err(close_failure)?;
    store.db().close().await;
    if json {
        let mut v = serde_json::to_value(&closure).unwrap_or_default();
        v["register"] = register.clone().into();
        v["position"] = at.last_position.into();
        println!("{v}");
        return Ok(0);
    }
    let ttc = closure
        .sales
        .ttc()
        .map_err(|e| (EXIT_ALTERED, e.to_string()))?;
    println!(
        "closed {} for register {register}: {} ticket(s), {ttc} € TTC; grand total {} € (was {} €); recorded at position {}, signed",
        label(period),
        closure.sales.ticket_count,
        closure.grand_total,
        closure.grand_total_before,
        at.last_position
    );
    for line in closure.sales.breakdown.lines() {
        println!(
            "  VAT {}: HT {} €, TVA {} €, TTC {} €",
            line.rate, line.ht, line.tva, line.ttc
        );
    }
    if closure.training.ticket_count > 0 {
        println!(
            "  training (not counted): {} ticket(s)",
            closure.training.ticket_count
        );
    }
    Ok(0)
}

/// `events archive`.
pub(crate) async fn archive(
    database: &str,
    period: &str,
    out: &Path,
    register: Option<String>,
    key: Option<PathBuf>,
) -> Result<u8, Failure> {
    let parsed = parse_period(period).map_err(|e| usage(format!("--period: {e}")))?;
    if out.exists() {
        return Err(usage(format!(
            "--out {}: the file exists; an archive is never overwritten, choose another path",
            out.display()
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(usage(format!(
            "--out {}: the directory {} does not exist",
            out.display(),
            parent.display()
        )));
    }
    let store = open_store(database).await?;
    let register = which_register(&store, register).await?;
    let key = register_key(&store, database, &register, key).await?;
    let store = store.with_key(key).await.map_err(|e| match e {
        StoreError::Db(d) => db_failure(d),
        e => (EXIT_FAILURE, e.to_string()),
    })?;
    let (from, to) = bounds_ms(parsed);
    let summary = store
        .archive(&label(parsed), from, to, out)
        .await
        .map_err(|e| match e {
            StoreError::Db(d) => db_failure(d),
            e @ (StoreError::Invalid(_) | StoreError::NoKey { .. }) => usage(e.to_string()),
            e => (EXIT_FAILURE, e.to_string()),
        })?;
    store.db().close().await;
    println!(
        "archived {} to {}: {} event(s), positions {}..={}, register(s) {}; sha256 {}",
        label(parsed),
        out.display(),
        summary.events,
        summary.positions.0,
        summary.positions.1,
        summary.registers.join(", "),
        summary.file_sha256
    );
    println!("check it with: rempart events verify {}", out.display());
    Ok(0)
}

/// `events revenue`: brings `chiffre_affaires` up to date (or rebuilds it
/// from position 1), then prints its rows and how far behind it was.
pub(crate) async fn revenue(database: &str, rebuild: bool, json: bool) -> Result<u8, Failure> {
    use rempart::clock::{Clock, UnixClock};
    use rempart_events::revenue::{ProjectionError, RevenueTable};
    let failure = |e: ProjectionError| match e {
        ProjectionError::Db(d) | ProjectionError::Store(StoreError::Db(d)) => db_failure(d),
        e @ (ProjectionError::Envelope(_) | ProjectionError::Corrupt(_)) => {
            (EXIT_ALTERED, e.to_string())
        }
        e => (EXIT_FAILURE, e.to_string()),
    };
    let store = open_store(database).await?;
    let table = RevenueTable::open(store.db().clone())
        .await
        .map_err(failure)?;
    let now_ms = || i64::try_from(UnixClock::new().now().as_nanos() / 1_000_000).unwrap_or(0);
    let before = table.lag(&store, now_ms()).await.map_err(failure)?;
    let applied = if rebuild {
        table.rebuild(&store).await
    } else {
        table.catch_up(&store).await
    }
    .map_err(failure)?;
    let rows = table.rows().await.map_err(failure)?;
    let after = table.lag(&store, now_ms()).await.map_err(failure)?;
    store.db().close().await;
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "date": r.date.to_string(),
                    "store_id": r.store_id.as_str(),
                    "total_ht": r.revenue.total_ht.get(),
                    "total_tva": r.revenue.total_tva.get(),
                    "ticket_count": r.revenue.ticket_count,
                })
            })
            .collect();
        let v = serde_json::json!({
            "applied": applied,
            "lag_before": before,
            "lag_after": after,
            "rows": rows,
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{} {applied} event(s); was {} position(s) behind the head {}; now at {}",
        if rebuild { "rebuilt from" } else { "applied" },
        before.behind,
        before.head,
        after.checkpoint
    );
    for r in &rows {
        println!(
            "{} {}: HT {} €, TVA {} €, {} ticket(s)",
            r.date, r.store_id, r.revenue.total_ht, r.revenue.total_tva, r.revenue.ticket_count
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_names_the_period_of_each_kind() {
        let today: BusinessDate = "2026-11-29".parse().unwrap();
        let p = |k, d| close_period_of(k, d, today).map(label);
        assert_eq!(p(PeriodKind::Day, None).unwrap(), "2026-11-29");
        assert_eq!(p(PeriodKind::Month, Some("2026-10-03")).unwrap(), "2026-10");
        assert_eq!(p(PeriodKind::Month, Some("2026-10")).unwrap(), "2026-10");
        assert_eq!(p(PeriodKind::Year, Some("2025-10")).unwrap(), "2025");
        assert_eq!(p(PeriodKind::Year, None).unwrap(), "2026");
        assert_eq!(
            p(PeriodKind::Day, Some("2026-10")).unwrap_err().0,
            EXIT_USAGE
        );
        assert_eq!(
            p(PeriodKind::Month, Some("2026")).unwrap_err().0,
            EXIT_USAGE
        );
        assert_eq!(
            p(PeriodKind::Day, Some("2026-02-30")).unwrap_err().0,
            EXIT_USAGE
        );
    }
}
