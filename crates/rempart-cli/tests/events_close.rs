//! `rempart events close` and `rempart events archive`, run as a user
//! would: closures in order with the grand total carried on, an archive
//! that `verify` accepts and refuses once a byte changed, and the exit
//! codes for bad input (64) and an unreachable database (1).

use std::path::{Path, PathBuf};
use std::process::Command;

use rempart_events::calendar::bounds_ms;
use rempart_events::closure::Period;
use rempart_events::envelope::encode;
use rempart_events::money::{Cents, VatRate, ticket_totals};
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, Direction, EventStore, ExpectedVersion, NewEvent};
use rempart_events::ticket::{
    ArticleAdded, BusinessDate, TicketClosed, TicketEvent, TicketMeta, TicketOpened,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");
const REGISTER: &str = "caisse-01";

/// The register's store and its key file beside it, with one ticket per
/// `(day, lines)`, each recorded at noon UTC of its day.
async fn register(dir: &Path, sales: &[(&str, &[(VatRate, i64)])]) -> (EventStore, String) {
    let path = dir.join(format!("{REGISTER}.sqlite"));
    let key = RegisterKey::load_or_create(&dir.join(format!("{REGISTER}.key")), REGISTER).unwrap();
    let url = format!("sqlite://{}", path.display());
    let store = EventStore::open(&url)
        .await
        .unwrap()
        .with_key(key)
        .await
        .unwrap();
    sell(&store, sales).await;
    (store, url)
}

/// Records one ticket per `(day, lines)`, each at noon UTC of its day.
async fn sell(store: &EventStore, sales: &[(&str, &[(VatRate, i64)])]) {
    for (n, (day, lines)) in sales.iter().enumerate() {
        let date: BusinessDate = day.parse().unwrap();
        let meta = TicketMeta {
            store_id: "magasin-lyon-3".into(),
            register_id: REGISTER.into(),
            business_date: date,
        };
        let mut events = vec![TicketEvent::Opened(TicketOpened {
            ticket_id: format!("t-{n}").as_str().into(),
            cashier_id: "c-1".into(),
            register_id: REGISTER.into(),
            training: false,
        })];
        let mut amounts = Vec::new();
        for (i, (rate, cents)) in lines.iter().enumerate() {
            events.push(TicketEvent::ArticleAdded(ArticleAdded {
                code_ean: format!("ean-{i}"),
                label: format!("article-{n}-{i}-unique"),
                quantity: 1,
                unit_price: Cents::new(*cents),
                vat_rate: *rate,
            }));
            amounts.push((*rate, Cents::new(*cents)));
        }
        let totals = ticket_totals(&amounts, &[]).unwrap();
        events.push(TicketEvent::Closed(
            TicketClosed::from_totals(totals, format!("{n:04}"), false).unwrap(),
        ));
        let noon = bounds_ms(Period::Day { date }).0 + 12 * 3_600_000;
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| {
                let mut ne = NewEvent {
                    recorded_at: Some(noon),
                    ..encode(&meta, e)
                };
                if matches!(e, TicketEvent::Closed(_)) {
                    ne = ne.signed(Checkpoint::Ticket);
                }
                ne
            })
            .collect();
        store
            .append(&format!("ticket-{n}"), ExpectedVersion::NoStream, new)
            .await
            .unwrap();
    }
}

/// Exit code, stdout, stderr.
type Run = (Option<i32>, String, String);

