//! The outbox relay as a child process (`rempart outbox relay`), killed again
//! and again while orders keep committing: SIGKILL at random points, and
//! exits forced right after a publish was acknowledged but before its batch
//! was marked (`REMPART_OUTBOX_ABORT_AFTER_PUBLISH`, the window a random kill
//! rarely hits). The JetStream stream's duplicate window is 100 ms (the least it takes), so the
//! republished messages reach the consumer: its inbox must absorb them.
//! Afterwards every committed message is applied once, in each order's order.
//!
//! 24 kills on PostgreSQL and 12 on SQLite here; more with
//! `REMPART_OUTBOX_KILLS=200 cargo test -p rempart-cli --test outbox_crash`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use async_nats::jetstream;
use rempart::rng::{Rng, SplitMix64};
use rempart_db::test_support::TestDb;
use rempart_db::{Db, with_pool};
use rempart_outbox::{
    Consumed, INBOX_SCHEMA, Incoming, Message, OUTBOX_SCHEMA, Outbox, OutboxStore, message_id,
};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");
const NATS: &str = "nats://127.0.0.1:4222";

fn relay(url: &str, prefix: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args([
        "outbox",
        "relay",
        "--database",
        url,
        "--nats",
        NATS,
        "--prefix",
        prefix,
        "--poll",
        "50ms",
        "--lease",
        "1s",
        "--connect-timeout",
        "5s",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true);
    c
}

/// One projection row per applied message; no unique key on the message id,
/// so a message applied twice shows as two rows.
macro_rules! project {
    ($name:ident, $db:ty) => {
        async fn $name(
            tx: &mut sqlx::Transaction<'static, $db>,
            m: &Incoming,
        ) -> Result<(), String> {
            let aggregate = m.headers.get("rempart-aggregate-id").cloned();
            let seq = m
                .headers
                .get("rempart-seq")
                .and_then(|s| s.parse::<i64>().ok());
            let (Some(aggregate), Some(seq)) = (aggregate, seq) else {
                return Err(format!("message {} without its aggregate headers", m.id));
            };
            sqlx::query("INSERT INTO applied (message_id, aggregate_id, seq) VALUES ($1, $2, $3)")
                .bind(&m.id)
                .bind(aggregate)
                .bind(seq)
                .execute(&mut **tx)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
}
project!(project_pg, sqlx::Postgres);
project!(project_sqlite, sqlx::Sqlite);

/// Orders committing until `stop`, 24 aggregates in turn; the committed ids.
fn produce(db: Db, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Uuid>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let m = Message::new(
                "order",
                format!("o{}", i % 24),
                if i <= 24 {
                    "OrderCreated"
                } else {
                    "OrderUpdated"
                },
                serde_json::json!({"n": i}),
            )
            .unwrap();
            with_pool!(db, pool => {
                let mut tx = pool.begin().await.unwrap();
                Outbox::enqueue(&mut tx, &m).await.unwrap();
                tx.commit().await.unwrap();
            });
            ids.push(m.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ids
    })
}

async fn killed_again_and_again(backend: &str, default_kills: u32) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&OUTBOX_SCHEMA).await.unwrap();
    t.db.migrate(&INBOX_SCHEMA).await.unwrap();
    let serial = if backend == "postgres" {
        "BIGSERIAL PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    with_pool!(t.db, pool => {
        sqlx::query(&format!("CREATE TABLE applied (n {serial}, message_id VARCHAR(100) NOT NULL,
                                aggregate_id VARCHAR(200) NOT NULL, seq BIGINT NOT NULL)"))
            .execute(pool).await.unwrap();
    });
    let prefix = format!("c{}", Uuid::new_v4().simple());
    let js = jetstream::new(
        async_nats::connect(NATS)
            .await
            .expect("nats-server -js on 4222"),
    );
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            // Short, so republished messages get past JetStream to the inbox.
            duplicate_window: Duration::from_millis(100), // the least nats-server takes
            ..Default::default()
        })
        .await
        .unwrap();
    let source: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("projection".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(t.db.clone(), stop.clone());
    let consumer_db = t.db.clone();
    let drained = Arc::new(AtomicBool::new(false));
    let consuming = drained.clone();
    // Polled beside the story, not spawned: the handler's future is not
    // provably `Send` for every lifetime (a rustc limitation with async fns).
    let consumer = async move {
        let mut total = Consumed::default();
        loop {
            let wait = Duration::from_millis(200);
            let retry = Duration::from_millis(100);
            let c = match consumer_db.pool() {
                rempart_db::Pool::Postgres(p) => {
                    rempart_outbox::jetstream_batch(
                        &source,
                        p,
                        "projection",
                        &project_pg,
                        100,
                        wait,
                        retry,
                    )
                    .await
                }
                rempart_db::Pool::Sqlite(p) => {
                    rempart_outbox::jetstream_batch(
                        &source,
                        p,
                        "projection",
                        &project_sqlite,
                        100,
                        wait,
                        retry,
                    )
                    .await
                }
            };
            if let Ok(c) = c {
                total.applied += c.applied;
                total.duplicates += c.duplicates;
                total.failed += c.failed;
                total.early += c.early;
                // An empty fetch alone does not mean the stream is consumed
                // (it happened with hundreds of messages left): ask the server.
                if c.total() == 0 && consuming.load(Ordering::SeqCst) {
                    let left = source
                        .get_info()
                        .await
                        .map(|i| i.num_pending + u64::try_from(i.num_ack_pending).unwrap_or(1));
                    if left.is_ok_and(|n| n == 0) {
                        return total;
                    }
                }
            }
        }
    };
    let consumer = async {
        tokio::time::timeout(Duration::from_secs(120), consumer)
            .await
            .expect("the consumer takes every message of the stream")
    };

    let story = async {
        let kills: u32 = std::env::var("REMPART_OUTBOX_KILLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_kills);
        let mut rng = SplitMix64::seeded(0x0b0c);
        let (mut killed, mut exited_before_mark) = (0, 0);
        for i in 0..kills {
            let mut cmd = relay(&t.url, &prefix);
            // Every other run exits by the hook after a few publishes (given
            // time to reach them); the others are SIGKILLed at a random point.
            let after = if i % 2 == 0 {
                let publishes = 1 + rng.next_u64() % 8;
                cmd.env(
                    rempart_cli::OUTBOX_ABORT_AFTER_PUBLISH_ENV,
                    publishes.to_string(),
                );
                Duration::from_secs(5)
            } else {
                Duration::from_millis(100 + rng.next_u64() % 900)
            };
            let mut child = cmd.spawn().unwrap();
            tokio::select! {
                status = child.wait() => {
                    assert_eq!(status.unwrap().code(), Some(86), "only the hook ends a relay");
                    exited_before_mark += 1;
                    // Past the stream's duplicate window before the next relay
                    // republishes: otherwise a quick restart is deduplicated by
                    // JetStream and the inbox is never put to the test.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ = tokio::time::sleep(after) => {
                    child.start_kill().unwrap(); // SIGKILL
                    let _ = child.wait().await;
                    killed += 1;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let committed = producer.await.unwrap();

        // The last relay drains what the killed ones left, then stops on SIGTERM.
        let mut last = relay(&t.url, &prefix)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // SIGTERM only once it listens: before that, the default action kills it.
        let mut lines = tokio::io::BufReader::new(last.stderr.take().unwrap()).lines();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("running") {
                    break;
                }
            }
        })
        .await
        .expect("the last relay starts");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let store = OutboxStore::new(t.db.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while store.pending().await.unwrap() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the last relay drains the outbox"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drained.store(true, Ordering::SeqCst);
        let pid = last.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), last.wait())
            .await
            .expect("the relay stops on SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
        (committed, killed, exited_before_mark)
    };
    let ((committed, killed, exited_before_mark), total) = tokio::join!(story, consumer);

    let rows: Vec<(String, String, i64)> = with_pool!(t.db, pool => {
        sqlx::query_as("SELECT message_id, aggregate_id, seq FROM applied ORDER BY n")
            .fetch_all(pool).await.unwrap()
    });
    eprintln!(
        "{backend}: {} committed, {killed} SIGKILLed, {exited_before_mark} exited between publish and mark, consumer {total:?}",
        committed.len()
    );
    let mut seen = HashSet::new();
    let twice: Vec<&String> = rows
        .iter()
        .filter(|r| !seen.insert(r.0.clone()))
        .map(|r| &r.0)
        .collect();
    assert!(twice.is_empty(), "applied twice: {twice:?}");
    let expected: HashSet<String> = committed.iter().map(|id| message_id(*id)).collect();
    assert_eq!(seen.len(), expected.len(), "lost messages");
    assert_eq!(seen, expected);
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    for (id, aggregate, seq) in &rows {
        let prev = last_seq.insert(aggregate, *seq).unwrap_or(0);
        assert_eq!(*seq, prev + 1, "{aggregate}: {id} (seq {seq}) after {prev}");
    }
    assert!(
        exited_before_mark > 0 && killed > 0,
        "both kinds of crash happened"
    );
    assert!(
        total.duplicates > 0,
        "republished messages reached the consumer"
    );
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_duplicates_and_the_inbox_absorbs_them_on_postgres()
{
    killed_again_and_again("postgres", 24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_duplicates_and_the_inbox_absorbs_them_on_sqlite() {
    killed_again_and_again("sqlite", 12).await;
}
