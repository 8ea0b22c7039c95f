//! The gateway's Prometheus metrics, with seed 001 case 4's names.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `circuit_breaker_state` | gauge: 0 closed, 1 open, 2 half-open | `service` |
//! | `circuit_breaker_calls_total` | counter | `service`, `outcome` = `success`, `failure`, `rejected`, `timeout`, `fallback`, `bulkhead_full`, `retry_budget_exhausted` |
//! | `circuit_breaker_state_transitions_total` | counter | `service` |
//! | `gateway_requests_total` | counter | `route`, `code` (the status) |
//! | `gateway_request_duration_seconds` | histogram | `route` |
//! | `bulkhead_inflight`, `bulkhead_max_concurrent` | gauge | `service` |
//! | `bulkhead_admitted_total`, `bulkhead_rejected_total` | counter | `service` |
//! | `rate_limit_allowed_total`, `rate_limit_rejected_total` | counter | `limiter` (`clients`) |
//! | `rate_limit_keys` | gauge | `limiter` |
//! | `jobs_queued_total` | counter | `service`: requests deferred with a 202 (a repeated `Idempotency-Key` not counted) |
//! | `jobs_completed_total`, `jobs_retried_total`, `jobs_dead_lettered_total` | counter | `service`: what the embedded worker did (poison messages count as dead-lettered) |
//! | `job_completion_seconds` | histogram | `service`: from the 202 (the job id's date) to the answer stored |
//! | `jobs_queue_depth` | gauge | `service`, `queue` (work, each delay queue, the DLQ): messages ready, read with passive declares at each scrape |
//!
//! Per-request counting here uses shared atomics: a proxied request costs
//! tens of microseconds, so one uncontended-enough increment is noise, unlike
//! in the breaker's nanosecond hot path.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rempart::CircuitBreaker;
use rempart::bulkhead::{Bulkhead, BulkheadCollector};
use rempart::prometheus::BreakerCollector;
use rempart::rate_limit::{KeyedRateLimiter, RateLimitCollector};

/// What happened to a request, as `circuit_breaker_calls_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered below 500.
    Success = 0,
    /// The upstream answered 5xx, or could not be reached.
    Failure,
    /// The circuit was open.
    Rejected,
    /// The attempt ran out of time.
    Timeout,
    /// The client got a fallback instead of an upstream answer.
    Fallback,
    /// The bulkhead had no slot.
    BulkheadFull,
    /// A retry was wanted but the retry budget was spent.
    BudgetExhausted,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Rejected => "rejected",
            Outcome::Timeout => "timeout",
            Outcome::Fallback => "fallback",
            Outcome::BulkheadFull => "bulkhead_full",
            Outcome::BudgetExhausted => "retry_budget_exhausted",
        }
    }
}

const ALL_OUTCOMES: [Outcome; 7] = [
    Outcome::Success,
    Outcome::Failure,
    Outcome::Rejected,
    Outcome::Timeout,
    Outcome::Fallback,
    Outcome::BulkheadFull,
    Outcome::BudgetExhausted,
];

/// Status codes whose counters are made up front; others are looked up.
const COMMON_CODES: [u16; 8] = [200, 404, 413, 429, 500, 502, 503, 504];

/// One service's `circuit_breaker_calls_total` counters.
#[derive(Debug, Clone)]
pub struct ServiceCounters {
    by_outcome: [Counter; 7],
}

impl ServiceCounters {
    /// Counts one call.
    pub fn count(&self, outcome: Outcome) {
        self.by_outcome[outcome as usize].inc();
    }
}

/// One service's deferred-job counters. `Default` gives counters registered
/// nowhere, for a worker outside a gateway.
#[derive(Debug, Clone)]
pub struct JobCounters {
    /// Seconds from the 202 to the answer stored.
    pub completion: Histogram,
    /// Jobs accepted with a 202.
    pub queued: Counter,
    /// Jobs whose answer was stored.
    pub completed: Counter,
    /// Failed replays put back in a delay queue.
    pub retried: Counter,
    /// Jobs (and unreadable messages) moved to the dead-letter queue.
    pub dead_lettered: Counter,
}

impl Default for JobCounters {
    fn default() -> Self {
        JobCounters {
            completion: completion_histogram(),
            queued: Counter::default(),
            completed: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
        }
    }
}

/// A job waits from a fraction of a second (the upstream was briefly busy)
/// to hours (a long outage); `result_ttl` is a day by default.
fn completion_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3_600.0, 21_600.0, 86_400.0,
    ])
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    service: String,
    queue: String,
}

