//! One service's queue as the gateway runs it: the results store, and a
//! broker link made on first need and remade after a failure, so a gateway
//! started while RabbitMQ is down serves (with 503s where it would defer)
//! and defers again once the broker is back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lapin::Connection;
use rempart::clock::{Clock, UnixClock};
use tokio::sync::{Mutex, OnceCell};

use super::decision::{JobState, Poll, RetryPlan, poll};
use super::defer::{Deferred, Deferrer};
use super::job::{Job, JobId};
use super::owner::{Owner, visible_to};
use super::publish::Publisher;
use super::redis_results::RedisResults;
use super::results::{MemoryResults, ResultStore, StoreError};
use super::topology::{self, QueueNames};
use super::wall_time;
use super::worker::WorkerSettings;
use crate::config::{QueueConfig, ResultsBackend};

/// The deadline on each broker and store operation of the 202 path: past
/// it nothing is accepted and the client gets the degraded 503.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Replays a gateway's embedded worker runs at once per service.
const PREFETCH: u16 = 16;

/// How often a held worker looks whether its service would be called again:
/// a job waits at most this long after a breaker half-opens.
const HOLD_CHECK: Duration = Duration::from_millis(250);

/// The results store the config names, behind one type.
#[derive(Debug, Clone)]
pub enum Results {
    /// `results = "memory"`: this process only.
    Memory(Arc<MemoryResults>),
    /// `results = "redis"`: shared by gateways and workers.
    Redis(Box<RedisResults>),
}

impl ResultStore for Results {
    async fn get(&self, id: JobId, now: SystemTime) -> Result<Option<JobState>, StoreError> {
        match self {
            Results::Memory(s) => s.get(id, now).await,
            Results::Redis(s) => s.get(id, now).await,
        }
    }

    async fn report(
        &self,
        id: JobId,
        state: JobState,
        now: SystemTime,
    ) -> Result<JobState, StoreError> {
        match self {
            Results::Memory(s) => s.report(id, state, now).await,
            Results::Redis(s) => s.report(id, state, now).await,
        }
    }

    async fn revive(&self, id: JobId, now: SystemTime) -> Result<JobState, StoreError> {
        match self {
            Results::Memory(s) => s.revive(id, now).await,
            Results::Redis(s) => s.revive(id, now).await,
        }
    }

    async fn job_for_key(
        &self,
        key: &str,
        candidate: JobId,
        now: SystemTime,
    ) -> Result<JobId, StoreError> {
        match self {
            Results::Memory(s) => s.job_for_key(key, candidate, now).await,
            Results::Redis(s) => s.job_for_key(key, candidate, now).await,
        }
    }

    async fn forget_key(&self, key: &str, id: JobId) -> Result<(), StoreError> {
        match self {
            Results::Memory(s) => s.forget_key(key, id).await,
            Results::Redis(s) => s.forget_key(key, id).await,
        }
    }

    async fn begin_run(
        &self,
        id: JobId,
        token: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        match self {
            Results::Memory(s) => s.begin_run(id, token, lease, now).await,
            Results::Redis(s) => s.begin_run(id, token, lease, now).await,
        }
    }

    async fn end_run(&self, id: JobId, token: &str) -> Result<(), StoreError> {
        match self {
            Results::Memory(s) => s.end_run(id, token).await,
            Results::Redis(s) => s.end_run(id, token).await,
        }
    }

    async fn own(&self, id: JobId, owner: Owner, now: SystemTime) -> Result<(), StoreError> {
        match self {
            Results::Memory(s) => s.own(id, owner, now).await,
            Results::Redis(s) => s.own(id, owner, now).await,
        }
    }

    async fn owner(&self, id: JobId, now: SystemTime) -> Result<Option<Owner>, StoreError> {
        match self {
            Results::Memory(s) => s.owner(id, now).await,
            Results::Redis(s) => s.owner(id, now).await,
        }
    }
}

/// The broker connection and the confirming publisher on it.
struct Link {
    conn: Connection,
    deferrer: Arc<Deferrer<Results>>,
}

/// A service's queue: deferring requests and answering polls.
pub struct ServiceQueue {
    service: String,
    config: QueueConfig,
    redis_url: Option<String>,
    clock: Arc<dyn Clock>,
    store: OnceCell<Results>,
    link: Mutex<Option<Link>>,
}

