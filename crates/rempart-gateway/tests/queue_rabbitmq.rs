//! The deferred-job worker against a real RabbitMQ on 127.0.0.1:5672
//! (guest/guest). Each test uses queues of its own and deletes them.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rempart::clock::UnixClock;
use rempart_gateway::queue::wall_time;
use tokio::time::Instant;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Channel, Connection};
use rempart_gateway::queue::decision::{
    ATTEMPT_HEADER, JobState, Readiness, ReplayOutcome, RetryPlan, StoredAnswer,
};
use rempart_gateway::queue::job::{Job, JobId};
use rempart_gateway::queue::publish::{DEAD_REASON_HEADER, Publisher, header_int, header_text};
use rempart_gateway::queue::results::{MemoryResults, ResultStore};
use rempart_gateway::queue::topology::{self, QueueNames};
use rempart_gateway::queue::worker::{Replayer, Worker, WorkerCounts, WorkerSettings};
use support::rabbit::{AMQP, Cleanup, T, queue_state, unique_names, wait_held};
use tokio::sync::{Notify, oneshot};

const MAX_ATTEMPTS: u32 = 5;

fn now() -> SystemTime {
    wall_time(&UnixClock::new())
}

fn names(test: &str) -> QueueNames {
    unique_names(test)
}

fn settings(names: &QueueNames) -> WorkerSettings {
    WorkerSettings {
        // A killed worker's job waits this long before another takes it.
        run_lease: Duration::from_secs(2),
        names: names.clone(),
        plan: RetryPlan::exponential(
            MAX_ATTEMPTS,
            Duration::from_millis(50),
            Duration::from_millis(400),
        )
        .unwrap(),
        prefetch: 8,
        hold_check: Duration::from_millis(50),
        broker_timeout: T,
        clock: Arc::new(UnixClock::new()),
        metrics: Default::default(),
    }
}

/// One replay as the upstream saw it.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    attempt: u32,
    id: JobId,
    idempotency_key: Option<String>,
}

type Script = dyn Fn(u32) -> ReplayOutcome + Send + Sync;

/// An upstream answering from a script by attempt, recording each call.
struct Upstream {
    calls: Mutex<Vec<Call>>,
    script: Box<Script>,
    pause: Duration,
    started: Notify,
    /// Whether it would refuse calls now (its breaker open, say).
    held: AtomicBool,
}

impl Upstream {
    fn new(script: impl Fn(u32) -> ReplayOutcome + Send + Sync + 'static) -> Arc<Upstream> {
        Arc::new(Upstream {
            calls: Mutex::new(Vec::new()),
            script: Box::new(script),
            pause: Duration::ZERO,
            started: Notify::new(),
            held: AtomicBool::new(false),
        })
    }

