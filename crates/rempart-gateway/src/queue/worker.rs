//! The consumer that replays deferred jobs.
//!
//! It never sleeps: a failed job is re-published to a delay queue and the
//! original acked at once. Every ack comes after the job's fate is safe
//! elsewhere (result stored, or message re-published with confirm), so a
//! crash at any point redelivers instead of losing.
//!
//! While the service would refuse a replay without calling it (breaker open,
//! bulkhead full), the worker takes no delivery at all: it cancels its
//! consumer, hands back what the broker had already sent, and consumes again
//! once the service would be called. A job waiting out an outage then stays
//! in the work queue, costing the broker nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use rempart::clock::Clock;
use rempart::rng::{Rng, SplitMix64};
use tokio::task::JoinSet;

use super::decision::{
    ATTEMPT_HEADER, Decision, JobState, REQUEUED_HEADER, Readiness, ReplayOutcome, RetryPlan,
    Triage, attempt_of, decide, triage,
};
use super::job::Job;
use super::publish::{Publisher, header_int};
use super::results::ResultStore;
use super::topology::{self, QueueNames};
use super::{BrokerError, deadline, wall_time};

/// Sends a job to its service; the gateway plugs its policies in here
/// (breaker, bulkhead, timeout), and tests a scripted upstream.
pub trait Replayer: Send + Sync + 'static {
    /// Replays `job` as attempt `attempt` (1-based).
    fn replay(&self, job: &Job, attempt: u32) -> impl Future<Output = ReplayOutcome> + Send;

    /// Whether the service would be called now; while it would not, the
    /// worker takes no delivery. The default: always.
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
}

impl<R: Replayer> Replayer for Arc<R> {
    fn replay(&self, job: &Job, attempt: u32) -> impl Future<Output = ReplayOutcome> + Send {
        (**self).replay(job, attempt)
    }

    fn readiness(&self) -> Readiness {
        (**self).readiness()
    }
}

/// How a worker consumes.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The service's queues.
    pub names: QueueNames,
    /// Attempts and backoff.
    pub plan: RetryPlan,
    /// Unacked deliveries held at once (also the replays in flight).
    pub prefetch: u16,
    /// The deadline on each broker operation.
    pub broker_timeout: Duration,
    /// How long a delivery holds the right to replay its job: above the
    /// replay's own deadline (the service's `timeout`), so only a worker
    /// that died holds it that long, and its job waits at most that.
    pub run_lease: Duration,
    /// How often a held worker asks whether the service would be called
    /// again (a breaker half-opening, a bulkhead slot freed).
    pub hold_check: Duration,
    /// Wall-clock time for result expiry (`UnixClock` in production).
    pub clock: Arc<dyn Clock>,
    /// Where completions, retries and dead letters are counted for
    /// `/metrics` (the default counts nowhere).
    pub metrics: crate::metrics::JobCounters,
}

/// What a worker did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Jobs whose answer was stored.
    pub done: u64,
    /// Failed replays re-published to a delay queue.
    pub retried: u64,
    /// Jobs re-published to wait, their attempt not spent: the service was
    /// not called (breaker open, bulkhead full), or another delivery of the
    /// same job was running.
    pub waited: u64,
    /// Jobs dead-lettered after their last attempt.
    pub dead: u64,
    /// Unreadable messages moved to the dead-letter queue.
    pub poison: u64,
    /// Redeliveries of jobs already final, acked without a replay.
    pub duplicates: u64,
    /// Deliveries handed back to the broker after an error of ours.
    pub requeued: u64,
}

#[derive(Debug, Default)]
struct Counters {
    done: AtomicU64,
    retried: AtomicU64,
    waited: AtomicU64,
    dead: AtomicU64,
    poison: AtomicU64,
    duplicates: AtomicU64,
    requeued: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerCounts {
            done: g(&self.done),
            retried: g(&self.retried),
            waited: g(&self.waited),
            dead: g(&self.dead),
            poison: g(&self.poison),
            duplicates: g(&self.duplicates),
            requeued: g(&self.requeued),
        }
    }
}

