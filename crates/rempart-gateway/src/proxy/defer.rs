//! Degrading to a queue, the proxy's side (seed 002): a request the service
//! cannot answer now, on a route that opts in, is published and answered
//! `202 Accepted` once the broker confirmed; `GET /jobs/{id}` answers its
//! owner; and the embedded worker replays jobs through the same policies
//! (breaker, bulkhead, timeout) as a client's request.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};

use super::attempts::{Attempt, Tried};
use super::fallback::{Refusal, json_error};
use super::{Body, Gateway, Service, State, admission};
use crate::headers::ClientAddr;
use crate::queue::answer::{JOB_ID_HEADER, accepted, poll_answer};
use crate::queue::decision::{Poll, Readiness, ReplayOutcome, StoredAnswer, readiness};
use crate::queue::defer::Deferred;
use crate::queue::job::{Job, JobId};
use crate::queue::owner::Owner;
use crate::queue::worker::Replayer;

/// Where clients poll their jobs, on the public listener.
pub(super) const JOBS_PATH: &str = "/jobs/";

fn made(r: Response<Bytes>) -> Response<Body> {
    r.map(|b| Either::Left(Full::new(b)))
}

impl Gateway {
    /// Defers the request to `service`'s queue when its route lets this
    /// method be deferred: `Some(202)` only once the broker confirmed it;
    /// `None` (not deferrable, or the broker or store failed) leaves the
    /// usual fallback to the caller, never a 202.
    pub(super) async fn try_defer(
        &self,
        service: &Service,
        queue_methods: &[Method],
        parts: &http::request::Parts,
        body: &Bytes,
        client: &ClientAddr,
    ) -> Option<Response<Body>> {
        let queue = service.queue.as_ref()?;
        if !queue_methods.contains(&parts.method) {
            return None;
        }
        let mut headers = parts.headers.clone();
        // The replay sets its own deadline; the client's has passed by then.
        headers.remove(rempart::deadline::HEADER);
        let job = match Job::capture(
            queue.new_id(),
            &parts.method,
            &parts.uri,
            &headers,
            body.to_vec(),
        ) {
            Ok(job) => job,
            Err(e) => {
                tracing::debug!(service = %service.config.name, error = %e, "request not deferrable");
                return None;
            }
        };
        let owner = Owner::identified_by(&parts.headers, client.client, owner_cookies(service));
        // Its own task: a client leaving mid-way must not cut a defer between
        // claiming its key and publishing, which would leave the key naming
        // a job never queued.
        let queue = std::sync::Arc::clone(queue);
        let deferred = tokio::spawn(async move { queue.defer(&job, &owner).await })
            .await
            .unwrap_or_else(|e| Err(format!("the defer task failed: {e}")));
        match deferred {
            Ok(deferred) => {
                if matches!(deferred, Deferred::Queued(_)) {
                    self.shared.metrics.jobs(&service.config.name).queued.inc();
                }
                Some(made(accepted(deferred.id())))
            }
            Err(e) => {
                tracing::warn!(service = %service.config.name, error = %e, "request not deferred: the broker or the results store failed");
                None
            }
        }
    }

    /// `GET /jobs/{id}` for the client sending `headers` from `client`: the
    /// job as its queue keeps it when the client owns it (by that service's
    /// `owner_cookies`), and for anyone else exactly what an unknown id gets.
    pub(super) async fn poll_job(
        &self,
        state: &State,
        id: &str,
        headers: &http::HeaderMap,
        client: std::net::IpAddr,
    ) -> Response<Body> {
        let queues = state
            .services
            .iter()
            .filter_map(|s| Some((s.queue.as_ref()?, owner_cookies(s))));
        let Ok(id) = id.parse::<JobId>() else {
            return made(poll_answer(Poll::Unknown));
        };
        let mut not_found = Poll::Unknown;
        for (queue, cookies) in queues {
            let asker = Owner::identified_by(headers, client, cookies);
            match queue.lookup(id, &asker).await {
                Ok(Some(found)) => return made(poll_answer(Poll::Found(found))),
                Ok(None) => {
                    if not_found == Poll::Unknown {
                        not_found = queue.not_found(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "job poll failed");
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "jobs_unavailable",
                        "the job results store cannot be reached; poll again later",
                    );
                }
            }
        }
        made(poll_answer(not_found))
    }

    /// Whether `path` is a poll this gateway answers: only when a service has
    /// a queue, so a gateway without one routes `/jobs/` like any path.
    pub(super) fn is_job_poll<'p>(
        state: &State,
        method: &Method,
        path: &'p str,
    ) -> Option<&'p str> {
        let id = path.strip_prefix(JOBS_PATH)?;
        (*method == Method::GET && state.services.iter().any(|s| s.queue.is_some())).then_some(id)
    }

    /// The replayer the embedded worker of `service` uses.
    pub fn replayer(&self, service: &str) -> ServiceReplayer {
        ServiceReplayer {
            gateway: self.clone(),
            service: service.to_owned(),
        }
    }
}