fn rempart(args: &[&str]) -> Run {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn close(url: &str, period: &str, date: &str) -> Run {
    rempart(&[
        "events",
        "close",
        "--database",
        url,
        "--period",
        period,
        "--date",
        date,
        "--json",
    ])
}

/// Closes and returns the closure's JSON, or panics with the output.
fn closed(url: &str, period: &str, date: &str) -> Value {
    let (code, out, err) = close(url, period, date);
    assert_eq!(code, Some(0), "close {period} {date}: {out}{err}");
    serde_json::from_str(&out).unwrap()
}

const NOV_29: &[(VatRate, i64)] = &[(VatRate::NORMAL, 10_00), (VatRate::REDUCED, 5_00)];
const NOV_30: &[(VatRate, i64)] = &[(VatRate::NORMAL, 20_00)];
const DEC_01: &[(VatRate, i64)] = &[(VatRate::INTERMEDIATE, 3_00)];

#[tokio::test]
async fn days_months_and_a_year_close_in_order_and_the_store_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = register(
        dir.path(),
        &[
            ("2025-11-29", NOV_29),
            ("2025-11-30", NOV_30),
            ("2025-12-01", DEC_01),
        ],
    )
    .await;

    let (code, _, err) = close(&url, "day", "2025-11-30");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("close 2025-11-29 first"), "{err}");

    let d29 = closed(&url, "day", "2025-11-29");
    assert_eq!(d29["ventes"]["nombreTickets"], 1);
    assert_eq!(
        (
            d29["grandTotalAvant"].as_i64(),
            d29["grandTotalPerpetuel"].as_i64()
        ),
        (Some(0), Some(15_00))
    );
    let (code, _, err) = close(&url, "day", "2025-11-29");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("closed already"), "{err}");

    let d30 = closed(&url, "day", "2025-11-30");
    assert_eq!(d30["grandTotalPerpetuel"], 35_00);
    let nov = closed(&url, "month", "2025-11");
    assert_eq!(nov["periode"], "MOIS");
    assert_eq!(nov["ventes"]["nombreTickets"], 2);
    assert_eq!(
        (
            nov["grandTotalAvant"].as_i64(),
            nov["grandTotalPerpetuel"].as_i64()
        ),
        (Some(0), Some(35_00))
    );
    // Per rate, the month is its days added up: 30.00 € at 20 % is 5.00 € of VAT.
    let normal = nov["ventes"]["ventilationTva"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["taux"] == 2000)
        .unwrap()
        .clone();
    assert_eq!(
        (normal["ttc"].as_i64(), normal["tva"].as_i64()),
        (Some(30_00), Some(5_00))
    );

    for (period, date) in [("month", "2025-12"), ("year", "2025")] {
        let (code, _, err) = close(&url, period, date);
        assert_eq!(code, Some(64), "{err}");
        assert!(err.contains("first"), "{period}: {err}");
    }
    closed(&url, "day", "2025-12-01");
    closed(&url, "month", "2025-12-31");
    let year = closed(&url, "year", "2025");
    assert_eq!(year["ventes"]["nombreTickets"], 3);
    assert_eq!(year["grandTotalPerpetuel"], 38_00);

    for (period, date, why) in [
        ("day", "2099-01-01", "future"),
        ("year", "2099", "not over"),
    ] {
        let (code, _, err) = close(&url, period, date);
        assert_eq!(code, Some(64), "{err}");
        assert!(err.contains(why), "{err}");
    }

    // Six closures, each signed, in the register's closure stream.
    let kinds: Vec<(String, bool)> = store
        .read_stream(&format!("cloture-{REGISTER}"), 1, Direction::Forward, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, e.signature.is_some()))
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert!(kinds.iter().all(|(_, signed)| *signed));
    assert_eq!(kinds[5].0, "CLOTURE_ANNEE");
    let path = url.strip_prefix("sqlite://").unwrap();
    let (code, out, err) = rempart(&["events", "verify", path]);
    assert_eq!(code, Some(0), "{out}{err}");
}

/// The position of `needle` in `bytes`.
fn find(bytes: &[u8], needle: &[u8]) -> Option<usize> {
    bytes.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn an_archive_verifies_and_a_changed_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, url) = register(
        dir.path(),
        &[
            ("2025-11-29", NOV_29),
            ("2025-11-30", NOV_30),
            ("2025-12-01", DEC_01),
        ],
    )
    .await;
    closed(&url, "day", "2025-11-29");
    let out: PathBuf = dir.path().join("archive-2025-11.sqlite");
    let out_s = out.display().to_string();
    let (code, stdout, err) = rempart(&[
        "events",
        "archive",
        "--database",
        &url,
        "--period",
        "2025-11",
        "--out",
        &out_s,
    ]);
    assert_eq!(code, Some(0), "{stdout}{err}");
    // Two tickets were recorded in November: 4 and 3 events.
    assert!(
        stdout.contains("archived 2025-11") && stdout.contains(": 7 event(s)"),
        "{stdout}"
    );

    let (code, stdout, err) = rempart(&["events", "verify", &out_s]);
    assert_eq!(code, Some(0), "{stdout}{err}");
    assert!(stdout.contains("intact archive: 7 events"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        find(&bytes, b"article-2-0-unique").is_none(),
        "December's ticket is not in November's archive"
    );

    // One byte of an article's label, in a copy.
    let mut bytes = bytes;
    let at = find(&bytes, b"article-1-0-unique").expect("the label is stored as text");
    bytes[at + 8] = b'9';
    let tampered = dir.path().join("tampered.sqlite");
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, stdout, err) = rempart(&["events", "verify", &tampered.display().to_string()]);
    assert_eq!(code, Some(65), "{stdout}{err}");
    assert!(
        stdout.contains("ALTERED archive") && stdout.contains("stream ticket-1"),
        "{stdout}"
    );

    let (code, _, err) = rempart(&[
        "events",
        "archive",
        "--database",
        &url,
        "--period",
        "2025-11",
        "--out",
        &out_s,
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("exists"), "{err}");
}