/// One route's request counters and latency histogram.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    latency: Histogram,
    common: [Counter; 8],
    route: String,
    requests: Family<RequestLabels, Counter>,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn observe(&self, code: u16, took: Duration) {
        match COMMON_CODES.iter().position(|c| *c == code) {
            Some(i) => {
                self.common[i].inc();
            }
            None => {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        code,
                    })
                    .inc();
            }
        }
        self.latency.observe(took.as_secs_f64());
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s: a fast service and the seed's 30 s reporting queries.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The registry behind `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    breakers: BreakerCollector,
    bulkheads: BulkheadCollector,
    rate_limits: RateLimitCollector,
    calls: Family<CallLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `jobs_{queued,completed,retried,dead_lettered}_total`, in that order.
    jobs: [Family<ServiceLabels, Counter>; 4],
    job_completion: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    queue_depth: Family<QueueLabels, Gauge>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let breakers = BreakerCollector::without_call_counts();
        registry.register_collector(Box::new(breakers.clone()));
        let bulkheads = BulkheadCollector::new();
        registry.register_collector(Box::new(bulkheads.clone()));
        let rate_limits = RateLimitCollector::new();
        registry.register_collector(Box::new(rate_limits.clone()));
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "circuit_breaker_calls",
            "Calls to each service, by outcome",
            calls.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "gateway_request_duration_seconds",
            "Time from request to response head, by route",
            latency.clone(),
        );
        let jobs: [Family<ServiceLabels, Counter>; 4] = Default::default();
        for (family, (name, help)) in jobs.iter().zip([
            ("jobs_queued", "Requests deferred to the queue with a 202"),
            ("jobs_completed", "Deferred jobs whose answer was stored"),
            ("jobs_retried", "Failed replays put back to wait"),
            ("jobs_dead_lettered", "Jobs moved to the dead-letter queue"),
        ]) {
            registry.register(name, help, family.clone());
        }
        let job_completion =
            Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                completion_histogram,
            );
        registry.register(
            "job_completion_seconds",
            "Time from a job's 202 to its answer stored",
            job_completion.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "jobs_queue_depth",
            "Messages ready in each job queue, read at scrape",
            queue_depth.clone(),
        );
        Metrics {
            jobs,
            job_completion,
            queue_depth,
            registry,
            breakers,
            bulkheads,
            rate_limits,
            calls,
            requests,
            latency,
        }
    }

    /// Exposes exactly these breakers (after a reload, the new set).
    pub fn set_breakers(&self, breakers: impl IntoIterator<Item = CircuitBreaker>) {
        self.breakers.replace_all(breakers);
    }

    /// Exposes exactly these bulkheads.
    pub fn set_bulkheads<'a>(&self, bulkheads: impl IntoIterator<Item = &'a Bulkhead>) {
        self.bulkheads.replace_all(bulkheads);
    }

    /// Exposes the per-client rate limiter.
    pub fn add_rate_limiter(&self, limiter: &KeyedRateLimiter<std::net::IpAddr>) {
        self.rate_limits.add(limiter);
    }

    /// The counters of `service`, made once so that counting a request
    /// neither hashes labels nor allocates.
    pub fn service(&self, service: &str) -> ServiceCounters {
        ServiceCounters {
            by_outcome: ALL_OUTCOMES.map(|o| {
                self.calls
                    .get_or_create(&CallLabels {
                        service: service.to_owned(),
                        outcome: o.label(),
                    })
                    .clone()
            }),
        }
    }

    /// The deferred-job counters of `service`, made once.
    pub fn jobs(&self, service: &str) -> JobCounters {
        let [queued, completed, retried, dead_lettered] = self.jobs.each_ref().map(|f| {
            f.get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .clone()
        });
        let completion = self
            .job_completion
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .clone();
        JobCounters {
            completion,
            queued,
            completed,
            retried,
            dead_lettered,
        }
    }

    /// Sets `jobs_queue_depth{service, queue}` to `messages`.
    pub fn set_queue_depth(&self, service: &str, queue: &str, messages: u32) {
        self.queue_depth
            .get_or_create(&QueueLabels {
                service: service.to_owned(),
                queue: queue.to_owned(),
            })
            .set(i64::from(messages));
    }

    /// The counters and histogram of `route`, made once (see [`service`](Self::service)).
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            latency: self
                .latency
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .clone(),
            common: COMMON_CODES.map(|code| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: route.to_owned(),
                        code,
                    })
                    .clone()
            }),
            route: route.to_owned(),
            requests: self.requests.clone(),
        }
    }

    /// Counts one call to `service`.
    pub fn count(&self, service: &str, outcome: Outcome) {
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts one answered request on `route`.
    pub fn observe_request(&self, route: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Calls to `service` with `outcome` so far.
    pub fn calls(&self, service: &str, outcome: Outcome) -> u64 {
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_owned(),
                outcome: outcome.label(),
            })
            .get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The last [`LatencyWindow::CAPACITY`] request latencies of one service, for
/// the dashboard's p50 and p99 (the histograms are for Prometheus, which
/// computes its own quantiles over any range).
#[derive(Debug)]
pub struct LatencyWindow {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    micros: Vec<u32>,
    next: usize,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            ring: Mutex::new(Ring {
                micros: Vec::with_capacity(Self::CAPACITY),
                next: 0,
            }),
        }
    }
}

impl LatencyWindow {
    /// Latencies kept.
    pub const CAPACITY: usize = 1024;

    /// Records one request's latency.
    pub fn record(&self, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let mut r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if r.micros.len() < Self::CAPACITY {
            r.micros.push(us);
        } else {
            let i = r.next;
            r.micros[i] = us;
        }
        r.next = (r.next + 1) % Self::CAPACITY;
    }

    /// The `q` quantiles (0 to 1) of the window, in milliseconds; `None` when empty.
    pub fn quantiles_ms<const N: usize>(&self, q: [f64; N]) -> [Option<f64>; N] {
        let mut v = self
            .ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .micros
            .clone();
        v.sort_unstable();
        q.map(|q| {
            if v.is_empty() {
                return None;
            }
            // Nearest rank: the smallest value with at least q of the window at or below it.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(f64::from(v[rank - 1]) / 1000.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank_over_the_last_1024_requests() {
        let w = LatencyWindow::default();
        assert_eq!(w.quantiles_ms([0.5]), [None]);
        for ms in 1..=100u64 {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(w.quantiles_ms([0.5, 0.99]), [Some(50.0), Some(99.0)]);
        // Old entries roll out: after 1024 fast requests the slow ones are gone.
        for _ in 0..LatencyWindow::CAPACITY {
            w.record(Duration::from_millis(2));
        }
        assert_eq!(w.quantiles_ms([0.99]), [Some(2.0)]);
    }
}
