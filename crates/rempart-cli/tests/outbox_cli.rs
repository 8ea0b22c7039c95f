//! `rempart outbox relay` and `rempart outbox status` as an operator runs
//! them: exit codes and messages, on real databases and brokers.

use std::process::{Command, Output};
use std::time::Duration;

use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use rempart_outbox::{Message, OUTBOX_SCHEMA, Outbox};

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

fn rempart(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn outbox_db() -> TestDb {
    let t = TestDb::sqlite().await.unwrap();
    t.db.migrate(&OUTBOX_SCHEMA).await.unwrap();
    t
}

#[tokio::test]
async fn bad_relay_input_exits_64_and_says_what_to_fix() {
    let t = outbox_db().await;
    let db = t.url.as_str();
    let cases: [(&[&str], &str); 6] = [
        (&["outbox", "relay", "--database", db], "--nats"),
        (
            &[
                "outbox",
                "relay",
                "--database",
                "mysql://h/db",
                "--nats",
                "nats://127.0.0.1:4222",
            ],
            "mysql",
        ),
        (
            &[
                "outbox",
                "relay",
                "--database",
                "sqlite:///no/such/dir/x.db",
                "--nats",
                "nats://127.0.0.1:4222",
            ],
            "no such file",
        ),
        (
            &["outbox", "relay", "--database", db, "--nats", "http://x"],
            "not a NATS URL",
        ),
        (
            &["outbox", "relay", "--database", db, "--amqp", "ftp://x"],
            "not an AMQP URL",
        ),
        (
            &[
                "outbox",
                "relay",
                "--database",
                db,
                "--nats",
                "nats://127.0.0.1:4222",
                "--prefix",
                "events.*",
            ],
            "--prefix",
        ),
    ];
    for (args, says) in cases {
        let out = rempart(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn an_unreachable_database_or_broker_exits_1_and_is_named() {
    let t = outbox_db().await;
    let port = closed_port();
    let pg = format!("postgres://postgres@127.0.0.1:{port}/test");
    let nats = format!("nats://127.0.0.1:{port}");
    let amqp = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let cases: [(Vec<&str>, String); 4] = [
        (
            vec![
                "outbox",
                "relay",
                "--database",
                &pg,
                "--nats",
                "nats://127.0.0.1:4222",
            ],
            format!("127.0.0.1:{port}"),
        ),
        (
            vec!["outbox", "status", "--database", &pg],
            format!("127.0.0.1:{port}"),
        ),
        (
            vec![
                "outbox",
                "relay",
                "--database",
                &t.url,
                "--nats",
                &nats,
                "--connect-timeout",
                "2s",
            ],
            format!("NATS at {nats}"),
        ),
        (
            vec![
                "outbox",
                "relay",
                "--database",
                &t.url,
                "--amqp",
                &amqp,
                "--connect-timeout",
                "2s",
            ],
            "RabbitMQ".to_owned(),
        ),
    ];
    for (args, names) in cases {
        let out = rempart(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&names), "{args:?}: {}", stderr(&out));
    }
}

/// A broker that accepts the connection and never answers holds the relay in
/// its start; a SIGTERM then stops it cleanly instead of killing it.
#[tokio::test]
async fn a_sigterm_during_the_start_stops_the_relay_with_exit_0() {
    let t = outbox_db().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nats = format!("nats://{}", silent.local_addr().unwrap());
    let relay = tokio::process::Command::new(BIN)
        .args(["outbox", "relay", "--database", &t.url, "--nats", &nats])
        .args(["--connect-timeout", "60s"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Accepted: the relay is past its database and waits on the broker.
    let (_held, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("the relay connects to the broker")
        .unwrap();
    let pid = relay.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), relay.wait_with_output())
        .await
        .expect("the relay stops on SIGTERM, not after its connect timeout")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped before it started"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn status_shows_the_backlog_its_aggregates_and_the_dead_letters() {
    let t = outbox_db().await;
    let mut dead = None;
    for (aggregate, n) in [("a", 1), ("a", 2), ("b", 1)] {
        let m = Message::new(
            "order",
            aggregate,
            "OrderCreated",
            serde_json::json!({"n": n}),
        )
        .unwrap();
        with_pool!(t.db, pool => {
            let mut tx = pool.begin().await.unwrap();
            Outbox::enqueue(&mut tx, &m).await.unwrap();
            tx.commit().await.unwrap();
        });
        dead = Some(m.id);
    }
    with_pool!(t.db, pool => {
        sqlx::query("UPDATE outbox SET state = 'dead', last_error = 'payload is not a valid OrderCreated' WHERE id = $1")
            .bind(dead.unwrap()).execute(pool).await.unwrap();
    });

    let out = rempart(&["outbox", "status", "--database", &t.url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pending             2"), "{text}");
    assert!(text.contains("dead letters        1"), "{text}");
    assert!(text.contains("not a valid OrderCreated"), "{text}");

    let out = rempart(&["outbox", "status", "--json", "--database", &t.url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pending"], 2);
    assert_eq!(v["dead_letters"], 1);
    let aggs = v["aggregates_with_backlog"].as_array().unwrap();
    assert_eq!(aggs.len(), 1);
    assert_eq!(aggs[0]["aggregate_id"], "a");
    assert_eq!(aggs[0]["pending"], 2);
    assert_eq!(v["dead"][0]["aggregate_id"], "b");
}

/// The demo, briefly, in-process and on the real NATS: the table shows
/// orders waiting while the broker is cut, and the last line has every order
/// delivered once.
#[test]
fn the_demo_holds_orders_during_the_cut_and_delivers_each_once() {
    let nats: &[&str] = &["--nats", "nats://127.0.0.1:4222"];
    for extra in [&[][..], nats] {
        let mut args = vec!["demo", "outbox", "--duration", "6s", "--rate", "40"];
        args.extend_from_slice(extra);
        let out = rempart(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {text}{}",
            stderr(&out)
        );
        let held_while_cut = text
            .lines()
            .filter(|l| l.ends_with("CUT"))
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        assert!(held_while_cut > 0, "pending rows while cut: {text}");
        let last = text.lines().last().unwrap_or_default();
        let counts: Vec<u64> = last
            .split(", ")
            .filter_map(|part| part.rsplit(": ").next()?.parse().ok())
            .collect();
        assert!(
            last.starts_with("orders: ") && counts.len() == 3,
            "last line: {last:?}"
        );
        assert!(
            counts[0] > 0 && counts[0] == counts[1] && counts[2] == 0,
            "{last}"
        );
    }
}
