//! Torn writes: a process appending batches is killed with SIGKILL at random
//! points, again and again, on SQLite and on PostgreSQL. Every batch must be
//! all there or not there, positions stay gapless, the chain still verifies,
//! and the next append continues it.
//!
//! The appender is this test binary itself, re-run on `child_appender` with
//! `REMPART_EVENTS_TORN_CHILD` set. 15 kills per backend here; more with
//! `REMPART_EVENTS_KILLS=200 cargo test -p rempart-events --test torn_write`.

use std::collections::HashMap;
use std::time::Duration;

use rempart::rng::{Rng, SplitMix64};
use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use rempart_events::schema::EVENTS_SCHEMA;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{
    Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend,
};
use rempart_events::verify::{VerifyOptions, verify};
use serde_json::json;

const CHILD: &str = "REMPART_EVENTS_TORN_CHILD";
const KEY: [u8; 32] = [5; 32];

fn batch(n: u64) -> Vec<StreamAppend> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let part = |side: &str| StreamAppend {
        stream_id: format!("{side}-{id}"),
        expected: ExpectedVersion::NoStream,
        events: (0..50)
            .map(|i| {
                let e = NewEvent::new(
                    "ARTICLE_AJOUTE",
                    json!({"batch": n, "i": i}),
                    Metadata::new("s1", "r1"),
                );
                match (side, i) {
                    ("b", 49) if n % 10 == 9 => e.signed(Checkpoint::Closure),
                    ("b", 49) => e.signed(Checkpoint::Ticket),
                    _ => e,
                }
            })
            .collect(),
    };
    vec![part("a"), part("b")]
}

/// The child: appends 100-event batches over two streams until killed.
#[tokio::test]
async fn child_appender() {
    let Ok(url) = std::env::var(CHILD) else {
        return;
    };
    let store = EventStore::open(&url)
        .await
        .unwrap()
        .with_key(RegisterKey::from_secret("r1", KEY))
        .await
        .unwrap();
    for n in 0.. {
        store.append_batch(batch(n)).await.unwrap();
    }
}

async fn killed_during_batches_then_intact(backend: &str) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&EVENTS_SCHEMA).await.unwrap();
    let kills: u32 = std::env::var("REMPART_EVENTS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut rng = SplitMix64::seeded(0x70e2);
    let exe = std::env::current_exe().unwrap();
    let mut killed = 0;
    for _ in 0..kills {
        let mut child = tokio::process::Command::new(&exe)
            .args(["child_appender", "--exact", "--nocapture"])
            .env(CHILD, &t.url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let after = Duration::from_millis(100 + rng.next_u64() % 400);
        tokio::select! {
            _ = child.wait() => {}
            _ = tokio::time::sleep(after) => {
                child.start_kill().unwrap(); // SIGKILL
                let _ = child.wait().await;
                killed += 1;
            }
        }
    }
    assert_eq!(killed, kills, "every run was killed mid-flight");

    let counts: Vec<(String, i64)> = with_pool!(t.db, p => sqlx::query_as(
        "SELECT stream_id, COUNT(*) FROM events GROUP BY stream_id").fetch_all(p).await.unwrap());
    assert!(
        counts.len() >= 4,
        "batches were written before the kills: {}",
        counts.len()
    );
    let mut sides: HashMap<String, Vec<&str>> = HashMap::new();
    for (stream, n) in &counts {
        assert_eq!(*n, 50, "stream {stream} is torn: {n} of 50 events");
        let (side, id) = stream.split_once('-').unwrap();
        sides.entry(id.to_owned()).or_default().push(side);
    }
    for (id, s) in &sides {
        assert_eq!(
            s.len(),
            2,
            "batch {id} is torn across its streams: only {s:?}"
        );
    }
    eprintln!(
        "{backend}: {} whole batches after {killed} kills",
        sides.len()
    );
    let store = EventStore::new(t.db.clone())
        .with_key(RegisterKey::from_secret("r1", KEY))
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    assert_eq!(head, 100 * sides.len() as u64, "positions are gapless");
    let report = verify(&t.db, &VerifyOptions::default()).await.unwrap();
    assert!(report.intact(), "{:?}", report.findings);
    store.append_batch(batch(0)).await.unwrap();
    assert!(
        verify(&t.db, &VerifyOptions::default())
            .await
            .unwrap()
            .intact(),
        "the chain goes on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_batches_are_all_or_nothing_under_sigkill() {
    killed_during_batches_then_intact("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches_are_all_or_nothing_under_sigkill() {
    killed_during_batches_then_intact("postgres").await;
}
