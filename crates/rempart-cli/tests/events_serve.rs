//! `rempart events serve` and the register's client, over loopback HTTP:
//! registers sync both ways; bad input gets a 4xx saying what is wrong; a
//! register cut off from central keeps selling, its sync fails fast, and it
//! catches up once central is back.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rempart::clock::{Clock, UnixClock};

use rempart_cli::events_client::{CentralClient, SyncClientError};
use rempart_cli::events_serve::{MAX_BODY_BYTES, router};
use rempart_events::clock::RegisterNo;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, ExpectedVersion, Metadata, NewEvent};
use rempart_events::sync::{Central, RegisterSync};
use rempart_events::verify::{VerifyOptions, verify};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

/// Quick pauses and a quick breaker, so the test runs in a second or two.
const POLICIES: &str = r#"
[retry]
max_retries = 2
initial_delay = "10ms"
max_delay = "50ms"
jitter = true
attempt_timeout = "2s"
timeout = "5s"
connect_timeout = "1s"
[retry.circuit_breaker]
failure_threshold = 3
success_threshold = 1
timeout = "300ms"
[retry.policy]
retry_non_idempotent = true
"#;

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn start(central: Arc<Central>, addr: &str) -> Server {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router(central)).await.unwrap();
    });
    Server { addr, task }
}

async fn register(dir: &std::path::Path, id: &str, no: u32) -> RegisterSync {
    let url = format!("sqlite://{}", dir.join(format!("{id}.sqlite")).display());
    RegisterSync::open(
        &url,
        RegisterKey::from_secret(id, [no as u8; 32]),
        "s1",
        RegisterNo(no),
    )
    .await
    .unwrap()
}