    /// An upstream answering `body` after `pause` (an hour: it never does
    /// within a test, so a worker can be killed mid-job).
    fn slow(pause: Duration, body: &'static str) -> Arc<Upstream> {
        Arc::new(Upstream {
            calls: Mutex::new(Vec::new()),
            script: Box::new(move |_| ok(body)),
            pause,
            started: Notify::new(),
            held: AtomicBool::new(false),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Replayer for Upstream {
    async fn replay(&self, job: &Job, attempt: u32) -> ReplayOutcome {
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            attempt,
            id: job.id,
            idempotency_key: job.idempotency_key.clone(),
        });
        self.started.notify_one();
        tokio::time::sleep(self.pause).await;
        (self.script)(attempt)
    }

    fn readiness(&self) -> Readiness {
        if self.held.load(Ordering::SeqCst) {
            Readiness::Held("the circuit is open")
        } else {
            Readiness::Ready
        }
    }
}

fn ok(body: &str) -> ReplayOutcome {
    ReplayOutcome::Answered(StoredAnswer {
        status: 200,
        content_type: Some("application/json".into()),
        body: body.as_bytes().to_vec(),
    })
}

fn job(key: &str) -> Job {
    let mut headers = http::HeaderMap::new();
    headers.insert("idempotency-key", key.parse().unwrap());
    headers.insert("content-type", "image/png".parse().unwrap());
    Job::capture(
        JobId::new(now()),
        &http::Method::POST,
        &"/optimize?q=1".parse().unwrap(),
        &headers,
        b"\x89PNG".to_vec(),
    )
    .unwrap()
}

/// The owner of a client at `ip` that sends no credentials.
fn owner(ip: &str) -> rempart_gateway::queue::owner::Owner {
    rempart_gateway::queue::owner::Owner::of(&http::HeaderMap::new(), ip.parse().unwrap())
}

/// A running worker and the way to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<WorkerCounts>,
}

async fn start(names: &QueueNames, upstream: Arc<Upstream>, store: Arc<MemoryResults>) -> Running {
    let worker = Worker::connect(AMQP, settings(names), upstream, store)
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (guest/guest)");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("the worker ran")
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> WorkerCounts {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the worker drains")
            .unwrap()
    }
}

async fn client(names: &QueueNames) -> (Cleanup, Connection, Channel, Publisher) {
    let cleanup = Cleanup {
        names: names.clone(),
        max_attempts: MAX_ATTEMPTS,
    };
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology::declare(&ch, names, MAX_ATTEMPTS, T)
        .await
        .unwrap();
    let p = Publisher::open(&conn, names.clone(), T).await.unwrap();
    (cleanup, conn, ch, p)
}

/// Waits up to 20 s for a message in the dead-letter queue.
async fn dead_letter(ch: &Channel, names: &QueueNames) -> lapin::message::BasicGetMessage {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ch
            .basic_get(names.dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if let Some(m) = got {
            return m;
        }
        assert!(Instant::now() < until, "nothing reached {}", names.dead);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn final_state(store: &MemoryResults, id: JobId) -> JobState {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = store.get(id, now()).await.unwrap()
            && s.is_final()
        {
            return s;
        }
        assert!(Instant::now() < until, "job {id} never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_forever_is_dead_lettered_after_exactly_max_attempts_within_jitter_bounds() {
    let names = names("forever");
    let (_cleanup, _conn, ch, publisher) = client(&names).await;
    let upstream = Upstream::new(|_| ReplayOutcome::Failed("503 from optimizer".into()));
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let worker = start(&names, upstream.clone(), store.clone()).await;

    let j = job("k-forever");
    publisher.submit(&j).await.unwrap();
    let dead = dead_letter(&ch, &names).await;
    // Long enough for a sixth attempt to show up if the count were wrong.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let counts = worker.stop().await;

    let calls = upstream.calls();
    let attempts: Vec<u32> = calls.iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5], "{calls:?}");
    assert_eq!((counts.retried, counts.dead), (4, 1));
    let plan = settings(&names).plan;
    // Loaded CI boxes add latency; a wait can never be shorter than d/2.
    let slack = Duration::from_millis(400);
    for pair in calls.windows(2) {
        let waited = pair[1].at - pair[0].at;
        let (lo, hi) = plan.delay_bounds(pair[0].attempt);
        assert!(
            waited >= lo && waited <= hi + slack,
            "attempt {} came {waited:?} after the previous one, outside [{lo:?}, {hi:?}] (+{slack:?})",
            pair[1].attempt
        );
    }
    let props = &dead.delivery.properties;
    assert_eq!(header_int(props, ATTEMPT_HEADER), Some(5));
    let reason = header_text(props, DEAD_REASON_HEADER).unwrap();
    assert!(
        reason.contains("503 from optimizer") && reason.contains("5 attempts"),
        "{reason}"
    );
    assert_eq!(
        Job::decode(&dead.delivery.data).unwrap(),
        j,
        "the job is kept whole"
    );
    assert!(matches!(
        final_state(&store, j.id).await,
        JobState::Dead { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_then_succeeds_completes_with_its_result_stored_once() {
    let names = names("recovers");
    let (_cleanup, _conn, ch, publisher) = client(&names).await;
    let upstream = Upstream::new(|attempt| {
        if attempt < 3 {
            ReplayOutcome::Failed("connection refused".into())
        } else {
            ok(&format!("{{\"optimized_by_attempt\":{attempt}}}"))
        }
    });
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let worker = start(&names, upstream.clone(), store.clone()).await;

    let j = job("k-recovers");
    publisher.submit(&j).await.unwrap();
    let state = final_state(&store, j.id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = worker.stop().await;

    let JobState::Done(answer) = state else {
        panic!("{state:?}")
    };
    assert_eq!(answer.body, b"{\"optimized_by_attempt\":3}");
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(upstream.calls().len(), 3);
    assert_eq!((counts.done, counts.retried, counts.dead), (1, 2, 0));
    let dlq = ch
        .basic_get(names.dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(dlq.is_none(), "a completed job is not dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_lands_in_the_dead_letter_queue_at_once() {
    let names = names("poison");
    let (_cleanup, conn, ch, _publisher) = client(&names).await;
    let upstream = Upstream::new(|_| ok("never"));
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let worker = start(&names, upstream.clone(), store).await;

    let confirm_ch = conn.create_channel().await.unwrap();
    confirm_ch
        .basic_publish(
            "".into(),
            names.work.as_str().into(),
            BasicPublishOptions::default(),
            b"{\"not\": \"a job\"}",
            BasicProperties::default().with_message_id("garbage-1".into()),
        )
        .await
        .unwrap();
    let dead = dead_letter(&ch, &names).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = worker.stop().await;

    assert_eq!(
        dead.delivery.data, b"{\"not\": \"a job\"}",
        "kept byte for byte"
    );
    let reason = header_text(&dead.delivery.properties, DEAD_REASON_HEADER).unwrap();
    assert!(reason.starts_with("poison: "), "{reason}");
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("garbage-1")
    );
    assert!(upstream.calls().is_empty(), "poison is never replayed");
    assert_eq!((counts.poison, counts.retried), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_the_job_completes_once() {
    let names = names("killed");
    let (_cleanup, _conn, _ch, publisher) = client(&names).await;
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let stuck = Upstream::slow(Duration::from_secs(3600), "never");
    let first = start(&names, stuck.clone(), store.clone()).await;

    let j = job("k-killed");
    publisher.submit(&j).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stuck.started.notified())
        .await
        .expect("the first worker took the job");
    // Killed without an ack: its connection closes and the broker redelivers.
    first.task.abort();
    let _ = first.task.await;

    let healthy = Upstream::new(|_| ok("{\"done\":true}"));
    let second = start(&names, healthy.clone(), store.clone()).await;
    let state = final_state(&store, j.id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = second.stop().await;

    assert!(matches!(state, JobState::Done(ref a) if a.body == b"{\"done\":true}"));
    let calls = healthy.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].id, j.id, "the replay carries the same job id");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("k-killed"));
    assert_eq!(calls[0].attempt, 1, "a crash is not a failed attempt");
    assert_eq!((counts.done, counts.duplicates), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_drains_the_job_in_hand_before_returning() {
    let names = names("drain");
    let (_cleanup, _conn, ch, publisher) = client(&names).await;
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let upstream = Upstream::slow(Duration::from_millis(300), "{\"late\":true}");
    let worker = start(&names, upstream.clone(), store.clone()).await;

    let j = job("k-drain");
    publisher.submit(&j).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), upstream.started.notified())
        .await
        .expect("the worker took the job");
    let counts = worker.stop().await;

    assert_eq!(
        counts.done, 1,
        "the job in hand finished before the worker returned"
    );
    let stored = store.get(j.id, now()).await.unwrap();
    assert!(matches!(stored, Some(JobState::Done(ref a)) if a.body == b"{\"late\":true}"));
    let left = ch
        .basic_get(names.work.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(
        left.is_none(),
        "the finished job was acked, not left for a redelivery"
    );
}

/// The Redis store keeps the same promises as the memory one, across
/// connections (a gateway and a worker each have their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_results_keep_the_first_final_state_and_one_job_per_key() {
    use rempart_gateway::queue::redis_results::RedisResults;
    let prefix = format!(
        "rq-test:{}:{}:",
        std::process::id(),
        now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let connect = || {
        RedisResults::connect(
            "redis://127.0.0.1:6379",
            &prefix,
            Duration::from_secs(60),
            T,
        )
    };
    let (a, b) = (
        connect().await.expect("Redis on 6379"),
        connect().await.unwrap(),
    );
    let id = JobId::new(now());
    let first = JobState::Done(StoredAnswer {
        status: 200,
        content_type: Some("image/png".into()),
        body: b"\x89PNG\0".to_vec(),
    });
    a.report(id, JobState::Queued, now()).await.unwrap();
    assert_eq!(b.get(id, now()).await.unwrap(), Some(JobState::Queued));
    assert_eq!(a.report(id, first.clone(), now()).await.unwrap(), first);
    let late = JobState::Retrying {
        attempt: 2,
        error: "late".into(),
    };
    assert_eq!(b.report(id, late, now()).await.unwrap(), first);
    assert_eq!(b.get(id, now()).await.unwrap(), Some(first));
    assert_eq!(a.get(JobId::new(now()), now()).await.unwrap(), None);

    let (j1, j2) = (JobId::new(now()), JobId::new(now()));
    assert_eq!(a.job_for_key("k", j1, now()).await.unwrap(), j1);
    assert_eq!(b.job_for_key("k", j2, now()).await.unwrap(), j1);
    b.forget_key("k", j2).await.unwrap();
    assert_eq!(
        a.job_for_key("k", j2, now()).await.unwrap(),
        j1,
        "only its own job frees a key"
    );
    b.forget_key("k", j1).await.unwrap();
    assert_eq!(a.job_for_key("k", j2, now()).await.unwrap(), j2);

    let me = owner("10.0.0.1");
    a.own(id, me, now()).await.unwrap();
    assert_eq!(b.owner(id, now()).await.unwrap(), Some(me));
    assert_eq!(b.owner(j2, now()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_queues_one_job_and_an_unconfirmed_one_is_not_accepted() {
    use rempart_gateway::queue::defer::{Deferred, Deferrer};
    let names = names("defer");
    let (_cleanup, _conn, ch, publisher) = client(&names).await;
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let deferrer = Deferrer::new(publisher, store.clone(), Arc::new(UnixClock::new()));
    let me = owner("10.0.0.1");

    let first = job("k-same");
    let again = job("k-same");
    assert_eq!(
        deferrer.defer(&first, &me).await.unwrap(),
        Deferred::Queued(first.id)
    );
    assert_eq!(
        deferrer.defer(&again, &me).await.unwrap(),
        Deferred::Existing(first.id)
    );
    assert_eq!(
        store.get(first.id, now()).await.unwrap(),
        Some(JobState::Queued)
    );
    let queued = ch
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
    assert_eq!(queued.message_count(), 1, "one message for one key");

    // Another client sending the same key gets a job of its own, never the
    // first client's.
    let theirs = job("k-same");
    let other = owner("10.0.0.2");
    assert_eq!(
        deferrer.defer(&theirs, &other).await.unwrap(),
        Deferred::Queued(theirs.id)
    );
    assert_eq!(store.owner(first.id, now()).await.unwrap(), Some(me));
    assert_eq!(store.owner(theirs.id, now()).await.unwrap(), Some(other));

    // The broker cannot take it (the queue is gone): no 202, and the key is
    // free for the client's retry.
    ch.queue_delete(names.work.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let lost = job("k-retry");
    assert!(deferrer.defer(&lost, &me).await.is_err());
    topology::declare(&ch, &names, MAX_ATTEMPTS, T)
        .await
        .unwrap();
    let retry = job("k-retry");
    assert_eq!(
        deferrer.defer(&retry, &me).await.unwrap(),
        Deferred::Queued(retry.id)
    );
}

/// Seed 002 let two deliveries of one job both run. Two copies exist after
/// a crash between re-publishing a job and acking it; delivered together,
/// only one calls the upstream, and the other waits and finds it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_of_one_job_never_both_call_the_upstream() {
    let names = names("twice");
    let (_cleanup, _conn, _ch, publisher) = client(&names).await;
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let upstream = Upstream::slow(Duration::from_millis(300), "once");
    let j = job("k-twice");
    publisher.submit(&j).await.unwrap();
    publisher.submit(&j).await.unwrap();
    let worker = start(&names, upstream.clone(), store.clone()).await;
    assert!(matches!(final_state(&store, j.id).await, JobState::Done(_)));
    // Long enough for the second copy to come back from its wait and be
    // seen as a duplicate of the finished job.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let counts = worker.stop().await;
    assert_eq!(upstream.calls().len(), 1, "{:?}", upstream.calls());
    assert_eq!(counts.done, 1);
    assert!(counts.waited + counts.duplicates >= 1, "{counts:?}");
}

/// Stored but not acked before a crash: the redelivery is acked without a
/// second replay, so the upstream does not run a finished job twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_finished_job_is_not_replayed() {
    let names = names("finished");
    let (_cleanup, _conn, ch, publisher) = client(&names).await;
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let j = job("k-finished");
    let done = JobState::Done(StoredAnswer {
        status: 200,
        content_type: None,
        body: b"first".to_vec(),
    });
    store.report(j.id, done.clone(), now()).await.unwrap();
    let upstream = Upstream::new(|_| ok("second"));
    let worker = start(&names, upstream.clone(), store.clone()).await;
    publisher.submit(&j).await.unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = ch
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
        if got.message_count() == 0 || Instant::now() > until {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut counts = worker.stop().await;
    assert_eq!(counts.duplicates, 1, "{counts:?}");
    counts.duplicates = 0;
    assert_eq!(counts, WorkerCounts::default(), "nothing else happened");
    assert!(upstream.calls().is_empty());
    assert_eq!(store.get(j.id, now()).await.unwrap(), Some(done));
}

/// Seed 002's operator story: a job dies after `max_attempts`, the listing
/// shows it without consuming it, the cause is fixed, `dlq requeue` puts it
/// back, and it completes; a poison message is listed but never put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_requeued_once_its_cause_is_fixed_completes_and_poison_stays_put() {
    use rempart_gateway::queue::dead_letters::{DeadLetters, Selection};
    use std::sync::atomic::{AtomicBool, Ordering};

    let names = names("requeue");
    let (_cleanup, _conn, ch, publisher) = client(&names).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let upstream = {
        let fixed = fixed.clone();
        Upstream::new(move |_| {
            if fixed.load(Ordering::SeqCst) {
                ok(r#"{"optimized":true}"#)
            } else {
                ReplayOutcome::Failed("503 from optimizer".into())
            }
        })
    };
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let worker = start(&names, upstream.clone(), store.clone()).await;
    let j = job("k-requeue");
    publisher.submit(&j).await.unwrap();
    assert!(matches!(
        final_state(&store, j.id).await,
        JobState::Dead { .. }
    ));
    ch.basic_publish(
        "".into(),
        names.dead.as_str().into(),
        BasicPublishOptions::default(),
        b"not a job",
        BasicProperties::default().with_message_id("poison-1".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let dlq = DeadLetters::open(AMQP, names.clone(), T).await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (letters, total) = dlq.list(10).await.unwrap();
        if total == 2 {
            break letters;
        }
        assert!(Instant::now() < until, "the DLQ holds {total}, not 2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = j.id.to_string();
    let dead = listed.iter().find(|l| l.job_id.as_deref() == Some(&id));
    let dead = dead.expect("the dead job is listed");
    assert_eq!(dead.attempts, MAX_ATTEMPTS);
    assert!(dead.readable);
    assert_eq!(dead.request.as_deref(), Some("POST /optimize"));
    let poison = listed
        .iter()
        .find(|l| l.job_id.as_deref() == Some("poison-1"));
    assert!(!poison.expect("the poison message is listed").readable);
    // Listing consumed nothing.
    assert_eq!(dlq.list(10).await.unwrap().1, 2);

    fixed.store(true, Ordering::SeqCst);
    let all = dlq.requeue(&Selection::All).await.unwrap();
    assert_eq!(all.requeued, std::slice::from_ref(&id));
    assert_eq!(all.unreadable, ["poison-1"]);
    let until = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(JobState::Done(a)) = store.get(j.id, now()).await.unwrap() {
            break a;
        }
        assert!(Instant::now() < until, "the requeued job never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer.body, br#"{"optimized":true}"#);
    let counts = worker.stop().await;
    assert_eq!(counts.done, 1);
    let attempts: Vec<u32> = upstream.calls().iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5, 1], "requeued at attempt 1");
    let (left, total) = dlq.list(10).await.unwrap();
    assert_eq!(total, 1, "only the poison message is left: {left:?}");
    assert_eq!(left[0].job_id.as_deref(), Some("poison-1"));
}

/// Redis reopens a dead job for a requeue, and never a done one, for every
/// gateway and worker sharing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_results_reopen_a_dead_job_but_never_a_done_one() {
    use rempart_gateway::queue::redis_results::RedisResults;
    let prefix = format!(
        "rq-revive:{}:{}:",
        std::process::id(),
        now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let s = RedisResults::connect(
        "redis://127.0.0.1:6379",
        &prefix,
        Duration::from_secs(60),
        T,
    )
    .await
    .expect("Redis on 6379");
    let (dead, finished) = (JobId::new(now()), JobId::new(now()));
    let error = "503 five times".to_string();
    s.report(dead, JobState::Dead { error }, now())
        .await
        .unwrap();
    let answer = JobState::Done(StoredAnswer {
        status: 200,
        content_type: None,
        body: b"kept".to_vec(),
    });
    s.report(finished, answer.clone(), now()).await.unwrap();
    assert_eq!(s.revive(dead, now()).await.unwrap(), JobState::Queued);
    assert_eq!(s.get(dead, now()).await.unwrap(), Some(JobState::Queued));
    assert_eq!(s.revive(finished, now()).await.unwrap(), answer);
    assert_eq!(s.get(finished, now()).await.unwrap(), Some(answer));
}

/// While the service would not be called, the worker holds no job and
/// re-publishes nothing: the jobs wait, ready, in the work queue with no
/// consumer on it. Once it would be called, the worker consumes again and
/// every job completes, each with one call and no attempt spent waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_worker_takes_no_delivery_until_the_service_would_be_called() {
    let names = names("held");
    let (_cleanup, _conn, _ch, publisher) = client(&names).await;
    let upstream = Upstream::new(|_| ok("{\"optimized\":true}"));
    upstream.held.store(true, Ordering::SeqCst);
    let store = Arc::new(MemoryResults::new(Duration::from_secs(60)));
    let running = start(&names, upstream.clone(), store.clone()).await;

    let jobs: Vec<Job> = (0..3).map(|i| job(&format!("held-{i}"))).collect();
    for j in &jobs {
        publisher.submit(j).await.unwrap();
    }
    wait_held(&names.work, 3).await;
    // Held for many checks (50 ms apart): still nothing taken, nothing
    // called, nothing re-published to a delay queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue_state(&names.work).await, (3, 0));
    for n in 2..=MAX_ATTEMPTS {
        assert_eq!(queue_state(&names.delay(n)).await.0, 0, "delay queue {n}");
    }
    assert!(upstream.calls().is_empty(), "{:?}", upstream.calls());
    for j in &jobs {
        assert_eq!(store.get(j.id, now()).await.unwrap(), None, "untouched");
    }

    upstream.held.store(false, Ordering::SeqCst);
    for j in &jobs {
        assert!(matches!(final_state(&store, j.id).await, JobState::Done(_)));
    }
    let calls = upstream.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c.attempt == 1), "{calls:?}");
    let counts = running.stop().await;
    assert_eq!((counts.done, counts.waited, counts.retried), (3, 0, 0));
}
