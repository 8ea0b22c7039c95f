//! The gateway degrading to a queue, end to end: a real gateway with its
//! embedded worker, real upstreams on loopback and a real RabbitMQ on
//! 127.0.0.1:5672 (guest/guest), queues of its own per test.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rempart_gateway::queue::job::JobId;
use rempart_gateway::server::RunningGateway;
use support::rabbit::{AMQP, Cleanup, now, queue_state, unique_names, wait_held};
use tokio::time::Instant;

const MAX_ATTEMPTS: u32 = 10;

/// A gateway deferring POSTs on `/optimize` to `optimizer`, whose upstream
/// is `upstream`, through the broker at `amqp` on queue `queue`.
async fn gateway(upstream: SocketAddr, amqp: &str, queue: &str) -> RunningGateway {
    gateway_with(upstream, amqp, queue, "").await
}

/// [`gateway`] with more keys in the service's `queue` (`extra` starts
/// with a comma).
async fn gateway_with(
    upstream: SocketAddr,
    amqp: &str,
    queue: &str,
    extra: &str,
) -> RunningGateway {
    support::gateway(&format!(
        r#"
[[services]]
name = "optimizer"
upstreams = [ {{ url = "http://{upstream}" }} ]
timeout = "2s"
queue = {{ amqp_url = "{amqp}", name = "{queue}", max_attempts = {MAX_ATTEMPTS}, backoff = {{ initial = "100ms", max = "400ms" }}, result_ttl = "1h"{extra} }}

[[routes]]
path_prefix = "/optimize"
service = "optimizer"
queue_methods = ["POST"]
"#
    ))
    .await
}

/// What a client got, body as bytes.
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn job_id(&self) -> String {
        assert_eq!(
            self.status,
            202,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["job_id"].as_str().unwrap().to_owned()
    }
}