struct Shared<R, S> {
    replayer: R,
    store: S,
    publisher: Publisher,
    settings: WorkerSettings,
    rng: Mutex<SplitMix64>,
    counts: Counters,
}

/// A worker on one service's queues.
pub struct Worker<R, S> {
    // Kept so the connection lives as long as the worker; dropping the worker
    // closes it and the broker hands unacked jobs to another.
    _conn: Connection,
    channel: Channel,
    shared: Arc<Shared<R, S>>,
}

impl<R, S> std::fmt::Debug for Worker<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.shared.settings.names.work)
            .field("counts", &self.shared.counts.snapshot())
            .finish_non_exhaustive()
    }
}

impl<R: Replayer, S: ResultStore> Worker<R, S> {
    /// Connects to `url`, declares the queues and sets the prefetch.
    pub async fn connect(
        url: &str,
        settings: WorkerSettings,
        replayer: R,
        store: S,
    ) -> Result<Worker<R, S>, BrokerError> {
        let t = settings.broker_timeout;
        let conn = topology::connect(url, t).await?;
        let channel = deadline(t, "opening a channel", conn.create_channel()).await?;
        topology::declare(&channel, &settings.names, settings.plan.max_attempts, t).await?;
        deadline(
            t,
            "setting the prefetch",
            channel.basic_qos(settings.prefetch.max(1), BasicQosOptions::default()),
        )
        .await?;
        let publisher = Publisher::open(&conn, settings.names.clone(), t).await?;
        Ok(Worker {
            _conn: conn,
            channel,
            shared: Arc::new(Shared {
                replayer,
                store,
                publisher,
                settings,
                rng: Mutex::new(SplitMix64::from_entropy()),
                counts: Counters::default(),
            }),
        })
    }

