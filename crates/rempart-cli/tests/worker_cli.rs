//! `rempart worker` end to end: exit codes for a bad config and an
//! unreachable broker, the drain on SIGTERM, and a job published to the work
//! queue replayed to a local upstream with its result landing in Redis, and
//! a worker killed with SIGKILL mid-job whose job the next worker completes
//! once. Real RabbitMQ on 127.0.0.1:5672 and Redis on 6379, names of this
//! test's own.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use rempart::clock::UnixClock;
use rempart_gateway::queue::decision::{JobState, StoredAnswer};
use rempart_gateway::queue::job::{Job, JobId};
use rempart_gateway::queue::publish::Publisher;
use rempart_gateway::queue::redis_results::RedisResults;
use rempart_gateway::queue::results::ResultStore;
use rempart_gateway::queue::topology::{self, QueueNames};
use rempart_gateway::queue::wall_time;

const BIN: &str = env!("CARGO_BIN_EXE_rempart");
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379";
const T: Duration = Duration::from_secs(5);

fn unique(test: &str) -> String {
    let nanos = wall_time(&UnixClock::new())
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("rq-{test}-{}-{nanos}", std::process::id())
}

/// A config with one service `service` whose queue is `queue` on `amqp`;
/// `extra` goes inside the queue table, `head` before the services.
fn config(
    dir: &tempfile::TempDir,
    service: &str,
    upstream: &str,
    amqp: &str,
    queue: &str,
    extra: &str,
    head: &str,
) -> std::path::PathBuf {
    let text = format!(
        "{head}\n[[services]]\nname = \"{service}\"\nupstreams = [\"{upstream}\"]\n\
         queue = {{ amqp_url = \"{amqp}\", name = \"{queue}\", max_attempts = 3, \
         backoff = {{ initial = \"100ms\", max = \"400ms\" }}, result_ttl = \"5m\"{extra} }}\n\n\
         [[routes]]\npath_prefix = \"/optimize\"\nservice = \"{service}\"\nqueue_methods = [\"POST\"]\n"
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A config for `service` whose results go to the real Redis, so a test
/// (another process) can read them.
fn redis_config(
    dir: &tempfile::TempDir,
    service: &str,
    upstream: std::net::SocketAddr,
    names: &QueueNames,
) -> std::path::PathBuf {
    config(
        dir,
        service,
        &format!("http://{upstream}"),
        AMQP,
        &names.work,
        ", results = \"redis\"",
        &format!("[cache]\nbackend = \"redis\"\nredis_url = \"{REDIS}\"\n"),
    )
}

/// The stored answer of job `id` of `service` once it is done in Redis;
/// `None` if it is not done `within`.
async fn done_in_redis(service: &str, id: JobId, within: Duration) -> Option<StoredAnswer> {
    let results = RedisResults::connect(
        REDIS,
        &format!("rempart:jobs:{service}:"),
        Duration::from_secs(300),
        T,
    )
    .await
    .expect("Redis on 6379");
    let wait = async {
        loop {
            let now = wall_time(&UnixClock::new());
            match results.get(id, now).await.unwrap() {
                Some(JobState::Done(answer)) => break answer,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok()
}

/// Runs `rempart ARGS` to its end, killed past 30 s: a worker that should
/// have exited but runs fails the test instead of hanging it.
async fn rempart(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("rempart exits within 30 s")
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `rempart worker --config FILE` and waits until it says it
/// replays, returning it and what it printed so far.
async fn start_worker(config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["worker", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("rempart worker: replaying") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the worker did not start: {seen}");
    // Keep draining its stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, seen)
}

async fn terminate(mut child: Child) -> Option<i32> {
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the worker stops within 20 s of SIGTERM")
        .unwrap()
        .code()
}

async fn delete_queues(names: &QueueNames, max_attempts: u32) {
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in names.all(max_attempts) {
        let _ = ch
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_or_one_without_a_queue_is_a_usage_error_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        &dir,
        "optimizer",
        "http://127.0.0.1:7020",
        AMQP,
        "unused",
        ", results = \"disk\"",
        "",
    );
    let out = rempart(&["worker", "--config", c.to_str().unwrap()]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    // The queue table is on line 5 of the file.
    assert!(err.contains("gateway.toml:5:"), "{err}");
    assert!(err.contains("disk"), "{err}");

    let none = dir.path().join("none.toml");
    std::fs::write(
        &none,
        "[[services]]\nname = \"a\"\nupstreams = [\"http://127.0.0.1:7020\"]\n\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"a\"\n",
    )
    .unwrap();
    let out = rempart(&["worker", "--config", none.to_str().unwrap()]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("no service has a `queue"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_exits_1_naming_it_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let c = config(
        &dir,
        "optimizer",
        "http://127.0.0.1:7020",
        &url,
        "nowhere",
        "",
        "",
    );
    let out = rempart(&["worker", "--config", c.to_str().unwrap()]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RabbitMQ") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !err.contains("secret"),
        "the password is not printed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_results_are_warned_about_and_sigterm_drains_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let queue = unique("worker-mem");
    let c = config(
        &dir,
        "optimizer",
        "http://127.0.0.1:7020",
        AMQP,
        &queue,
        "",
        "",
    );
    let (child, said) = start_worker(&c).await;
    assert!(
        said.contains("warning") && said.contains("results = \"memory\""),
        "{said}"
    );
    assert_eq!(terminate(child).await, Some(0));
    delete_queues(&QueueNames::new(&queue), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_job_is_replayed_to_the_upstream_and_its_result_lands_in_redis() {
    // The upstream records the X-Job-Id of what it receives.
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let upstream = {
        let seen = Arc::clone(&seen);
        async move {
            let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
                let seen = Arc::clone(&seen);
                async move {
                    let id = headers
                        .get("x-job-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().unwrap().push(id);
                    (
                        [(axum::http::header::CONTENT_TYPE, "image/webp")],
                        "optimized",
                    )
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        }
        .await
    };
    // A service name of its own: the Redis key prefix derives from it.
    let service = unique("worker-e2e");
    let names = QueueNames::new(&service);
    let dir = tempfile::tempdir().unwrap();
    let c = redis_config(&dir, &service, upstream, &names);
    let job = Job::capture(
        JobId::new(wall_time(&UnixClock::new())),
        &http::Method::POST,
        &"/optimize/img?size=2".parse().unwrap(),
        &http::HeaderMap::new(),
        b"\x89PNG".to_vec(),
    )
    .unwrap();
    let id = job.id;
    {
        let conn = topology::connect(AMQP, T).await.expect("RabbitMQ on 5672");
        let ch = conn.create_channel().await.unwrap();
        topology::declare(&ch, &names, 3, T).await.unwrap();
        let p = Publisher::open(&conn, names.clone(), T).await.unwrap();
        p.submit(&job).await.unwrap();
    }

    let (child, _) = start_worker(&c).await;
    let done = done_in_redis(&service, id, Duration::from_secs(20)).await;
    let code = terminate(child).await;
    delete_queues(&names, 3).await;
    let answer = done.expect("the job is done in Redis within 20 s");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("image/webp"));
    assert_eq!(answer.body, b"optimized");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some(id.to_string())],
        "the upstream got the replay once, with X-Job-Id"
    );
    assert_eq!(code, Some(0));
}

/// What the upstream saw of one replay: its `X-Job-Id`, its
/// `Idempotency-Key`, and whether it was held (never answered).
type Replay = (Option<String>, Option<String>, bool);

/// Seed 002's worker under a real crash: `rempart worker` is killed with
/// SIGKILL while the upstream holds its replay (no ack, no result), and a
/// second worker replays the job from RabbitMQ: it completes once, with the
/// same job id and `Idempotency-Key`, and the work queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_mid_job_leaves_it_to_the_next_worker_which_completes_it_once()
{
    use std::sync::atomic::{AtomicBool, Ordering};
    // While `hang` is set the upstream takes the replay and never answers.
    let hang = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<Vec<Replay>>> = Arc::default();
    let upstream = {
        let (hang, seen) = (Arc::clone(&hang), Arc::clone(&seen));
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let (hang, seen) = (Arc::clone(&hang), Arc::clone(&seen));
            async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let hung = hang.load(Ordering::SeqCst);
                seen.lock()
                    .unwrap()
                    .push((header("x-job-id"), header("idempotency-key"), hung));
                if hung {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                "optimized"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let service = unique("worker-kill");
    let names = QueueNames::new(&service);
    let dir = tempfile::tempdir().unwrap();
    let c = redis_config(&dir, &service, upstream, &names);
    let mut headers = http::HeaderMap::new();
    headers.insert("idempotency-key", "upload-7".parse().unwrap());
    let job = Job::capture(
        JobId::new(wall_time(&UnixClock::new())),
        &http::Method::POST,
        &"/optimize/img".parse().unwrap(),
        &headers,
        b"\x89PNG".to_vec(),
    )
    .unwrap();
    let id = job.id;
    let conn = topology::connect(AMQP, T).await.expect("RabbitMQ on 5672");
    let ch = conn.create_channel().await.unwrap();
    topology::declare(&ch, &names, 3, T).await.unwrap();
    Publisher::open(&conn, names.clone(), T)
        .await
        .unwrap()
        .submit(&job)
        .await
        .unwrap();

    let (mut first, _) = start_worker(&c).await;
    let taken = tokio::time::timeout(Duration::from_secs(20), async {
        while seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(taken.is_ok(), "the first worker replayed the job");
    first.start_kill().unwrap(); // SIGKILL
    let status = first.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal, not exited");

    hang.store(false, Ordering::SeqCst);
    let (second, _) = start_worker(&c).await;
    let done = done_in_redis(&service, id, Duration::from_secs(30)).await;
    // Room for a second, wrong, replay to show up before the counts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = ch
        .queue_declare(
            names.work.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .map(|q| q.message_count());
    let code = terminate(second).await;
    delete_queues(&names, 3).await;

    let answer = done.expect("the second worker completed the job within 30 s");
    assert_eq!(answer.body, b"optimized");
    let seen = seen.lock().unwrap().clone();
    let same = (Some(id.to_string()), Some("upload-7".to_owned()));
    assert_eq!(
        seen,
        vec![
            (same.0.clone(), same.1.clone(), true),
            (same.0, same.1, false)
        ],
        "one replay held by the killed worker, then exactly one that completed, both carrying the job id and key"
    );
    assert_eq!(left.unwrap(), 0, "nothing left in the work queue");
    assert_eq!(code, Some(0));
}
