//! Reload: how a configuration becomes the running state, and which pieces
//! of the old state a new configuration keeps.
//!
//! A piece survives a reload when its own settings did not change: a breaker
//! keeps its state, a host its ejection, a bulkhead its in-flight count, a
//! retry budget its balance, health checks their verdicts. Listener
//! addresses and the cache backend cannot change live and are reported in
//! [`ReloadReport::needs_restart`].

use std::sync::Arc;

use rempart::bulkhead::Bulkhead;
use rempart::circuit_breaker::{CircuitBreakerBuilder, SlidingWindow};
use rempart::clock::Clock;
use rempart::retry::RetryBudget;

use super::{Gateway, Service, State};
use crate::client_limit::ClientLimiter;
use crate::config::{GatewayConfig, ServiceConfig};
use crate::health_check::HealthCheck;
use crate::metrics::Metrics;
use crate::queue::service::ServiceQueue;
use crate::redis_backend::RedisBackend;
use crate::router::Router;
use crate::upstream::Upstreams;

/// What a reload kept and what it replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Services whose circuit breaker (and its state) carried over.
    pub breakers_kept: Vec<String>,
    /// Services whose breaker was rebuilt because its settings changed, or
    /// that are new.
    pub breakers_new: Vec<String>,
    /// Services that are gone.
    pub removed: Vec<String>,
    /// Settings that only take effect on restart (the listeners).
    pub needs_restart: Vec<String>,
}

/// Retries a service keeps in reserve beyond its `budget_percent`.
const RETRY_RESERVE: u32 = 10;

impl Service {
    /// The service for `config`, keeping from `previous` (the same service
    /// before a reload) each piece whose settings did not change.
    pub(super) fn new(
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
        previous: Option<&Service>,
        metrics: &Metrics,
        redis_url: Option<&str>,
    ) -> Result<Service, String> {
        let b = &config.circuit_breaker;
        let breaker = match previous.filter(|o| o.config.circuit_breaker == *b) {
            Some(old) => old.breaker.clone(),
            None => {
                let breaker = CircuitBreakerBuilder::default()
                    .name(config.name.as_str())
                    // opossum's model: only the error percentage trips, not a run of failures.
                    .failure_threshold(0)
                    .failure_rate(f64::from(b.error_threshold_percentage))
                    .sliding_window(SlidingWindow::Time {
                        period: b.rolling_window,
                        buckets: b.rolling_buckets,
                    })
                    .minimum_calls(b.volume_threshold)
                    .open_timeout(b.reset_timeout)
                    .half_open_max_calls(b.half_open_max_calls)
                    .success_threshold(b.success_threshold)
                    .clock(Arc::clone(&clock))
                    .build()
                    .map_err(|e| format!("service {:?}: {e}", config.name))?;
                if !b.enabled {
                    breaker.disable();
                }
                breaker
            }
        };
        let upstreams = match previous.filter(|o| o.config.upstreams == config.upstreams) {
            Some(old) => Arc::clone(&old.upstreams),
            None => Arc::new(Upstreams::new(&config.upstreams, Arc::clone(&clock))),
        };
        let bulkhead = match previous.filter(|o| o.config.bulkhead == config.bulkhead) {
            Some(old) => old.bulkhead.clone(),
            None if config.bulkhead.enabled => Some(
                Bulkhead::builder()
                    .name(config.name.as_str())
                    .max_concurrent(config.bulkhead.max_concurrent)
                    .max_wait(config.bulkhead.max_wait)
                    .build()
                    .map_err(|e| format!("service {:?}: {e}", config.name))?,
            ),
            None => None,
        };
        let percent = config.retry.as_ref().map(|r| r.budget_percent);
        let retry_budget = match previous
            .filter(|o| o.config.retry.as_ref().map(|r| r.budget_percent) == percent)
        {
            Some(old) => old.retry_budget.clone(),
            None => percent
                .and_then(|p| RetryBudget::new(p, RETRY_RESERVE).ok())
                .map(Arc::new),
        };
        // The checks follow their hosts: kept when neither changed, so a
        // reload does not forget which hosts are out.
        let health_check = match previous.filter(|o| {
            o.config.health_check == config.health_check && Arc::ptr_eq(&o.upstreams, &upstreams)
        }) {
            Some(old) => old.health_check.clone(),
            None => config.health_check.clone().map(|hc| {
                let check = HealthCheck::new(hc, Arc::clone(&upstreams));
                check.start();
                check
            }),
        };
        if health_check.is_none() {
            // Checks removed by a reload: their verdicts go with them.
            for i in 0..upstreams.hosts().len() {
                upstreams.set_probed_healthy(i, true);
            }
        }
        // A queue keeps its store (results, owners) and broker link while
        // its settings stay; the embedded worker follows it only on restart.
        let queue = match previous.filter(|o| o.config.queue == config.queue) {
            Some(old) => old.queue.clone(),
            None => config.queue.clone().map(|q| {
                Arc::new(ServiceQueue::new(
                    &config.name,
                    q,
                    redis_url.map(str::to_owned),
                ))
            }),
        };
        Ok(Service {
            queue,
            health_check,
            retry_budget,
            latency: previous.map_or_else(Arc::default, |o| Arc::clone(&o.latency)),
            counters: metrics.service(&config.name),
            breaker,
            upstreams,
            bulkhead,
            config,
        })
    }
}