async fn send(
    gw: &RunningGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.addr));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = support::client()
        .request(req.body(Full::new(Bytes::from_static(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

async fn upload(gw: &RunningGateway, headers: &[(&str, &str)]) -> Got {
    send(
        gw,
        "POST",
        "/optimize/img?size=2",
        headers,
        b"\x89PNG\r\n\x1a\n\0",
    )
    .await
}

async fn poll(gw: &RunningGateway, id: &str, headers: &[(&str, &str)]) -> Got {
    send(gw, "GET", &format!("/jobs/{id}"), headers, b"").await
}

/// The id of a job that was never accepted, as fresh as a real one.
fn unknown_id() -> String {
    JobId::new(now()).to_string()
}

fn cleanup(queue: &rempart_gateway::queue::topology::QueueNames) -> Cleanup {
    Cleanup {
        names: queue.clone(),
        max_attempts: MAX_ATTEMPTS,
    }
}

/// An upstream that answers 503 to everything: the 5xx path. (A closed
/// port would do too, but another test may bind it meanwhile.)
async fn failing() -> SocketAddr {
    support::upstream(|_| async { support::text(503, "overloaded") }).await
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    job_id: Option<String>,
    idempotency_key: Option<String>,
    body: Bytes,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gets_202_and_the_job_completes_once_it_is_back() {
    let names = unique_names("gw-recovers");
    let _cleanup = cleanup(&names);
    let (held, down) = support::held_port();
    let gw = gateway(down, AMQP, &names.work).await;

    let me = [
        ("authorization", "Bearer alice"),
        ("idempotency-key", "img-1"),
    ];
    let got = upload(&gw, &me).await;
    let id = got.job_id();
    assert_eq!(got.headers["location"], format!("/jobs/{id}").as_str());
    assert_eq!(got.json()["status"], "queued");
    // The worker tries while the optimizer is down, and waits to try again.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = poll(&gw, &id, &me).await;
        assert_eq!(waiting.status, 200);
        let state = waiting.json();
        assert!(
            matches!(state["status"].as_str(), Some("queued" | "retrying")),
            "{state}"
        );
        if state["status"] == "retrying" {
            break;
        }
        assert!(Instant::now() < until, "never retried: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The optimizer comes back on its address.
    drop(held);
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = Arc::clone(&seen);
    support::upstream_at(down, move |req: Request<Bytes>| {
        let h = req.headers();
        let text = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_owned());
        log.lock().unwrap().push(Seen {
            job_id: text("x-job-id"),
            idempotency_key: text("idempotency-key"),
            body: req.body().clone(),
        });
        async {
            let mut r = support::text(201, Bytes::from_static(b"RIFF\0\xffWEBP\r\n"));
            r.headers_mut()
                .insert("content-type", "image/webp".parse().unwrap());
            r
        }
    })
    .await;

    let until = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let got = poll(&gw, &id, &me).await;
        if got.headers.get("x-job-status").is_some() {
            break got;
        }
        assert!(Instant::now() < until, "never done: {}", got.json());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status, 201);
    assert_eq!(done.headers["x-job-status"], "done");
    assert_eq!(done.headers["content-type"], "image/webp");
    assert_eq!(&done.body[..], b"RIFF\0\xffWEBP\r\n", "byte for byte");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].job_id.as_deref(), Some(id.as_str()));
    assert_eq!(seen[0].idempotency_key.as_deref(), Some("img-1"));
    assert_eq!(&seen[0].body[..], b"\x89PNG\r\n\x1a\n\0");

    let metrics = support::get(
        &support::client(),
        format!("http://{}/metrics", gw.admin_addr),
    )
    .await
    .body;
    let value = |name: &str| -> f64 {
        let line = format!("{name}{{service=\"optimizer\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("jobs_queued_total"), 1.0);
    assert_eq!(value("jobs_completed_total"), 1.0);
    assert!(value("jobs_retried_total") >= 1.0);
    assert_eq!(value("jobs_dead_lettered_total"), 0.0);
    assert_eq!(value("job_completion_seconds_count"), 1.0);
    let waited = value("job_completion_seconds_sum");
    assert!(waited > 0.0 && waited < 60.0, "202 to done took {waited} s");
    // Every queue is read at the scrape, and all are empty once it is done.
    let depths: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("jobs_queue_depth{") && l.contains("service=\"optimizer\""))
        .collect();
    assert!(
        depths
            .iter()
            .any(|l| l.contains(&format!("queue=\"{}\"", names.work))),
        "{metrics}"
    );
    assert!(
        depths
            .iter()
            .any(|l| l.contains(&format!("queue=\"{}\"", names.dead))),
        "{metrics}"
    );
    assert!(depths.iter().all(|l| l.ends_with(" 0")), "{depths:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_gives_the_degraded_503_never_a_202() {
    let names = unique_names("gw-nobroker");
    let broker = support::closed_port();
    let amqp = format!("amqp://guest:guest@{broker}/%2f");
    let gw = gateway(failing().await, &amqp, &names.work).await;

    for i in 0..3 {
        let key = format!("k-{i}");
        let got = upload(&gw, &[("idempotency-key", key.as_str())]).await;
        assert_eq!(got.status, 503, "{:?}", String::from_utf8_lossy(&got.body));
        assert_eq!(got.headers["x-degraded-mode"], "true");
        assert_eq!(got.json()["error"], "upstream_unavailable");
        assert!(got.headers.get("location").is_none());
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_is_one_job_per_client_never_shared_between_clients() {
    let names = unique_names("gw-keys");
    let _cleanup = cleanup(&names);
    let gw = gateway(failing().await, AMQP, &names.work).await;

    let alice = [
        ("authorization", "Bearer alice"),
        ("idempotency-key", "k-1"),
    ];
    let bob = [("authorization", "Bearer bob"), ("idempotency-key", "k-1")];
    let first = upload(&gw, &alice).await.job_id();
    let again = upload(&gw, &alice).await.job_id();
    assert_eq!(first, again, "the same client's retry is the same job");
    let theirs = upload(&gw, &bob).await.job_id();
    assert_ne!(theirs, first, "another client's same key is another job");

    // Without credentials the address is the owner: same address, same job.
    let anon = [("idempotency-key", "k-2")];
    assert_eq!(
        upload(&gw, &anon).await.job_id(),
        upload(&gw, &anon).await.job_id()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_polling_a_job_gets_what_an_unknown_id_gets() {
    let names = unique_names("gw-poll");
    let _cleanup = cleanup(&names);
    let gw = gateway(failing().await, AMQP, &names.work).await;

    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let id = upload(&gw, &alice).await.job_id();
    assert_eq!(poll(&gw, &id, &alice).await.status, 200);

    let stolen = poll(&gw, &id, &bob).await;
    let unknown = poll(&gw, &unknown_id(), &bob).await;
    assert_eq!(stolen.status, 404);
    assert_eq!(
        (stolen.status, &stolen.body),
        (unknown.status, &unknown.body)
    );
    // Nor does a cookie-less, token-less client from the same address see it.
    assert_eq!(poll(&gw, &id, &[]).await.status, 404);
    gw.shutdown().await;
}

/// A browser's other cookies change between its upload and its poll
/// (analytics, CSRF); with `owner_cookies` only the session says whose job
/// it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_owner_cookies_a_changed_analytics_cookie_still_reads_its_job() {
    let names = unique_names("gw-cookies");
    let _cleanup = cleanup(&names);
    let gw = gateway_with(
        failing().await,
        AMQP,
        &names.work,
        r#", worker = false, owner_cookies = ["session"]"#,
    )
    .await;
    let id = upload(&gw, &[("cookie", "session=alice; _ga=GA1.1")])
        .await
        .job_id();
    let later = poll(&gw, &id, &[("cookie", "_ga=GA1.2; session=alice")]).await;
    assert_eq!(later.status, 200, "{:?}", later.body);
    assert_eq!(later.json()["status"], "queued");
    // Another session, or none, is a stranger.
    assert_eq!(
        poll(&gw, &id, &[("cookie", "session=bob; _ga=GA1.1")])
            .await
            .status,
        404
    );
    assert_eq!(poll(&gw, &id, &[("cookie", "_ga=GA1.1")]).await.status, 404);
    gw.shutdown().await;

    // Without `owner_cookies`, the whole Cookie header is the credential.
    let names = unique_names("gw-allcookies");
    let _cleanup = cleanup(&names);
    let gw = gateway_with(failing().await, AMQP, &names.work, ", worker = false").await;
    let id = upload(&gw, &[("cookie", "session=alice; _ga=GA1.1")])
        .await
        .job_id();
    assert_eq!(
        poll(&gw, &id, &[("cookie", "session=alice; _ga=GA1.1")])
            .await
            .status,
        200
    );
    assert_eq!(
        poll(&gw, &id, &[("cookie", "session=alice; _ga=GA1.2")])
            .await
            .status,
        404
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_defers_and_the_worker_takes_nothing_until_it_closes() {
    let names = unique_names("gw-open");
    let _cleanup = cleanup(&names);
    let calls = Arc::new(Mutex::new(0u32));
    let counted = Arc::clone(&calls);
    let up = support::upstream(move |_| {
        *counted.lock().unwrap() += 1;
        async { support::text(200, "optimized") }
    })
    .await;
    let gw = gateway(up, AMQP, &names.work).await;
    let breaker = gw.gateway().services()[0].breaker.clone();
    breaker.force_open();

    let me = [("authorization", "Bearer alice")];
    let id = upload(&gw, &me).await.job_id();
    // The worker takes no delivery while the circuit is open: the job waits
    // in the work queue, ready, with no consumer holding it, for longer
    // than every attempt's backoff together (10 attempts, at most 400 ms
    // each). Never called, never re-published, never dead-lettered.
    wait_held(&names.work, 1).await;
    let outage = Instant::now() + Duration::from_secs(5);
    while Instant::now() < outage {
        let got = poll(&gw, &id, &me).await;
        assert!(
            got.headers.get("x-job-status").is_none(),
            "the job was replayed while the circuit was open"
        );
        let got = got.json();
        assert_eq!(got["status"], "queued", "{got}");
        assert_eq!(got["attempt"], 1, "{got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queue_state(&names.work).await, (1, 0), "held, not taken");
    for n in 2..=MAX_ATTEMPTS {
        assert_eq!(queue_state(&names.delay(n)).await.0, 0, "delay queue {n}");
    }
    assert_eq!(*calls.lock().unwrap(), 0, "nothing was sent while open");

    breaker.reset();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got = poll(&gw, &id, &me).await;
        if got.headers.get("x-job-status").is_some() {
            assert_eq!((got.status, &got.body[..]), (200, &b"optimized"[..]));
            break;
        }
        assert!(Instant::now() < until, "never done: {}", got.json());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*calls.lock().unwrap(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_lets_the_worker_finish_the_job_in_hand_and_ack_it() {
    let names = unique_names("gw-drain");
    let _cleanup = cleanup(&names);
    // The client's request fails (deferred); the replay takes a while.
    let calls = Arc::new(Mutex::new(0u32));
    let replay_started = Arc::new(tokio::sync::Notify::new());
    let replay_ended = Arc::new(Mutex::new(false));
    let (c, started, ended) = (
        Arc::clone(&calls),
        Arc::clone(&replay_started),
        Arc::clone(&replay_ended),
    );
    let up = support::upstream(move |_| {
        let n = {
            let mut n = c.lock().unwrap();
            *n += 1;
            *n
        };
        let (started, ended) = (Arc::clone(&started), Arc::clone(&ended));
        async move {
            if n == 1 {
                return support::text(503, "busy");
            }
            started.notify_one();
            tokio::time::sleep(Duration::from_millis(400)).await;
            *ended.lock().unwrap() = true;
            support::text(200, "late but done")
        }
    })
    .await;
    let gw = gateway(up, AMQP, &names.work).await;
    upload(&gw, &[]).await.job_id();
    tokio::time::timeout(Duration::from_secs(20), replay_started.notified())
        .await
        .expect("the worker replayed the job");

    gw.shutdown().await;
    assert!(
        *replay_ended.lock().unwrap(),
        "shutdown returned before the replay in hand finished"
    );
    // Acked, not handed back: nothing is left for a redelivery.
    let conn = rempart_gateway::queue::topology::connect(AMQP, support::rabbit::T)
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let left = ch
        .queue_declare(
            names.work.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(left.message_count(), 0);
    assert_eq!(*calls.lock().unwrap(), 2, "one request, one replay");
}

/// `worker = false`: the gateway defers and answers polls, but replays
/// nothing itself; the job waits in the work queue for a `rempart worker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_its_worker_defers_and_leaves_the_job_queued() {
    let names = unique_names("gw-noworker");
    let _cleanup = cleanup(&names);
    let gw = gateway_with(failing().await, AMQP, &names.work, ", worker = false").await;
    let me = [("authorization", "Bearer alice")];
    let got = upload(&gw, &me).await;
    assert_eq!(got.status, 202);
    let id = got.job_id();
    // Longer than the first backoff (100 ms) many times over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        queue_state(&names.work).await,
        (1, 0),
        "no consumer took it"
    );
    let state = poll(&gw, &id, &me).await.json();
    assert_eq!(
        (&state["status"], &state["attempt"]),
        (&"queued".into(), &1.into()),
        "{state}"
    );
    gw.shutdown().await;
}
