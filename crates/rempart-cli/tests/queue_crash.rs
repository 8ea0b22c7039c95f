//! Seed 002's promise under a crash: once a client has its 202, the job
//! survives the gateway. `rempart gateway` (a child process) answers 202
//! while its service is down and is killed with SIGKILL at once; a new
//! gateway's worker replays the job from RabbitMQ once the service is back,
//! and the client's poll, to the new gateway, turns to the stored answer
//! (results in Redis, shared by both processes). Real RabbitMQ on
//! 127.0.0.1:5672 and Redis on 6379, a queue of this test's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lapin::options::QueueDeleteOptions;
use rempart::clock::UnixClock;
use rempart_gateway::queue::topology::{self, QueueNames};
use rempart_gateway::queue::wall_time;
use tokio::net::TcpListener;

#[allow(dead_code)] // each test binary uses part of it
mod gateway_process;
use gateway_process::{free_port, start_gateway};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MAX_ATTEMPTS: u32 = 20;

/// An upstream answering 503 until `up` turns true, then 201 with an image;
/// counts the calls that reached it once up.
async fn upstream(up: Arc<AtomicBool>, served: Arc<AtomicU32>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (up, served) = (up.clone(), served.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (up, served) = (up.clone(), served.clone());
                    async move {
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"WEBP-1")));
                        if up.load(Ordering::SeqCst) {
                            served.fetch_add(1, Ordering::SeqCst);
                            *r.status_mut() = hyper::StatusCode::CREATED;
                        } else {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr, port: u16, admin: u16, queue: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[cache]
backend = "redis"
redis_url = "redis://127.0.0.1:6379"

[[services]]
name = "optimizer"
upstreams = [ {{ url = "http://{upstream}" }} ]
timeout = "2s"
queue = {{ amqp_url = "{AMQP}", name = "{queue}", max_attempts = {MAX_ATTEMPTS}, backoff = {{ initial = "100ms", max = "300ms" }}, result_ttl = "1h", results = "redis" }}

[[routes]]
path_prefix = "/optimize"
service = "optimizer"
queue_methods = ["POST"]
"#
    )
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn call(client: &HttpClient, method: &str, url: String) -> (u16, Bytes) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", "Bearer client-a")
        .body(Full::new(Bytes::from_static(b"PNG-1")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("the gateway answers within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_accepted_with_202_survives_a_sigkill_of_the_gateway_and_completes_in_the_next_one() {
    let nanos = wall_time(&UnixClock::new())
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let names = QueueNames::new(&format!("rq-crash-{}-{nanos}", std::process::id()));
    let (up, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU32::new(0)),
    );
    let upstream = upstream(up.clone(), served.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    let (port, admin) = (free_port(), free_port());
    std::fs::write(&file, config(upstream, port, admin, &names.work)).unwrap();
    let mut first = start_gateway(&file).await;
    let (status, body) = call(
        &client,
        "POST",
        format!("http://127.0.0.1:{port}/optimize/img"),
    )
    .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    first.start_kill().unwrap(); // SIGKILL, right after the 202
    first.wait().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = v["job_id"].as_str().unwrap().to_owned();

    up.store(true, Ordering::SeqCst);
    let (port, admin) = (free_port(), free_port());
    std::fs::write(&file, config(upstream, port, admin, &names.work)).unwrap();
    let mut second = start_gateway(&file).await;
    let poll = format!("http://127.0.0.1:{port}/jobs/{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (status, body) = call(&client, "GET", poll.clone()).await;
        if status == 201 {
            break body;
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never completed after the crash: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(&done[..], b"WEBP-1", "the stored answer, byte for byte");
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "replayed once the service was back"
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();

    let conn = topology::connect(AMQP, Duration::from_secs(5))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in names.all(MAX_ATTEMPTS) {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}
