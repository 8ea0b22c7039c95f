//! Accepting a request for later: one job per `Idempotency-Key`, published
//! with a confirm before anything is promised to the client.

use std::sync::Arc;

use rempart::clock::Clock;

use super::decision::JobState;
use super::job::{Job, JobId};
use super::owner::Owner;
use super::publish::Publisher;
use super::results::ResultStore;
use super::wall_time;

/// What became of a request to defer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// Queued now, confirmed by the broker: answer 202 with this id.
    Queued(JobId),
    /// The `Idempotency-Key` already names this job: answer 202 with it,
    /// and queue nothing.
    Existing(JobId),
}

impl Deferred {
    /// The job the client polls.
    pub fn id(&self) -> JobId {
        match *self {
            Deferred::Queued(id) | Deferred::Existing(id) => id,
        }
    }
}

/// Defers requests to one service's queue.
#[derive(Debug)]
pub struct Deferrer<S> {
    publisher: Publisher,
    store: S,
    clock: Arc<dyn Clock>,
}

impl<S: ResultStore> Deferrer<S> {
    /// Publishes with `publisher`, records in `store`, dates with `clock`.
    pub fn new(publisher: Publisher, store: S, clock: Arc<dyn Clock>) -> Deferrer<S> {
        Deferrer {
            publisher,
            store,
            clock,
        }
    }

    /// The store jobs are recorded in, for polls.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Queues `job` for `owner`, or finds the job the owner's
    /// `Idempotency-Key` already names (another owner's same key is another
    /// job). `Err` means nothing was accepted (the gateway answers its usual
    /// 503): the broker did not confirm, or the store could not be reached.
    pub async fn defer(&self, job: &Job, owner: &Owner) -> Result<Deferred, String> {
        let now = wall_time(&*self.clock);
        let scoped = job.idempotency_key.as_deref().map(|k| owner.scope(k));
        if let Some(key) = &scoped {
            let named = self
                .store
                .job_for_key(key, job.id, now)
                .await
                .map_err(|e| e.to_string())?;
            if named != job.id {
                return Ok(Deferred::Existing(named));
            }
        }
        // Recorded first so a 202'd job is always pollable; the worker's
        // final state cannot be overwritten by it if the order races.
        let queued = async {
            self.store
                .own(job.id, *owner, now)
                .await
                .map_err(|e| e.to_string())?;
            self.store
                .report(job.id, JobState::Queued, now)
                .await
                .map_err(|e| e.to_string())?;
            self.publisher.submit(job).await.map_err(|e| e.to_string())
        };
        if let Err(e) = queued.await {
            if let Some(key) = &scoped
                && let Err(forget) = self.store.forget_key(key, job.id).await
            {
                tracing::warn!(job = %job.id, error = %forget, "Idempotency-Key not freed; it expires with result_ttl");
            }
            return Err(e);
        }
        Ok(Deferred::Queued(job.id))
    }
}