/// Replays a service's jobs through the gateway's policies for it, read
/// from the configuration in force at each replay: retry, breaker (an open
/// circuit fails the attempt without a call, so the job is re-delayed),
/// bulkhead and timeout.
#[derive(Debug, Clone)]
pub struct ServiceReplayer {
    gateway: Gateway,
    service: String,
}

impl ServiceReplayer {
    /// Its service in the configuration `state` serves.
    fn service<'s>(&self, state: &'s State) -> Option<&'s Service> {
        let found = state
            .services
            .iter()
            .find(|s| s.config.name == self.service);
        found.map(|s| &**s)
    }
}

impl Replayer for ServiceReplayer {
    fn readiness(&self) -> Readiness {
        let state = self.gateway.shared.current.load();
        let Some(service) = self.service(&state) else {
            // The replay itself reports the missing service.
            return Readiness::Ready;
        };
        let full = service
            .bulkhead
            .as_ref()
            .is_some_and(|b| b.in_flight() >= b.max_concurrent());
        readiness(service.breaker.can_execute(), full)
    }

    async fn replay(&self, job: &Job, _attempt: u32) -> ReplayOutcome {
        let state = self.gateway.shared.current.load_full();
        let Some(service) = self.service(&state) else {
            return ReplayOutcome::Failed(format!("service {} is not configured", self.service));
        };
        let Some(route) = state.router.route(&job.path).cloned() else {
            return ReplayOutcome::Failed(format!("no route for {}", job.path));
        };
        let mut parts = match replay_parts(job) {
            Ok(p) => p,
            Err(e) => return ReplayOutcome::Failed(e),
        };
        let budget = admission::budget(service, &parts.headers);
        let s = &*self.gateway.shared;
        let deadline = s.clock.now().saturating_add(budget);
        let wall_deadline = tokio::time::Instant::now() + budget;
        let body = Bytes::from(job.body.clone());
        let tried = self
            .gateway
            .attempts(service, &route, &mut parts, &body, deadline, wall_deadline)
            .await;
        let limit = state.config.server.max_body_bytes;
        outcome(tried, limit, wall_deadline).await
    }
}

/// The request head a job replays: its method, path, query and headers, with
/// the job id header added.
fn replay_parts(job: &Job) -> Result<http::request::Parts, String> {
    let target = match &job.query {
        Some(q) => format!("{}?{q}", job.path),
        None => job.path.clone(),
    };
    let mut req = http::Request::builder()
        .method(job.method.as_str())
        .uri(target)
        .body(())
        .map_err(|e| format!("job {}: {e}", job.id))?;
    let h = req.headers_mut();
    for (name, value) in &job.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(format!("job {}: header {name} cannot be replayed", job.id));
        };
        h.append(n, v);
    }
    let id = HeaderValue::try_from(job.id.to_string()).map_err(|e| e.to_string())?;
    h.insert(JOB_ID_HEADER, id);
    Ok(req.into_parts().0)
}

/// A replay's attempts as the worker judges them: an answer that is not a
/// 5xx, read whole within `limit` and the deadline, is final; anything else
/// is a failure to retry later.
async fn outcome(tried: Tried, limit: u64, wall_deadline: tokio::time::Instant) -> ReplayOutcome {
    let (resp, permit, slot) = match tried {
        Tried::Sent {
            outcome: Attempt::Answered(resp),
            permit,
            slot,
        } if !resp.status().is_server_error() => (resp, permit, slot),
        Tried::Sent {
            outcome: Attempt::Answered(resp),
            ..
        } => return ReplayOutcome::Failed(format!("the upstream answered {}", resp.status())),
        Tried::Sent {
            outcome: Attempt::Timeout,
            ..
        } => return ReplayOutcome::Failed("the upstream did not answer in time".into()),
        Tried::Sent { .. } => return ReplayOutcome::Failed("the upstream is unreachable".into()),
        Tried::Refused(Refusal::Open) => {
            return ReplayOutcome::NotCalled("the circuit is open: not called".into());
        }
        Tried::Refused(Refusal::BulkheadFull) => {
            return ReplayOutcome::NotCalled(
                "the service is busy (bulkhead full): not called".into(),
            );
        }
        Tried::Refused(_) => return ReplayOutcome::Failed("no upstream host to call".into()),
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limited = Limited::new(
        resp.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let read = tokio::time::timeout_at(wall_deadline, limited.collect()).await;
    drop(slot);
    match read {
        Ok(Ok(body)) => {
            if let Some(p) = permit {
                p.success();
            }
            ReplayOutcome::Answered(StoredAnswer {
                status,
                content_type,
                body: body.to_bytes().to_vec(),
            })
        }
        Ok(Err(e)) => {
            if let Some(p) = permit {
                p.failure();
            }
            ReplayOutcome::Failed(format!("the upstream's answer could not be read: {e}"))
        }
        Err(_) => {
            if let Some(p) = permit {
                p.failure();
            }
            ReplayOutcome::Failed("the upstream's answer did not arrive in time".into())
        }
    }
}

/// The cookies that identify a job's owner for `service` (its queue's
/// `owner_cookies`; empty: the whole `Cookie` header).
fn owner_cookies(service: &Service) -> &[String] {
    service
        .config
        .queue
        .as_ref()
        .map_or(&[], |q| q.owner_cookies.as_slice())
}