    /// Consumes until `shutdown` resolves, then drains: no new deliveries,
    /// the jobs in hand finish, and the rest go back to the broker when the
    /// channel closes. While the service would not be called, it holds:
    /// no consumer, no delivery. Returns what it did.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<WorkerCounts, BrokerError> {
        let shared = &self.shared;
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        let ended = 'run: loop {
            let mut consumer = match self.consume().await {
                Ok(c) => c,
                Err(e) => break 'run Err(e),
            };
            let (held, why) = loop {
                tokio::select! {
                    _ = &mut shutdown => {
                        // Stop deliveries first so draining ends; those
                        // already buffered return when the channel closes.
                        drop(consumer);
                        break 'run Ok(());
                    }
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => match shared.replayer.readiness() {
                            Readiness::Ready => {
                                tasks.spawn(handle(Arc::clone(shared), delivery));
                            }
                            Readiness::Held(why) => break (delivery, why),
                        },
                        Some(Err(e)) => break 'run Err(self.lost(&e.to_string())),
                        None => break 'run Err(self.lost("the broker ended the consumer")),
                    },
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            };
            tracing::info!(queue = %shared.settings.names.work, why, "job worker holding: the service would not be called");
            if let Err(e) = self.hand_back(consumer, held).await {
                break 'run Err(e);
            }
            loop {
                tokio::select! {
                    _ = &mut shutdown => break 'run Ok(()),
                    _ = tokio::time::sleep(shared.settings.hold_check) => {
                        if shared.replayer.readiness() == Readiness::Ready {
                            tracing::info!(queue = %shared.settings.names.work, "job worker consuming again");
                            break;
                        }
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
        };
        while tasks.join_next().await.is_some() {}
        let _ = deadline(
            shared.settings.broker_timeout,
            "closing the channel",
            self.channel.close(200, "drained".into()),
        )
        .await;
        ended.map(|()| shared.counts.snapshot())
    }

    async fn consume(&self) -> Result<Consumer, BrokerError> {
        let work = &self.shared.settings.names.work;
        deadline(
            self.shared.settings.broker_timeout,
            &format!("consuming from {work}"),
            self.channel.basic_consume(
                work.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }

    fn lost(&self, why: &str) -> BrokerError {
        BrokerError(format!(
            "consuming from {}: {why}",
            self.shared.settings.names.work
        ))
    }

    /// Stops `consumer` and gives `held`, and every delivery the broker had
    /// already sent, back to the queue untouched (their attempts unspent):
    /// a held worker keeps no job from another worker.
    async fn hand_back(&self, mut consumer: Consumer, held: Delivery) -> Result<(), BrokerError> {
        let t = self.shared.settings.broker_timeout;
        let cancel = self
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default());
        deadline(t, "cancelling the consumer", cancel).await?;
        // Once cancelled, the consumer yields what was in flight, then ends.
        let mut returned = vec![held];
        loop {
            match tokio::time::timeout(t, consumer.next()).await {
                Ok(Some(Ok(d))) => returned.push(d),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(self.lost(&e.to_string())),
                Err(_) => return Err(self.lost("the consumer's cancel never ended it")),
            }
        }
        for d in returned {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            deadline(t, "handing a job back", d.acker.nack(requeue)).await?;
        }
        Ok(())
    }
}

/// One delivery, start to ack. On an error of ours it is nacked back to the
/// queue: replayed again rather than lost.
async fn handle<R: Replayer, S: ResultStore>(shared: Arc<Shared<R, S>>, delivery: Delivery) {
    let t = shared.settings.broker_timeout;
    let attempt = attempt_of(header_int(&delivery.properties, ATTEMPT_HEADER));
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string());
    let settled = match settle(&shared, &delivery, attempt, message_id.as_deref()).await {
        Ok(()) => deadline(t, "acking", delivery.acker.ack(BasicAckOptions::default())).await,
        Err(e) => {
            tracing::warn!(job = ?message_id, attempt, error = %e, "job handed back to the queue");
            shared.counts.requeued.fetch_add(1, Ordering::Relaxed);
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            deadline(t, "nacking", delivery.acker.nack(requeue)).await
        }
    };
    if let Err(e) = settled {
        // The channel is gone: the broker redelivers the message itself.
        tracing::warn!(job = ?message_id, error = %e, "delivery not settled; it will be redelivered");
    }
}

/// Decides the delivery's fate and makes it safe; `Ok` means it can be acked.
async fn settle<R: Replayer, S: ResultStore>(
    shared: &Shared<R, S>,
    delivery: &Delivery,
    attempt: u32,
    message_id: Option<&str>,
) -> Result<(), String> {
    let now = || wall_time(&*shared.settings.clock);
    let job = match Job::decode(&delivery.data) {
        Ok(job) => job,
        Err(reason) => {
            let reason = format!("poison: {reason}");
            tracing::warn!(job = ?message_id, %reason, "unreadable message dead-lettered");
            let p = &shared.publisher;
            p.dead(&delivery.data, message_id, attempt, &reason)
                .await
                .map_err(|e| e.to_string())?;
            shared.counts.poison.fetch_add(1, Ordering::Relaxed);
            shared.settings.metrics.dead_lettered.inc();
            return Ok(());
        }
    };
    let known = shared
        .store
        .get(job.id, now())
        .await
        .map_err(|e| e.to_string())?;
    let requeued = header_int(&delivery.properties, REQUEUED_HEADER).is_some();
    match triage(known.as_ref(), requeued) {
        Triage::Replay => {}
        // Stored but not acked before a crash: do not replay a finished job.
        Triage::Duplicate => {
            shared.counts.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Triage::Revive => {
            let kept = shared
                .store
                .revive(job.id, now())
                .await
                .map_err(|e| e.to_string())?;
            if kept.is_final() {
                shared.counts.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
    // Two deliveries of one job (a crash between re-publishing and acking
    // leaves two) must not both call the upstream: the one that finds the
    // run taken goes back to wait, its attempt unspent, and later finds the
    // job done (a duplicate) or free (its holder died: the lease ran out).
    let token = {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        format!("{}-{:016x}", std::process::id(), rng.next_u64())
    };
    let taken = shared
        .store
        .begin_run(job.id, &token, shared.settings.run_lease, now())
        .await
        .map_err(|e| e.to_string())?;
    if !taken {
        let plan = &shared.settings.plan;
        if plan.max_attempts <= 1 {
            return Err("another delivery of this job is running".into());
        }
        let delay = {
            let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
            plan.delay_after(attempt, &mut *rng)
        };
        let busy = "another delivery of this job was running";
        let id = job.id.to_string();
        shared
            .publisher
            .wait(
                &delivery.data,
                Some(&id),
                attempt,
                plan.max_attempts,
                delay,
                busy,
            )
            .await
            .map_err(|e| e.to_string())?;
        shared.counts.waited.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let ran = run(shared, &job, delivery, attempt).await;
    if let Err(e) = shared.store.end_run(job.id, &token).await {
        // Its lease runs out by itself.
        tracing::warn!(job = %job.id, error = %e, "job run not given back");
    }
    ran
}

/// Replays `job` (this delivery holds its run), then makes its fate safe.
async fn run<R: Replayer, S: ResultStore>(
    shared: &Shared<R, S>,
    job: &Job,
    delivery: &Delivery,
    attempt: u32,
) -> Result<(), String> {
    let now = || wall_time(&*shared.settings.clock);
    let outcome = shared.replayer.replay(job, attempt).await;
    let decision = {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        decide(&shared.settings.plan, attempt, outcome, &mut *rng)
    };
    let id = job.id.to_string();
    match decision {
        Decision::Done(answer) => {
            // The result must be stored before the ack: otherwise a crash
            // between the two loses it.
            let state = JobState::Done(answer);
            shared
                .store
                .report(job.id, state, now())
                .await
                .map_err(|e| e.to_string())?;
            shared.counts.done.fetch_add(1, Ordering::Relaxed);
            shared.settings.metrics.completed.inc();
            let waited = now()
                .duration_since(job.id.accepted_at())
                .unwrap_or_default();
            shared
                .settings
                .metrics
                .completion
                .observe(waited.as_secs_f64());
            return Ok(());
        }
        Decision::Retry {
            delay,
            attempt,
            error,
        } => {
            shared
                .publisher
                .delay(&delivery.data, Some(&id), attempt, delay, &error)
                .await
                .map_err(|e| e.to_string())?;
            shared.counts.retried.fetch_add(1, Ordering::Relaxed);
            shared.settings.metrics.retried.inc();
            record(shared, job, JobState::Retrying { attempt, error }).await;
        }
        Decision::Wait {
            delay,
            attempt,
            error,
        } => {
            let max = shared.settings.plan.max_attempts;
            shared
                .publisher
                .wait(&delivery.data, Some(&id), attempt, max, delay, &error)
                .await
                .map_err(|e| e.to_string())?;
            shared.counts.waited.fetch_add(1, Ordering::Relaxed);
            record(shared, job, JobState::Retrying { attempt, error }).await;
        }
        Decision::DeadLetter { reason } | Decision::Poison { reason } => {
            shared
                .publisher
                .dead(&delivery.data, Some(&id), attempt, &reason)
                .await
                .map_err(|e| e.to_string())?;
            shared.counts.dead.fetch_add(1, Ordering::Relaxed);
            shared.settings.metrics.dead_lettered.inc();
            record(shared, job, JobState::Dead { error: reason }).await;
        }
    }
    Ok(())
}

/// Records a state for polls once the message is safe in a delay or dead
/// queue: a failure here only leaves the poll behind, so it is logged.
async fn record<R: Replayer, S: ResultStore>(shared: &Shared<R, S>, job: &Job, state: JobState) {
    if let Err(e) = shared
        .store
        .report(job.id, state, wall_time(&*shared.settings.clock))
        .await
    {
        tracing::warn!(job = %job.id, error = %e, "job state not recorded");
    }
}
