//! The worker embedded in `rempart gateway`: one per service with a
//! `queue`, replaying its jobs through the gateway's policies for it.
//!
//! It connects on start and again whenever it loses the broker (a gateway
//! started while RabbitMQ is down still serves, and catches up once it is
//! back). On shutdown it takes no new jobs, finishes those in hand, and the
//! broker gets back whatever was not acked, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proxy::{Gateway, ServiceReplayer};
use crate::queue::service::ServiceQueue;
use crate::queue::worker::{Worker, WorkerSettings};

/// The pause before connecting again after the broker failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Starts a worker for every service of `gateway` that has a queue; each
/// drains and returns once `stop` turns true.
pub(crate) fn start(gateway: &Gateway, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    gateway
        .services()
        .iter()
        .filter_map(|s| {
            let queue = Arc::clone(s.queue()?);
            let replayer = gateway.replayer(&s.config.name);
            let settings = queue.worker_settings(gateway.metrics().jobs(&s.config.name));
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