async fn sell(r: &RegisterSync, n: u32) {
    let meta = Metadata::new("s1", r.register_id());
    let events = vec![
        NewEvent::new("TICKET_OUVERT", json!({"n": n}), meta.clone()),
        NewEvent::new("TICKET_CLOS", json!({"n": n}), meta).signed(Checkpoint::Ticket),
    ];
    r.store()
        .append(
            &format!("t-{}-{n}", r.register_id()),
            ExpectedVersion::NoStream,
            events,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_sync_through_http_and_survive_central_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let central_url = format!("sqlite://{}", dir.path().join("central.sqlite").display());
    let central = Arc::new(Central::open(&central_url).await.unwrap());
    let server = start(central.clone(), "127.0.0.1:0").await;
    let base = format!("http://{}", server.addr);
    let client = CentralClient::new(&base, POLICIES).unwrap();
    let a = register(dir.path(), "r-1", 1).await;
    let b = register(dir.path(), "r-2", 2).await;

    sell(&a, 1).await;
    let report = client.sync(&a, 100, 10).await.unwrap();
    assert_eq!((report.pushed, report.acked_seq), (2, 2));
    let report = client.sync(&b, 100, 10).await.unwrap();
    assert_eq!(report.pulled, 2, "B takes in its shop-mate's ticket");

    // Central goes away: the registers keep selling; sync fails fast.
    server.task.abort();
    let _ = server.task.await;
    for n in 2..=4 {
        sell(&a, n).await;
    }
    let mut unreachable = 0;
    for _ in 0..5 {
        match client.sync(&a, 100, 10).await {
            Err(SyncClientError::Unreachable(_)) => unreachable += 1,
            other => panic!("expected central unreachable, got {other:?}"),
        }
    }
    assert_eq!(unreachable, 5);
    assert_eq!(
        a.progress().await.unwrap().0,
        2,
        "nothing acknowledged while cut off"
    );

    // Central is back on the same address: everything goes through once.
    let server = start(central.clone(), &server.addr.to_string()).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the breaker's open time
    let report = client.sync(&a, 2, 10).await.unwrap();
    assert_eq!((report.pushed, report.acked_seq), (6, 8));
    let report = client.sync(&b, 100, 10).await.unwrap();
    assert_eq!(report.pulled, 6);
    assert_eq!(central.store().head_position().await.unwrap(), 8);
    for store in [central.store(), a.store(), b.store()] {
        let r = verify(store.db(), &VerifyOptions::default()).await.unwrap();
        assert!(r.intact(), "{:?}", r.findings);
    }
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_that_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let central_url = format!("sqlite://{}", dir.path().join("central.sqlite").display());
    let central = Arc::new(Central::open(&central_url).await.unwrap());
    let server = start(central.clone(), "127.0.0.1:0").await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let a = register(dir.path(), "r-1", 1).await;
    let b = register(dir.path(), "r-2", 2).await;
    let now = || UnixClock::new().now().as_nanos() / 1_000_000;
    // Signed by `by` unless None, as every register's client signs.
    let post = |by: Option<&RegisterSync>, body: Vec<u8>| {
        let mut req = http
            .post(format!("{base}/v1/batches"))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10));
        if let Some(r) = by {
            for (name, value) in r
                .sign_request("POST", "/v1/batches", now(), &body)
                .unwrap()
                .headers()
            {
                req = req.header(name, value);
            }
        }
        req.body(body).send()
    };
    let get = |by: Option<&RegisterSync>, path: &str| {
        let mut req = http
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(10));
        if let Some(r) = by {
            for (name, value) in r.sign_request("GET", path, now(), b"").unwrap().headers() {
                req = req.header(name, value);
            }
        }
        req.send()
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };

    let (status, text) = answer(post(Some(&a), b"{not json".to_vec()).await.unwrap()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a push batch"), "{text}");
    let (status, text) = answer(post(None, b"{not json".to_vec()).await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(text.contains("unsigned request"), "{text}");

    let (status, _) = answer(
        post(Some(&a), vec![b' '; MAX_BODY_BYTES + 1])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);

    // A register pushing under another register's name.
    sell(&a, 1).await;
    let mut batch = a.outbox(10).await.unwrap().unwrap();
    batch.register_id = "r-9".into();
    let (status, text) = answer(
        post(Some(&a), serde_json::to_vec(&batch).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature"), "{text}");
    // Someone else's key claiming r-1's batch.
    let batch = a.outbox(10).await.unwrap().unwrap();
    let (status, text) = answer(
        post(Some(&b), serde_json::to_vec(&batch).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{text}");

    // A register that changed its number after enrolling.
    let (status, _) = answer(
        post(Some(&a), serde_json::to_vec(&batch).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let mut renumbered = batch.clone();
    renumbered.register_no = 7;
    let (status, text) = answer(
        post(Some(&a), serde_json::to_vec(&renumbered).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("enrolled as number 1"), "{text}");

    // Pulls: signed, by an enrolled register, of its own shop only.
    let (status, text) = answer(get(None, "/v1/stores/s1/events?after=0").await.unwrap()).await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = answer(get(Some(&b), "/v1/stores/s1/events?after=0").await.unwrap()).await;
    assert_eq!(status, 401, "r-2 never pushed: {text}");
    assert!(text.contains("not enrolled"), "{text}");
    let (status, text) = answer(get(Some(&a), "/v1/stores/s2/events?after=0").await.unwrap()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("belongs to shop s1"), "{text}");
    let (status, text) = answer(get(Some(&a), "/v1/stores/s1/events?after=0").await.unwrap()).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = answer(get(Some(&a), "/v1/stores/s1/events?after=x").await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(text.contains("after"), "{text}");
    let r = http.get(format!("{base}/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    server.task.abort();
}

#[test]
fn serve_exits_64_on_a_bad_address_and_1_on_an_unreachable_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.sqlite").display());
    let out = Command::new(BIN)
        .args(["events", "serve", "--database", &db, "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = Command::new(BIN)
        .args([
            "events",
            "serve",
            "--database",
            "postgres://rempart@127.0.0.1:1/none",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
