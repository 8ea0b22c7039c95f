//! Active health checks: a `GET` to each upstream host of a service every
//! `interval`, and the decision to take a host out of rotation or bring it
//! back.
//!
//! Passive ejection ([`crate::upstream`]) learns from failed requests, so it
//! needs traffic to notice a dead host and sends some requests to it to find
//! out it has recovered. Active checks find both without a client paying for
//! it. The two are independent: a host takes traffic only if neither has
//! taken it out. When every host of a service fails its checks, traffic is
//! spread over all of them anyway (a check that fails everywhere is more
//! likely wrong than every host), and `/ready` reports the service.
//!
//! The decision is [`ProbeRecord`]: consecutive results against two
//! thresholds, so one lost probe does not take a host out and one lucky probe
//! does not bring a flapping host back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::client::{UpstreamClient, UpstreamRequest};
use crate::config::HealthCheckConfig;
use crate::proxy::Service;
use crate::upstream::Upstreams;

/// One host's standing under active checks.
///
/// ```
/// use rempart_gateway::health_check::ProbeRecord;
///
/// let mut host = ProbeRecord::default(); // healthy until shown otherwise
/// // unhealthy after 3 failures in a row, healthy again after 2 successes
/// assert_eq!(host.record(false, 3, 2), None);
/// assert_eq!(host.record(false, 3, 2), None);
/// assert_eq!(host.record(false, 3, 2), Some(false));
/// assert_eq!(host.record(true, 3, 2), None);
/// assert_eq!(host.record(true, 3, 2), Some(true));
/// assert!(host.is_healthy());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRecord {
    healthy: bool,
    /// Results in a row that disagree with `healthy`.
    streak: u32,
}

impl Default for ProbeRecord {
    /// A new host is healthy: a gateway that starts takes traffic at once,
    /// and the first probes correct it.
    fn default() -> ProbeRecord {
        ProbeRecord {
            healthy: true,
            streak: 0,
        }
    }
}

impl ProbeRecord {
    /// A record starting from a standing already decided, with no streak:
    /// new checks over hosts a reload kept pick up where the old ones were.
    pub fn starting(healthy: bool) -> ProbeRecord {
        ProbeRecord { healthy, streak: 0 }
    }

