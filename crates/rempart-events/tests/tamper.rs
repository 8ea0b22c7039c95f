//! Tamper evidence: one test per alteration, on a register's SQLite file
//! whose tamperer dropped the append-only triggers first. Each must be found
//! at the record it touched; the untouched store must pass.

use std::sync::Arc;
use std::time::Duration;

use rempart::clock::ManualClock;
use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use rempart_events::schema::EVENTS_SCHEMA;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent};
use rempart_events::verify::{
    Anchor, Damage, Finding, Report, VerifyOptions, open_for_verify, verify,
};
use serde_json::json;

const KEY: [u8; 32] = [7; 32];

fn ev(kind: &str, n: u32) -> NewEvent {
    let mut e = NewEvent::new(kind, json!({"n": n}), Metadata::new("s1", "r1"));
    e.clock = vec![1, 0, n as u8];
    e
}

/// Four tickets of four events each, the last one signed (positions 4, 8,
/// 12, 16); a day closure at 17; then an open ticket at 18..=20.
async fn register() -> (EventStore, TestDb) {
    let t = TestDb::sqlite().await.unwrap();
    t.db.migrate(&EVENTS_SCHEMA).await.unwrap();
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(1_800_000_000));
    let s = EventStore::new(t.db.clone())
        .with_clock(clock.clone())
        .with_key(RegisterKey::from_secret("r1", KEY))
        .await
        .unwrap();
    for i in 1..=4 {
        let events = vec![
            ev("TICKET_OUVERT", i),
            ev("ARTICLE_AJOUTE", i),
            ev("PAIEMENT_RECU", i),
            ev("TICKET_CLOS", i).signed(Checkpoint::Ticket),
        ];
        s.append(&format!("t-{i}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        clock.advance(Duration::from_secs(3600));
    }
    s.append(
        "closures-r1",
        ExpectedVersion::NoStream,
        vec![ev("CLOTURE_JOUR", 0).signed(Checkpoint::Closure)],
    )
    .await
    .unwrap();
    s.append(
        "t-5",
        ExpectedVersion::NoStream,
        vec![
            ev("TICKET_OUVERT", 5),
            ev("ARTICLE_AJOUTE", 5),
            ev("ARTICLE_AJOUTE", 6),
        ],
    )
    .await
    .unwrap();
    (s, t)
}

/// Runs `sqls` as the tamperer: triggers dropped first, as anyone with the file can.
async fn tamper(s: &EventStore, sqls: &[&str]) {
    let mut all = vec![
        "DROP TRIGGER events_no_update",
        "DROP TRIGGER events_no_delete",
        "DROP TRIGGER technical_events_no_update",
        "DROP TRIGGER technical_events_no_delete",
    ];
    all.extend_from_slice(sqls);
    for sql in all {
        with_pool!(s.db(), p => {
            sqlx::query(sql).execute(p).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }
}

async fn check(s: &EventStore, opts: &VerifyOptions) -> Report {
    verify(s.db(), opts).await.unwrap()
}

fn first(r: &Report) -> &Finding {
    r.findings
        .first()
        .unwrap_or_else(|| panic!("the alteration went unseen: {r:?}"))
}

fn at(r: &Report, damage: Damage, position: u64) {
    let f = first(r);
    assert_eq!((f.damage, f.position), (damage, Some(position)), "{f}");
}

#[tokio::test]
async fn an_untouched_store_passes() {
    let (s, _t) = register().await;
    let r = check(&s, &VerifyOptions::default()).await;
    assert!(r.intact(), "{:?}", r.findings);
    assert_eq!(
        (r.events, r.signatures, r.journal_records, r.registers),
        (20, 5, 1, 1)
    );
}

#[tokio::test]
async fn a_changed_byte_in_any_field_is_found_at_its_record() {
    let fields = [
        ("event_id", "event_id = randomblob(16)"),
        ("stream_id", "stream_id = 't-9'"),
        ("stream_version", "stream_version = stream_version + 10"),
        ("event_type", "event_type = 'ARTICLE_RETIRE'"),
        ("payload", r#"payload = '{"n":3}'"#),
        ("store_id", "store_id = 's9'"),
        ("register_id", "register_id = 'r9'"),
        ("training", "training = 1"),
        ("metadata", r#"metadata = '{"cashier":"eve"}'"#),
        ("clock", "clock = x'010009'"),
        ("recorded_at", "recorded_at = recorded_at + 1"),
        ("checkpoint", "checkpoint = 'ticket'"),
        ("chain_seq", "chain_seq = chain_seq + 100"),
        ("chain_hash", "chain_hash = zeroblob(32)"),
    ];
    for (field, set) in fields {
        let (s, _t) = register().await;
        tamper(
            &s,
            &[&format!(
                "UPDATE events SET {set} WHERE global_position = 6"
            )],
        )
        .await;
        let r = check(&s, &VerifyOptions::default()).await;
        let f = first(&r);
        assert_eq!(f.position, Some(6), "{field}: {f}");
        if !matches!(field, "register_id" | "chain_seq") {
            assert_eq!(f.damage, Damage::Altered, "{field}: {f}");
        }
    }
}

#[tokio::test]
async fn a_deleted_event_is_found_where_it_was() {
    let (s, _t) = register().await;
    tamper(&s, &["DELETE FROM events WHERE global_position = 6"]).await;
    at(
        &check(&s, &VerifyOptions::default()).await,
        Damage::Deleted,
        6,
    );
}

#[tokio::test]
async fn a_deleted_event_whose_hole_was_closed_is_found_where_it_was() {
    let (s, _t) = register().await;
    tamper(&s, &[
        "DELETE FROM events WHERE global_position = 6",
        "UPDATE events SET global_position = global_position + 1000 WHERE global_position > 6",
        "UPDATE events SET global_position = global_position - 1001 WHERE global_position > 1000",
    ])
    .await;
    let r = check(&s, &VerifyOptions::default()).await;
    at(&r, Damage::Deleted, 6);
    assert_eq!(first(&r).chain_seq, Some(7), "{:?}", first(&r));
}

#[tokio::test]
async fn an_inserted_event_is_found_where_it_was_put() {
    let (s, _t) = register().await;
    tamper(&s, &[
        "UPDATE events SET global_position = global_position + 1000, chain_seq = chain_seq + 1000 WHERE global_position >= 6",
        "UPDATE events SET global_position = global_position - 999, chain_seq = chain_seq - 999 WHERE global_position > 1000",
        // A copy of the previous record with another payload, numbered as the next link.
        r#"INSERT INTO events SELECT 6, randomblob(16), 't-fake', 1, event_type, '{"n":42}', store_id, register_id,
             training, metadata, clock, recorded_at, checkpoint, 6, chain_hash, signature FROM events WHERE global_position = 5"#,
    ])
    .await;
    at(
        &check(&s, &VerifyOptions::default()).await,
        Damage::Altered,
        6,
    );
}

#[tokio::test]
async fn two_swapped_events_are_found_at_the_first() {
    let (s, _t) = register().await;
    tamper(
        &s,
        &[
            "UPDATE events SET global_position = 1006 WHERE global_position = 6",
            "UPDATE events SET global_position = 6 WHERE global_position = 7",
            "UPDATE events SET global_position = 7 WHERE global_position = 1006",
        ],
    )
    .await;
    at(
        &check(&s, &VerifyOptions::default()).await,
        Damage::Reordered,
        6,
    );
}

#[tokio::test]
async fn a_replaced_signature_is_found_at_its_checkpoint() {
    let (s, _t) = register().await;
    let forger = RegisterKey::from_secret("r1", [9; 32]);
    let hash: Vec<u8> = with_pool!(s.db(), p => sqlx::query_scalar("SELECT chain_hash FROM events WHERE global_position = 8")
        .fetch_one(p).await.unwrap());
    let forged = forger.sign_checkpoint(8, &hash.try_into().unwrap());
    let sql = format!(
        "UPDATE events SET signature = x'{}' WHERE global_position = 8",
        rempart_events::chain::hex(&forged)
    );
    // The forger also slips their public key into the file.
    let key = format!(
        "INSERT INTO register_keys (register_id, public_key, added_at) VALUES ('r1', x'{}', 99999999999999)",
        rempart_events::chain::hex(&forger.public_key())
    );
    tamper(&s, &[&sql, &key]).await;
    at(
        &check(&s, &VerifyOptions::default()).await,
        Damage::Signature,
        8,
    );
    // Central's copy of the key sees it too.
    let central = VerifyOptions {
        trusted_keys: [(
            "r1".to_owned(),
            vec![RegisterKey::from_secret("r1", KEY).public_key()],
        )]
        .into(),
        ..VerifyOptions::default()
    };
    at(&check(&s, &central).await, Damage::Signature, 8);
}

#[tokio::test]
async fn a_wiped_signature_is_found_at_its_checkpoint() {
    let (s, _t) = register().await;
    tamper(
        &s,
        &["UPDATE events SET signature = NULL WHERE global_position = 12"],
    )
    .await;
    at(
        &check(&s, &VerifyOptions::default()).await,
        Damage::Signature,
        12,
    );
}

#[tokio::test]
async fn a_tail_cut_below_the_last_closure_is_found() {
    let (s, _t) = register().await;
    tamper(&s, &["DELETE FROM events WHERE global_position >= 15"]).await;
    let r = check(&s, &VerifyOptions::default()).await;
    at(&r, Damage::Truncated, 15);
    assert!(first(&r).detail.contains("closure"), "{}", first(&r));
}

#[tokio::test]
async fn a_tail_cut_below_what_central_acknowledged_is_found() {
    let (s, _t) = register().await;
    let head = s.read_all(20, 1).await.unwrap().remove(0);
    let central = VerifyOptions {
        anchors: vec![Anchor {
            register_id: "r1".into(),
            chain_seq: head.chain_seq,
            chain_hash: head.chain_hash,
            source: "central".into(),
        }],
        ..VerifyOptions::default()
    };
    assert!(check(&s, &central).await.intact());
    tamper(&s, &["DELETE FROM events WHERE global_position >= 19"]).await;
    // Above the last closure, the file alone cannot tell a cut from a quiet till;
    // central's acknowledged head can.
    assert!(check(&s, &VerifyOptions::default()).await.intact());
    at(&check(&s, &central).await, Damage::Truncated, 19);
}

#[tokio::test]
async fn an_altered_journal_is_found() {
    let (s, _t) = register().await;
    tamper(&s, &[r#"UPDATE technical_events SET detail = replace(detail, '"chain_seq":17', '"chain_seq":16')"#]).await;
    let r = check(&s, &VerifyOptions::default()).await;
    let f = r
        .findings
        .iter()
        .find(|f| f.damage == Damage::Journal)
        .unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(f.position, Some(1), "{f}");
}

#[tokio::test]
async fn an_archive_verifies_on_its_own_and_shows_changes() {
    let (s, _t) = register().await;
    let events = s.read_all(1, 100).await.unwrap();
    // Tickets 2 to 4 (positions 5..=16): a piece of chain starting mid-way.
    let (from, to) = (events[4].recorded_at, events[16].recorded_at);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("2026-11.archive");
    let summary = s.archive("2026-11", from, to, &out).await.unwrap();
    assert_eq!((summary.events, summary.positions), (12, (5, 16)));
    let path = out.to_str().unwrap();
    let db = open_for_verify(path).await.unwrap();
    let r = verify(&db, &VerifyOptions::default()).await.unwrap();
    assert!(r.intact() && r.archive, "{r:?}");
    db.close().await;
    assert!(
        s.archive("2026-11", from, to, &out).await.is_err(),
        "never overwritten"
    );
    let jet = s.read_journal().await.unwrap();
    assert_eq!(
        jet.last().unwrap().detail["file_sha256"],
        summary.file_sha256
    );

    // A changed byte in the archive, and a dropped last record.
    let rw = rempart_db::Db::open(&format!("sqlite://{path}"))
        .await
        .unwrap();
    for sql in [
        "DROP TRIGGER events_no_update",
        "DROP TRIGGER events_no_delete",
        r#"UPDATE events SET payload = '{"n":9}' WHERE global_position = 10"#,
    ] {
        with_pool!(rw, p => { sqlx::query(sql).execute(p).await.unwrap(); });
    }
    let r = verify(&rw, &VerifyOptions::default()).await.unwrap();
    at(&r, Damage::Altered, 10);
    with_pool!(rw, p => {
        sqlx::query(r#"UPDATE events SET payload = '{"n":3}' WHERE global_position = 10"#).execute(p).await.unwrap();
        sqlx::query("DELETE FROM events WHERE global_position = 16").execute(p).await.unwrap();
    });
    let r = verify(&rw, &VerifyOptions::default()).await.unwrap();
    at(&r, Damage::Truncated, 16);
    assert!(first(&r).detail.contains("manifest"), "{}", first(&r));
}
