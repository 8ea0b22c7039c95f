//! `rempart events verify`: its exit codes and what it names, run as a user would.

use std::process::Command;

use rempart_db::with_pool;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

async fn register_file(dir: &std::path::Path) -> (EventStore, String) {
    let path = dir.join("r1.sqlite");
    let s = EventStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
        .with_key(RegisterKey::from_secret("r1", [3; 32]))
        .await
        .unwrap();
    for i in 0..3 {
        let m = || Metadata::new("s1", "r1");
        let events = vec![
            NewEvent::new("TICKET_OUVERT", json!({"i": i}), m()),
            NewEvent::new("ARTICLE_AJOUTE", json!({"ean": "123", "cents": 250}), m()),
            NewEvent::new("TICKET_CLOS", json!({}), m()).signed(Checkpoint::Ticket),
        ];
        s.append(&format!("ticket-{i}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    (s, path.display().to_string())
}

fn verify(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["events", "verify"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_intact_store_exits_0_and_an_altered_one_65_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = register_file(dir.path()).await;
    let (code, out, err) = verify(&[&path]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("intact store: 9 events"), "{out}");

    for sql in [
        "DROP TRIGGER events_no_update",
        r#"UPDATE events SET payload = '{"ean":"123","cents":25}' WHERE global_position = 5"#,
    ] {
        with_pool!(s.db(), p => { sqlx::query(sql).execute(p).await.unwrap(); });
    }
    s.db().close().await;
    let (code, out, err) = verify(&[&path]);
    assert_eq!(code, Some(65), "{out}{err}");
    assert!(
        out.contains("first bad record: stream ticket-1 position 5"),
        "{out}"
    );

    let (code, out, _) = verify(&[&path, "--json"]);
    assert_eq!(code, Some(65));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["intact"], false);
    assert_eq!(v["findings"][0]["position"], 5);
    assert_eq!(v["findings"][0]["stream"], "ticket-1");
    assert_eq!(v["findings"][0]["damage"], "altered");
}

#[tokio::test]
async fn central_keys_are_trusted_over_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = register_file(dir.path()).await;
    s.db().close().await;
    let keys = dir.path().join("keys.txt");
    let good = rempart_events::chain::hex(&RegisterKey::from_secret("r1", [3; 32]).public_key());
    std::fs::write(&keys, format!("# central's keys\nr1 {good}\n")).unwrap();
    let (code, out, err) = verify(&[&path, "--keys", keys.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let other = rempart_events::chain::hex(&RegisterKey::from_secret("r1", [4; 32]).public_key());
    std::fs::write(&keys, format!("r1 {other}\n")).unwrap();
    let (code, out, _) = verify(&[&path, "--keys", keys.to_str().unwrap()]);
    assert_eq!(
        code,
        Some(65),
        "signatures by a key central does not know: {out}"
    );
    std::fs::write(&keys, "r1 nothex\n").unwrap();
    let (code, _, err) = verify(&[&path, "--keys", keys.to_str().unwrap()]);
    assert_eq!(code, Some(64));
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn a_path_that_is_not_a_store_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    for p in [
        text.to_str().unwrap(),
        "/nonexistent/r1.sqlite",
        dir.path().to_str().unwrap(),
    ] {
        let (code, out, err) = verify(&[p]);
        assert_eq!(code, Some(64), "{p}: {out}{err}");
        assert!(err.contains("not a rempart event store"), "{err}");
    }
    // A SQLite file of something else.
    let other = dir.path().join("other.sqlite");
    let c = Command::new("sqlite3")
        .arg(&other)
        .arg("CREATE TABLE t(x);")
        .status();
    if c.is_ok_and(|s| s.success()) {
        let (code, _, err) = verify(&[other.to_str().unwrap()]);
        assert_eq!(code, Some(64), "{err}");
    }
    assert!(
        !std::path::Path::new("/nonexistent/r1.sqlite").exists(),
        "verify creates nothing"
    );
}