    /// Whether the host is in rotation as far as active checks go.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one probe (`passed` or not); returns the new standing when
    /// this probe changed it.
    pub fn record(
        &mut self,
        passed: bool,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy {
            unhealthy_threshold
        } else {
            healthy_threshold
        };
        if self.streak < needed.max(1) {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// The probes of one service's hosts.
///
/// Probes run in a background task every `interval` (the first round one
/// interval after start) until [`stop`](HealthCheck::stop): the gateway
/// stops them when it shuts down and when a reload replaces them. Dropping
/// the last handle stops them too. [`probe_all_once`](HealthCheck::probe_all_once) runs
/// a round now, which is what tests and the admin side use.
#[derive(Debug)]
pub struct HealthCheck {
    config: HealthCheckConfig,
    upstreams: Arc<Upstreams>,
    client: UpstreamClient,
    records: std::sync::Mutex<Vec<ProbeRecord>>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Set by `stop`: a replaced check must not overrule its successor.
    stopped: AtomicBool,
}

impl HealthCheck {
    /// Checks for `upstreams` with `config`; call [`start`](Self::start) to
    /// probe in the background.
    pub fn new(config: HealthCheckConfig, upstreams: Arc<Upstreams>) -> Arc<HealthCheck> {
        // A reload that changes only the checks keeps the hosts and their
        // verdicts; starting from "healthy" would never clear an unhealthy one.
        let records = upstreams
            .hosts()
            .iter()
            .map(|h| ProbeRecord::starting(!h.is_probed_unhealthy()))
            .collect();
        Arc::new(HealthCheck {
            client: UpstreamClient::new(config.timeout),
            records: std::sync::Mutex::new(records),
            task: std::sync::Mutex::new(None),
            stopped: AtomicBool::new(false),
            config,
            upstreams,
        })
    }

    /// Probes every `interval` on the current tokio runtime, until the last
    /// handle is dropped. Without a runtime, does nothing (and says so).
    pub fn start(self: &Arc<Self>) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("no tokio runtime: active health checks are not running");
            return;
        }
        // The task holds a weak handle: the checks stop with the service.
        let weak = Arc::downgrade(self);
        let interval = self.config.interval;
        let task = tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(check) = weak.upgrade() else { return };
                check.probe_all_once().await;
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Stops the background probes for good (a round under way is dropped),
    /// and makes [`probe_all_once`](Self::probe_all_once) decide nothing.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Whether probes are running in the background.
    pub fn is_probing(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// The configuration the checks run with.
    pub fn config(&self) -> &HealthCheckConfig {
        &self.config
    }

    /// Probes every host once, concurrently, and applies the results
    /// (unless the checks were stopped meanwhile).
    pub async fn probe_all_once(&self) {
        let hosts = self.upstreams.hosts();
        let results = join_probes(hosts.iter().map(|h| self.probe(&h.url))).await;
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for (i, passed) in results.into_iter().enumerate() {
            let change = records[i].record(
                passed,
                self.config.unhealthy_threshold,
                self.config.healthy_threshold,
            );
            if let Some(healthy) = change {
                self.upstreams.set_probed_healthy(i, healthy);
                if healthy {
                    tracing::info!(host = %hosts[i].url, "upstream host passes its health checks again");
                } else {
                    tracing::warn!(
                        host = %hosts[i].url,
                        failures = self.config.unhealthy_threshold,
                        "upstream host failed its health checks; out of rotation"
                    );
                }
            }
        }
    }

    /// One probe: a `GET` of the path, answered in time with an expected
    /// status, body read to the end.
    async fn probe(&self, base: &http::Uri) -> bool {
        let Some(authority) = base.authority() else {
            return false;
        };
        let prefix = base.path().trim_end_matches('/');
        let target = format!("{prefix}{}", self.config.path);
        let probe = async {
            let resp = self.send(authority, &target).await?;
            let status = resp.status();
            // Read to the end so the connection can serve the next probe.
            resp.into_body().collect().await.ok()?;
            Some(status)
        };
        match tokio::time::timeout(self.config.timeout, probe).await {
            Ok(Some(status)) => passes(status, self.config.expected_status),
            _ => false,
        }
    }

    async fn send(
        &self,
        authority: &Authority,
        target: &str,
    ) -> Option<http::Response<crate::client::UpstreamBody>> {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("rempart-health-check"),
        );
        let resp = self
            .client
            .send(
                authority,
                UpstreamRequest {
                    method: &Method::GET,
                    target,
                    headers: &headers,
                    body: &Bytes::new(),
                },
            )
            .await;
        match resp {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(%authority, error = %e, "health probe failed");
                None
            }
        }
    }
}

impl Drop for HealthCheck {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Stops every check in `old` that `new` does not carry over: after a reload
/// the replaced checks would otherwise keep probing, and judging the hosts
/// they share with their successors, while an old request holds them.
pub(crate) fn stop_replaced(old: &[Arc<Service>], new: &[Arc<Service>]) {
    for check in old.iter().filter_map(|s| s.health_check()) {
        let kept = new
            .iter()
            .filter_map(|s| s.health_check())
            .any(|n| Arc::ptr_eq(n, check));
        if !kept {
            check.stop();
        }
    }
}

/// Runs the probes side by side; a round takes as long as its slowest probe
/// (at most the timeout), not their sum.
async fn join_probes<F: std::future::Future<Output = bool>>(
    probes: impl Iterator<Item = F>,
) -> Vec<bool> {
    let mut set: Vec<_> = probes.map(Box::pin).collect();
    let mut done: Vec<Option<bool>> = vec![None; set.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, probe) in set.iter_mut().enumerate() {
            if done[i].is_none() {
                match probe.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().map(|d| d.unwrap_or(false)).collect()
}

/// Whether a probe answered `status` passes: `expected` is inclusive.
pub fn passes(status: StatusCode, expected: (u16, u16)) -> bool {
    (expected.0..=expected.1).contains(&status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_does_not_take_a_host_out() {
        let mut r = ProbeRecord::default();
        assert_eq!(r.record(false, 3, 2), None);
        assert_eq!(r.record(true, 3, 2), None, "a pass resets the count");
        assert_eq!(r.record(false, 3, 2), None);
        assert_eq!(r.record(false, 3, 2), None);
        assert!(r.is_healthy());
        assert_eq!(r.record(false, 3, 2), Some(false));
        assert!(!r.is_healthy());
    }

    #[test]
    fn a_flapping_host_stays_out_until_it_passes_in_a_row() {
        let mut r = ProbeRecord::default();
        assert_eq!(r.record(false, 1, 3), Some(false));
        for _ in 0..5 {
            assert_eq!(r.record(true, 1, 3), None);
            assert_eq!(r.record(false, 1, 3), None);
        }
        assert!(!r.is_healthy());
        assert_eq!(r.record(true, 1, 3), None);
        assert_eq!(r.record(true, 1, 3), None);
        assert_eq!(r.record(true, 1, 3), Some(true));
    }

    #[test]
    fn thresholds_of_one_follow_every_probe() {
        let mut r = ProbeRecord::default();
        assert_eq!(r.record(false, 1, 1), Some(false));
        assert_eq!(r.record(true, 1, 1), Some(true));
        assert_eq!(r.record(true, 1, 1), None);
    }

    #[test]
    fn a_record_started_unhealthy_needs_the_healthy_threshold_to_come_back() {
        let mut r = ProbeRecord::starting(false);
        assert!(!r.is_healthy());
        assert_eq!(r.record(false, 3, 2), None);
        assert_eq!(r.record(true, 3, 2), None);
        assert_eq!(r.record(true, 3, 2), Some(true));
        assert_eq!(ProbeRecord::starting(true), ProbeRecord::default());
    }

    #[test]
    fn expected_status_bounds_are_inclusive() {
        assert!(passes(StatusCode::OK, (200, 399)));
        assert!(passes(StatusCode::from_u16(399).unwrap(), (200, 399)));
        assert!(!passes(StatusCode::SERVICE_UNAVAILABLE, (200, 399)));
        assert!(passes(StatusCode::NO_CONTENT, (204, 204)));
    }
}
