//! `rempart jobs dlq` end to end: exit codes for bad input and an
//! unreachable broker, and list/requeue against the real RabbitMQ on
//! 127.0.0.1:5672 (guest/guest), with queues of this test's own.

use std::process::Output;
use std::time::{Duration, SystemTime};

use rempart::clock::UnixClock;
use rempart_gateway::queue::wall_time;

use rempart_gateway::queue::dead_letters::DeadLetters;
use rempart_gateway::queue::job::{Job, JobId};
use rempart_gateway::queue::publish::Publisher;
use rempart_gateway::queue::topology::{self, QueueNames};

const BIN: &str = env!("CARGO_BIN_EXE_rempart");
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const T: Duration = Duration::from_secs(5);

fn config(dir: &tempfile::TempDir, queue: Option<(&str, &str)>) -> std::path::PathBuf {
    let queue = queue
        .map(|(url, name)| format!("queue = {{ amqp_url = \"{url}\", name = \"{name}\" }}"))
        .unwrap_or_default();
    let text = format!(
        "[[services]]\nname = \"optimizer\"\nupstreams = [\"http://127.0.0.1:7020\"]\n{queue}\n\n\
         [[routes]]\npath_prefix = \"/optimize\"\nservice = \"optimizer\"\n"
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rempart(args: &[&str]) -> Output {
    std::process::Command::new(BIN).args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_config_without_a_queue_an_unknown_service_or_a_bad_id_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let none = config(&dir, None);
    let out = rempart(&["jobs", "dlq", "list", "--config", none.to_str().unwrap()]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("no service has a `queue"), "{err}");

    let with = config(&dir, Some((AMQP, "unused")));
    let c = with.to_str().unwrap();
    let out = rempart(&[
        "jobs",
        "dlq",
        "list",
        "--config",
        c,
        "--service",
        "optimiser",
    ]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("\"optimiser\"") && err.contains("optimizer"),
        "{err}"
    );

    let out = rempart(&["jobs", "dlq", "requeue", "not-a-job", "--config", c]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("not-a-job"), "{err}");

    let out = rempart(&["jobs", "dlq", "requeue", "--config", c]);
    assert_eq!(out.status.code(), Some(64), "ID or --all is required");
}

#[test]
fn an_unreachable_broker_exits_1_and_names_it_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let c = config(&dir, Some((&url, "nowhere")));
    let out = rempart(&[
        "jobs",
        "dlq",
        "list",
        "--config",
        c.to_str().unwrap(),
        "--timeout",
        "2s",
    ]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RabbitMQ") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(
        !err.contains("secret"),
        "the password is not printed: {err}"
    );
}

#[test]
fn list_shows_a_dead_job_and_requeue_puts_it_back_on_the_work_queue() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nanos = wall_time(&UnixClock::new())
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let names = QueueNames::new(&format!("rq-cli-{}-{nanos}", std::process::id()));
    let job = Job::capture(
        JobId::new(wall_time(&UnixClock::new())),
        &http::Method::POST,
        &"/optimize".parse().unwrap(),
        &http::HeaderMap::new(),
        b"image".to_vec(),
    )
    .unwrap();
    let id = job.id.to_string();
    rt.block_on(async {
        let conn = topology::connect(AMQP, T).await.expect("RabbitMQ on 5672");
        let ch = conn.create_channel().await.unwrap();
        topology::declare(&ch, &names, 5, T).await.unwrap();
        let p = Publisher::open(&conn, names.clone(), T).await.unwrap();
        p.dead(
            &job.encode(),
            Some(&id),
            5,
            "503 from optimizer, 5 attempts",
        )
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let c = config(&dir, Some((AMQP, &names.work)));
    let c = c.to_str().unwrap();

    let out = rempart(&["jobs", "dlq", "list", "--config", c, "--json"]);
    let (json, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["service"], "optimizer");
    assert_eq!(v[0]["total"], 1);
    assert_eq!(v[0]["messages"][0]["job_id"], id.as_str());
    assert_eq!(v[0]["messages"][0]["attempts"], 5);

    let out = rempart(&["jobs", "dlq", "list", "--config", c]);
    let (table, _) = text(&out);
    assert!(
        table.contains(&id) && table.contains("POST /optimize"),
        "{table}"
    );

    let out = rempart(&["jobs", "dlq", "requeue", &id, "--config", c]);
    let (said, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(said.contains(&format!("requeued {id}")), "{said}");
    let out = rempart(&["jobs", "dlq", "requeue", &id, "--config", c]);
    assert_eq!(out.status.code(), Some(1), "a second requeue finds nothing");

    rt.block_on(async {
        let dlq = DeadLetters::open(AMQP, names.clone(), T).await.unwrap();
        assert_eq!(dlq.list(10).await.unwrap().1, 0, "the DLQ is empty");
        let conn = topology::connect(AMQP, T).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let got = ch
            .basic_get(
                names.work.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .expect("the job is back on the work queue");
        assert_eq!(Job::decode(&got.delivery.data).unwrap(), job);
        for q in names.all(5) {
            let _ = ch
                .queue_delete(
                    q.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
    });
}