impl std::fmt::Debug for ServiceQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceQueue")
            .field("service", &self.service)
            .field("queue", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl ServiceQueue {
    /// The queue of `service` for `config`; `redis_url` is `[cache]`'s, used
    /// when `results = "redis"`. Nothing is connected yet.
    pub fn new(service: &str, config: QueueConfig, redis_url: Option<String>) -> ServiceQueue {
        ServiceQueue {
            service: service.to_owned(),
            config,
            redis_url,
            // Job ids and expiry are dates shared with other processes.
            clock: Arc::new(UnixClock::new()),
            store: OnceCell::new(),
            link: Mutex::new(None),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The results store, connected on first use.
    pub async fn store(&self) -> Result<Results, StoreError> {
        self.store
            .get_or_try_init(|| async {
                match (self.config.results, &self.redis_url) {
                    (ResultsBackend::Redis, Some(url)) => {
                        let prefix = format!("rempart:jobs:{}:", self.service);
                        RedisResults::connect(url, &prefix, self.config.result_ttl, BROKER_TIMEOUT)
                            .await
                            .map(|r| Results::Redis(Box::new(r)))
                    }
                    // Validation demands a Redis cache for `results = "redis"`.
                    _ => Ok(Results::Memory(Arc::new(MemoryResults::new(
                        self.config.result_ttl,
                    )))),
                }
            })
            .await
            .cloned()
    }

    /// How the embedded worker consumes this queue, counting in `metrics`,
    /// for a service whose replays end within `timeout`.
    pub fn worker_settings(
        &self,
        metrics: crate::metrics::JobCounters,
        timeout: Duration,
    ) -> Result<WorkerSettings, String> {
        Ok(WorkerSettings {
            // The replay's deadline, and the broker's for storing its fate.
            run_lease: timeout + BROKER_TIMEOUT * 2,
            names: QueueNames::new(&self.config.name),
            plan: RetryPlan::exponential(
                self.config.max_attempts,
                self.config.backoff_initial,
                self.config.backoff_max,
            )?,
            prefetch: PREFETCH,
            hold_check: HOLD_CHECK,
            broker_timeout: BROKER_TIMEOUT,
            clock: Arc::clone(&self.clock),
            metrics,
        })
    }

    /// A new job id, dated now.
    pub fn new_id(&self) -> JobId {
        JobId::new(wall_time(&*self.clock))
    }

    async fn deferrer(&self) -> Result<Arc<Deferrer<Results>>, String> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref()
            && l.conn.status().connected()
        {
            return Ok(Arc::clone(&l.deferrer));
        }
        *link = None;
        let store = self.store().await.map_err(|e| e.to_string())?;
        let names = QueueNames::new(&self.config.name);
        let conn = topology::connect(&self.config.amqp_url, BROKER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let channel = super::deadline(BROKER_TIMEOUT, "opening a channel", conn.create_channel())
            .await
            .map_err(|e| e.to_string())?;
        topology::declare(&channel, &names, self.config.max_attempts, BROKER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let _ = channel.close(200, "declared".into()).await;
        let publisher = Publisher::open(&conn, names, BROKER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let deferrer = Arc::new(Deferrer::new(publisher, store, Arc::clone(&self.clock)));
        *link = Some(Link {
            conn,
            deferrer: Arc::clone(&deferrer),
        });
        Ok(deferrer)
    }

    /// Messages ready in each of this service's queues (work, delays, DLQ),
    /// by passive declares on the gateway's link: for `jobs_queue_depth`.
    pub async fn depths(&self) -> Result<Vec<(String, u32)>, String> {
        self.deferrer().await?;
        let channel = {
            let link = self.link.lock().await;
            let conn = &link.as_ref().ok_or("no broker link")?.conn;
            super::deadline(BROKER_TIMEOUT, "opening a channel", conn.create_channel())
                .await
                .map_err(|e| e.to_string())?
        };
        let names = QueueNames::new(&self.config.name);
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let mut depths = Vec::new();
        for queue in names.all(self.config.max_attempts) {
            let declared = super::deadline(
                BROKER_TIMEOUT,
                &format!("reading queue {queue}"),
                channel.queue_declare(
                    queue.as_str().into(),
                    passive,
                    lapin::types::FieldTable::default(),
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
            depths.push((queue, declared.message_count()));
        }
        let _ = channel.close(200, "read".into()).await;
        Ok(depths)
    }

    /// Queues `job` for `owner` (or finds the job its key already names);
    /// `Ok` only once the broker confirmed. A failure drops the broker link,
    /// so the next request connects afresh.
    pub async fn defer(&self, job: &Job, owner: &Owner) -> Result<Deferred, String> {
        // One deadline over waiting for the link and making it: requests
        // queued behind a connect to a silent broker do not wait in turn.
        let deferrer = tokio::time::timeout(BROKER_TIMEOUT, self.deferrer())
            .await
            .map_err(|_| {
                format!(
                    "RabbitMQ at {}: no link within {BROKER_TIMEOUT:?}",
                    topology::redact(&self.config.amqp_url)
                )
            })??;
        let deferred = deferrer.defer(job, owner).await;
        if deferred.is_err() {
            let mut link = self.link.lock().await;
            if link
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.deferrer, &deferrer))
            {
                *link = None;
            }
        }
        deferred
    }

    /// What `asker` sees of job `id` here: `None` when this queue has no such
    /// job for it (another owner's job included).
    pub async fn lookup(&self, id: JobId, asker: &Owner) -> Result<Option<JobState>, StoreError> {
        let store = self.store().await?;
        let now = wall_time(&*self.clock);
        let stored = store.get(id, now).await?;
        if stored.is_none() {
            return Ok(None);
        }
        let owner = store.owner(id, now).await?;
        Ok(visible_to(stored, owner, asker))
    }

    /// The poll for a job none of the queues has: gone if older than
    /// `result_ttl` (read from its id), else unknown.
    pub fn not_found(&self, id: JobId) -> Poll {
        poll(
            None,
            Some(id.accepted_at()),
            self.config.result_ttl,
            wall_time(&*self.clock),
        )
    }
}