impl State {
    /// The state for `config`, keeping from `previous` every piece whose
    /// settings did not change: a breaker keeps its state, a host its
    /// ejection, a bulkhead its in-flight count.
    pub(super) fn build(
        config: &GatewayConfig,
        clock: &Arc<dyn Clock>,
        metrics: &Metrics,
        redis: Option<&Arc<RedisBackend>>,
        previous: Option<&State>,
        report: &mut ReloadReport,
    ) -> Result<State, String> {
        let mut services = Vec::with_capacity(config.services.len());
        for sc in &config.services {
            let old = previous.and_then(|p| p.services.iter().find(|s| s.config.name == sc.name));
            let redis_url = match &config.cache.backend {
                crate::config::CacheBackend::Redis { url } => Some(url.as_str()),
                crate::config::CacheBackend::Memory => None,
            };
            let svc = Service::new(
                sc.clone(),
                Arc::clone(clock),
                old.map(|s| &**s),
                metrics,
                redis_url,
            )?;
            if previous.is_some() && old.map_or(sc.queue.is_some(), |o| o.config.queue != sc.queue)
            {
                report
                    .needs_restart
                    .push(format!("services[{}].queue (its worker)", sc.name));
            }
            if old.is_some_and(|o| o.breaker.ptr_eq(&svc.breaker)) {
                report.breakers_kept.push(sc.name.clone());
            } else {
                report.breakers_new.push(sc.name.clone());
            }
            services.push(Arc::new(svc));
        }
        if let Some(p) = previous {
            for old in &p.services {
                if config.service(&old.config.name).is_none() {
                    report.removed.push(old.config.name.clone());
                }
            }
            if p.config.server.listen != config.server.listen {
                report.needs_restart.push("server.listen".into());
            }
            if p.config.server.admin_listen != config.server.admin_listen {
                report.needs_restart.push("server.admin_listen".into());
            }
            if p.config.cache != config.cache {
                report.needs_restart.push("cache".into());
            }
        }
        // The per-client limiter keeps its counts unless its settings change.
        let limiter = match &config.rate_limit {
            None => None,
            Some(rl) => match previous.and_then(|p| {
                let old = p.config.rate_limit.as_ref()?;
                ClientLimiter::same_settings(old, rl).then(|| p.limiter.clone())?
            }) {
                Some(kept) => Some(kept),
                None => {
                    let l = match redis {
                        Some(r) => ClientLimiter::shared(rl, Arc::clone(r))?,
                        None => ClientLimiter::local(rl, Arc::clone(clock))?,
                    };
                    if let ClientLimiter::Local(k) = &l {
                        metrics.add_rate_limiter(k);
                    }
                    Some(Arc::new(l))
                }
            },
        };
        let router = Router::new(&config.routes, |name| {
            config.services.iter().position(|s| s.name == name)
        });
        let route_metrics = config
            .routes
            .iter()
            .map(|r| metrics.route(&r.path_prefix))
            .collect();
        Ok(State {
            route_metrics,
            config: config.clone(),
            trusted: config.server.trusted_proxies.clone(),
            router,
            services,
            limiter,
        })
    }
}

impl Gateway {
    /// Serves `config` from now on. In-flight requests finish on the old one.
    /// A service whose breaker settings are unchanged keeps its breaker, state
    /// included; listener changes are reported as needing a restart.
    pub fn reload(&self, config: &GatewayConfig) -> Result<ReloadReport, String> {
        let previous = self.shared.current.load_full();
        let mut report = ReloadReport::default();
        let state = State::build(
            config,
            &self.shared.clock,
            &self.shared.metrics,
            self.shared.redis.as_ref(),
            Some(&previous),
            &mut report,
        )?;
        self.shared
            .metrics
            .set_breakers(state.services.iter().map(|s| s.breaker.clone()));
        self.shared
            .metrics
            .set_bulkheads(state.services.iter().filter_map(|s| s.bulkhead.as_ref()));
        crate::health_check::stop_replaced(&previous.services, &state.services);
        self.shared.current.store(Arc::new(state));
        tracing::info!(?report, "configuration reloaded");
        Ok(report)
    }
}
