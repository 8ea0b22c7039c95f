//! The worker embedded in `rempart gateway`: one per service with a
//! `queue`, replaying its jobs through the gateway's policies for it.
//!
//! It connects on start and again whenever it loses the broker (a gateway
//! started while RabbitMQ is down still serves, and catches up once it is
//! back). On shutdown it takes no new jobs, finishes those in hand, and the
//! broker gets back whatever was not acked, so nothing is lost.
//!
//! [`StandaloneWorkers`] runs the same workers without a listener, for
//! `rempart worker`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use rempart::clock::TokioClock;

use crate::config::{GatewayConfig, ResultsBackend};
use crate::proxy::{Gateway, ServiceReplayer};
use crate::queue::service::{BROKER_TIMEOUT, ServiceQueue};
use crate::queue::topology;
use crate::queue::worker::{Worker, WorkerSettings};

/// The pause before connecting again after the broker failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Whose worker runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    /// `rempart gateway`: the queues whose `worker` is not turned off.
    Gateway,
    /// `rempart worker`: every queue; it exists to replay them.
    Standalone,
}

/// Starts a worker for every service of `gateway` that has a queue (and, in
/// a gateway, has not left it to a separate `rempart worker`); each drains
/// and returns once `stop` turns true.
pub(crate) fn start(
    gateway: &Gateway,
    host: Host,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    gateway
        .services()
        .iter()
        .filter_map(|s| {
            let queue = Arc::clone(s.queue()?);
            if host == Host::Gateway && !queue.config().worker {
                return None;
            }
            let replayer = gateway.replayer(&s.config.name);
            let settings =
                queue.worker_settings(gateway.metrics().jobs(&s.config.name), s.config.timeout);
            Some(tokio::spawn(supervise(
                replayer,
                queue,
                settings,
                stop.clone(),
            )))
        })
        .collect()
}

async fn supervise(
    replayer: ServiceReplayer,
    queue: Arc<ServiceQueue>,
    settings: Result<WorkerSettings, String>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "job worker not started");
            return;
        }
    };
    let url = queue.config().amqp_url.clone();
    let work = settings.names.work.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = match queue.store().await {
            Ok(store) => Worker::connect(&url, settings.clone(), replayer.clone(), store)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match connected {
            Ok(worker) => {
                tracing::info!(queue = %work, "job worker consuming");
                let mut until = stop.clone();
                let ran = worker
                    .run(async move {
                        let _ = until.wait_for(|s| *s).await;
                    })
                    .await;
                match ran {
                    Ok(counts) => {
                        tracing::info!(queue = %work, ?counts, "job worker drained");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(queue = %work, error = %e, "job worker lost the broker; reconnecting")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(queue = %work, error = %e, "job worker cannot start yet; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Why the workers could not start alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartWorkersError {
    /// The config has nothing for a worker to do (a usage error).
    NoQueue,
    /// A broker or results store did not answer at start; names it (no password).
    Unreachable(String),
    /// The gateway could not be built from the config.
    Build(String),
}

impl std::fmt::Display for StartWorkersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartWorkersError::NoQueue => f.write_str(
                "no service has a `queue = { ... }`: there is no job for a worker to replay",
            ),
            StartWorkersError::Unreachable(e) | StartWorkersError::Build(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StartWorkersError {}

/// The job workers of a config, without a listener: the replays go through
/// the same policies as in `rempart gateway` (breaker, bulkhead, timeout),
/// built from the same file.
#[derive(Debug)]
pub struct StandaloneWorkers {
    services: Vec<String>,
    warnings: Vec<String>,
    handles: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    grace: Duration,
    // Kept so the replays' breakers and metrics live as long as the workers.
    _gateway: Gateway,
}

impl StandaloneWorkers {
    /// Checks that every queue's broker (and Redis, for `results = "redis"`)
    /// answers now, then starts one worker per service with a queue. Past
    /// this check a lost broker is reconnected to, as in the gateway.
    pub async fn start(config: &GatewayConfig) -> Result<StandaloneWorkers, StartWorkersError> {
        let gateway =
            Gateway::new(config, Arc::new(TokioClock::new())).map_err(StartWorkersError::Build)?;
        let mut services = Vec::new();
        let mut warnings = Vec::new();
        for s in gateway.services() {
            let Some(queue) = s.queue() else { continue };
            let name = &s.config.name;
            let url = &queue.config().amqp_url;
            let conn = topology::connect(url, BROKER_TIMEOUT)
                .await
                .map_err(|e| StartWorkersError::Unreachable(format!("service {name:?}: {e}")))?;
            let _ = conn.close(200, "checked".into()).await;
            queue.store().await.map_err(|e| {
                StartWorkersError::Unreachable(format!(
                    "service {name:?}: the results store (Redis) cannot be reached: {e}"
                ))
            })?;
            if queue.config().results == ResultsBackend::Memory {
                warnings.push(format!(
                    "service {name:?} has results = \"memory\": this worker keeps its results to \
                     itself, so a gateway's GET /jobs/{{id}} never sees them turn done; use \
                     results = \"redis\" to share them"
                ));
            }
            services.push(name.clone());
        }
        if services.is_empty() {
            return Err(StartWorkersError::NoQueue);
        }
        let (stop, stopped) = watch::channel(false);
        let handles = start(&gateway, Host::Standalone, &stopped);
        Ok(StandaloneWorkers {
            services,
            warnings,
            handles,
            stop,
            grace: config.server.shutdown_grace,
            _gateway: gateway,
        })
    }

    /// The services whose jobs are replayed, in config order.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// What an operator should know before relying on these workers.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Takes no new job, finishes those in hand within `server.shutdown_grace`,
    /// then cuts the rest off: the broker redelivers what was not acked.
    pub async fn drain(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        for mut worker in self.handles {
            if tokio::time::timeout_at(deadline, &mut worker)
                .await
                .is_err()
            {
                worker.abort();
            }
        }
    }
}
