//! `rempart saga` as an operator runs it: exit codes, messages, real databases.

use std::process::{Command, Output};
use std::time::Duration;

use rempart_db::test_support::TestDb;
use rempart_saga::{
    Lease, SagaRecord, SagaStatus, SagaStore, SqlSagaStore, StepRecord, StepStatus,
};
use serde_json::json;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

fn rempart(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn database_with(status: SagaStatus) -> (TestDb, Uuid) {
    let t = TestDb::sqlite().await.unwrap();
    let store = SqlSagaStore::open(&t.url).await.unwrap();
    let r = SagaRecord {
        id: Uuid::new_v4(),
        saga_type: "create_order".into(),
        status,
        payload: json!({"order_id": 7}),
        current_step: Some("PROCESS_PAYMENT".into()),
        error: Some("compensating RESERVE_STOCK: 503".into()),
        next_attempt_at: 0,
        deadline: None,
        abort_requested: false,
        steps: vec![
            StepRecord {
                status: StepStatus::Compensating,
                attempts: 1,
                compensation_attempts: 8,
                output: Some(json!({"reservation": "r-7"})),
                ..StepRecord::pending("RESERVE_STOCK")
            },
            StepRecord::pending("PROCESS_PAYMENT"),
        ],
    };
    let lease = Lease {
        owner: "w".into(),
        fence: 1,
        expires_at: 0,
    };
    store.create(&r, &lease).await.unwrap();
    (t, r.id)
}

#[tokio::test]
async fn list_and_show_print_the_sagas_as_text_and_json() {
    let (t, id) = database_with(SagaStatus::CompensationFailed).await;
    let out = rempart(&["saga", "list", "--database", &t.url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&id.to_string()) && text.contains("COMPENSATION_FAILED"),
        "{text}"
    );

    let out = rempart(&["saga", "list", "--json", "--database", &t.url]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["status"], "COMPENSATION_FAILED");

    let out = rempart(&["saga", "show", &id.to_string(), "--database", &t.url]);
    let text = stdout(&out);
    assert!(
        text.contains("RESERVE_STOCK") && text.contains("r-7"),
        "{text}"
    );
    let out = rempart(&[
        "saga",
        "show",
        &id.to_string(),
        "--json",
        "--database",
        &t.url,
    ]);
    let saga: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(saga["steps"][0]["compensation_attempts"], 8);
}

#[tokio::test]
async fn resume_takes_a_flagged_saga_back_and_abort_flags_a_running_one() {
    let (t, id) = database_with(SagaStatus::CompensationFailed).await;
    let out = rempart(&["saga", "resume", &id.to_string(), "--database", &t.url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let store = SqlSagaStore::open(&t.url).await.unwrap();
    let r = store.load(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensating);
    assert_eq!(r.steps[0].compensation_attempts, 0);

    let (t, id) = database_with(SagaStatus::InProgress).await;
    let out = rempart(&["saga", "abort", &id.to_string(), "--database", &t.url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let store = SqlSagaStore::open(&t.url).await.unwrap();
    assert!(store.load(id).await.unwrap().abort_requested);
}

#[tokio::test]
async fn bad_input_exits_64_with_a_clear_message() {
    let (t, _id) = database_with(SagaStatus::InProgress).await;
    let unknown = Uuid::new_v4().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["saga", "list", "--database", "mysql://root:pw@h/db"],
            "unknown database URL scheme",
        ),
        (
            vec!["saga", "show", "not-a-uuid", "--database", &t.url],
            "is not a saga id",
        ),
        (
            vec!["saga", "show", &unknown, "--database", &t.url],
            "no saga",
        ),
        (
            vec!["saga", "resume", &unknown, "--database", &t.url],
            "no saga",
        ),
        (
            vec![
                "saga",
                "list",
                "--database",
                "sqlite:///nonexistent/dir/x.db",
            ],
            "no such file",
        ),
    ];
    for (args, expected) in cases {
        let out = rempart(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("pw@"), "no password printed");
    }
}

#[tokio::test]
async fn an_unreachable_database_exits_1_naming_it_without_hanging() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/test");
    let child = tokio::process::Command::new(BIN)
        .args(["saga", "list", "--database", &url])
        .kill_on_drop(true)
        .output();
    // The CLI's own deadline is 5 s; 30 s here only guards against a hang.
    let out = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("rempart saga list hung")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "{err}");
}