#[tokio::test]
async fn bad_periods_paths_keys_and_databases_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, url) = register(dir.path(), &[("2025-11-29", NOV_29)]).await;
    let out = dir.path().join("a.sqlite").display().to_string();
    let archive = |db: &str, period: &str, out: &str| {
        rempart(&[
            "events",
            "archive",
            "--database",
            db,
            "--period",
            period,
            "--out",
            out,
        ])
    };
    let cases: Vec<(&str, Run, &str)> = vec![
        ("month 13", archive(&url, "2025-13", &out), "2025-13"),
        (
            "no such day",
            close(&url, "day", "2025-02-30"),
            "2025-02-30",
        ),
        (
            "no directory",
            archive(&url, "2025-11", "/nonexistent-rempart/a.sqlite"),
            "does not exist",
        ),
        (
            "no store file",
            close(
                &format!("sqlite://{}/missing.sqlite", dir.path().display()),
                "day",
                "2025-11-29",
            ),
            "no such file",
        ),
        (
            "nothing recorded",
            archive(&url, "2024-11", &out),
            "no events recorded in period 2024-11",
        ),
    ];
    for (what, (code, stdout, err), named) in cases {
        assert_eq!(code, Some(64), "{what}: {stdout}{err}");
        assert!(err.contains(named), "{what}: {err}");
    }

    // Another register's key, then no key at all.
    let key = dir.path().join(format!("{REGISTER}.key"));
    std::fs::rename(&key, dir.path().join("saved.key")).unwrap();
    RegisterKey::load_or_create(&key, REGISTER).unwrap();
    let (code, _, err) = close(&url, "day", "2025-11-29");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("is not register caisse-01's key"), "{err}");
    std::fs::remove_file(&key).unwrap();
    let (code, _, err) = close(&url, "day", "2025-11-29");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("no key file"), "{err}");

    // A database that is not an event store, and one that cannot be reached.
    let other = dir.path().join("other.sqlite");
    rempart_db::Db::open(&format!("sqlite://{}", other.display()))
        .await
        .unwrap()
        .close()
        .await;
    let (code, _, err) = close(
        &format!("sqlite://{}", other.display()),
        "day",
        "2025-11-29",
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("not a rempart event store"), "{err}");
    let unreachable = "postgres://rempart@127.0.0.1:1/test";
    for (code, _, err) in [
        close(unreachable, "day", "2025-11-29"),
        archive(unreachable, "2025-11", &out),
    ] {
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("127.0.0.1:1"), "{err}");
    }
}

#[tokio::test]
async fn a_postgres_store_closes_with_the_key_given() {
    let t = rempart_db::test_support::TestDb::new("postgres")
        .await
        .unwrap();
    t.db.migrate(&rempart_events::schema::EVENTS_SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k.key");
    let key = RegisterKey::load_or_create(&key_file, REGISTER).unwrap();
    let store = EventStore::new(t.db.clone()).with_key(key).await.unwrap();
    sell(&store, &[("2025-11-29", NOV_29)]).await;

    let args = [
        "events",
        "close",
        "--database",
        &t.url,
        "--period",
        "day",
        "--date",
        "2025-11-29",
        "--json",
    ];
    let (code, _, err) = rempart(&args);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("pass --key FILE"), "{err}");
    let key_arg = key_file.display().to_string();
    let (code, out, err) = rempart(&[&args[..], &["--key", &key_arg]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    let closure: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(closure["grandTotalPerpetuel"], 15_00);
    let (code, out, err) = rempart(&["events", "verify", &t.url]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[tokio::test]
async fn revenue_counts_each_ticket_once_however_often_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, url) = register(
        dir.path(),
        &[
            ("2025-11-29", NOV_29),
            ("2025-11-29", NOV_30),
            ("2025-12-01", DEC_01),
        ],
    )
    .await;
    let run = |extra: &[&str]| {
        let (code, out, err) = rempart(
            &[
                &["events", "revenue", "--database", &url, "--json"][..],
                extra,
            ]
            .concat(),
        );
        assert_eq!(code, Some(0), "{out}{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let first = run(&[]);
    assert_eq!(first["lag_before"]["behind"], first["lag_before"]["head"]);
    assert_eq!(first["lag_after"]["behind"], 0);
    let rows = first["rows"].clone();
    // 15.00 € + 20.00 € on the 29th, 3.00 € on December 1st, TTC.
    let nov = &rows[0];
    assert_eq!(
        (nov["date"].as_str(), nov["ticket_count"].as_u64()),
        (Some("2025-11-29"), Some(2))
    );
    assert_eq!(
        nov["total_ht"].as_i64().unwrap() + nov["total_tva"].as_i64().unwrap(),
        35_00
    );
    assert_eq!(
        rows[1]["total_ht"].as_i64().unwrap() + rows[1]["total_tva"].as_i64().unwrap(),
        3_00
    );
    assert_eq!(run(&[])["rows"], rows, "a second run counts nothing twice");
    let rebuilt = run(&["--rebuild"]);
    assert_eq!(rebuilt["rows"], rows);
    assert_eq!(rebuilt["applied"], first["applied"]);
}
