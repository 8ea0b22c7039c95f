//! `rempart demo queue` end to end against the real RabbitMQ on
//! 127.0.0.1:5672 (its queues are its own per run, deleted at the end), and
//! its hint when there is no broker.

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

async fn rempart(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("the demo ends within 90 s")
        .unwrap()
}

#[tokio::test]
async fn the_good_uploads_are_done_and_the_corrupt_one_is_dead_after_5_attempts() {
    let out = rempart(&["demo", "queue", "--no-redraw"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}\n{err}");
    assert!(said.contains("failing (503)"), "{said}");
    assert_eq!(
        said.lines().last(),
        Some("uploads: 8, done: 7/7, dead: 1 (replayed 5 times, 5 attempts in the DLQ), ok"),
        "{said}"
    );
}

#[tokio::test]
async fn without_rabbitmq_it_says_how_to_start_it_and_exits_1() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let out = rempart(&["demo", "queue", "--no-redraw", "--amqp", &url]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rabbitmq-server start"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "{err}");
}
