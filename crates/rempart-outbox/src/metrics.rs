//! The outbox and inbox metrics, for a prometheus-client registry.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// `inbox_duplicates_total{consumer}`: one family for the process, since
/// [`Inbox`](crate::Inbox) is called without a handle; registered by
/// [`OutboxMetrics::register`].
pub(crate) static INBOX_DUPLICATES: LazyLock<Family<Labels, Counter>> =
    LazyLock::new(Family::default);

/// `inbox_out_of_order_total{consumer}`: deliveries that came before an
/// earlier message of their aggregate and went back to the broker.
pub(crate) static INBOX_OUT_OF_ORDER: LazyLock<Family<Labels, Counter>> =
    LazyLock::new(Family::default);

/// `outbox_pending`, `outbox_oldest_pending_age_seconds` (refreshed by the
/// relay about once a second), `outbox_published_total{destination}`,
/// `outbox_publish_errors_total{destination}`, `outbox_relay_lag_seconds`
/// (from the row's `created_at` to the broker's ack: the insert stands in
/// for the commit, which the database does not record), and
/// `inbox_duplicates_total{consumer}` and `inbox_out_of_order_total{consumer}`.
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    pub(crate) pending: Gauge,
    pub(crate) oldest_pending_age: Gauge<f64, AtomicU64>,
    pub(crate) published: Family<Labels, Counter>,
    pub(crate) errors: Family<Labels, Counter>,
    pub(crate) lag: Histogram,
    pub(crate) cycles: Counter,
    pub(crate) claimed: Counter,
    pub(crate) idle_pipelines: Gauge,
    pub(crate) waiting: Gauge,
}

/// A relay's activity so far, read from its [`OutboxMetrics`]: to tell a
/// relay that falls behind from one that waits (the lag bench logs it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayActivity {
    /// Cycles run (claims, empty ones included).
    pub cycles: u64,
    /// Rows claimed over those cycles.
    pub claimed: u64,
    /// Pipelines idle now (waiting for a notification or the poll).
    pub idle_pipelines: i64,
    /// 1 while the relay's row in `outbox_relay_waiting` stands (writers notify).
    pub waiting: i64,
}

impl Default for OutboxMetrics {
    fn default() -> Self {
        OutboxMetrics {
            pending: Gauge::default(),
            oldest_pending_age: Gauge::default(),
            published: Family::default(),
            errors: Family::default(),
            // 1 ms to about 65 s.
            lag: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            cycles: Counter::default(),
            claimed: Counter::default(),
            idle_pipelines: Gauge::default(),
            waiting: Gauge::default(),
        }
    }
}

impl OutboxMetrics {
    /// Adds the metrics to `registry` (handles share their values).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "outbox_pending",
            "Outbox rows waiting to be published",
            self.pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row",
            self.oldest_pending_age.clone(),
        );
        registry.register(
            "outbox_published",
            "Messages the broker acknowledged",
            self.published.clone(),
        );
        registry.register(
            "outbox_publish_errors",
            "Publishes that failed (retried or dead-lettered)",
            self.errors.clone(),
        );
        registry.register(
            "outbox_relay_lag_seconds",
            "From the outbox row's creation to the broker's ack",
            self.lag.clone(),
        );
        registry.register(
            "outbox_relay_cycles",
            "Relay cycles run (claims, empty ones included)",
            self.cycles.clone(),
        );
        registry.register(
            "outbox_relay_claimed_rows",
            "Rows the relay's cycles claimed",
            self.claimed.clone(),
        );
        registry.register(
            "outbox_relay_idle_pipelines",
            "Relay pipelines waiting for a notification or the poll",
            self.idle_pipelines.clone(),
        );
        registry.register(
            "outbox_relay_waiting",
            "1 while writers are asked to notify the relay (PostgreSQL)",
            self.waiting.clone(),
        );
        registry.register(
            "inbox_duplicates",
            "Deliveries the inbox had already seen",
            INBOX_DUPLICATES.clone(),
        );
        registry.register(
            "inbox_out_of_order",
            "Deliveries ahead of their aggregate's next message, sent back to the broker",
            INBOX_OUT_OF_ORDER.clone(),
        );
    }

    /// The relay's cycles, claimed rows and idleness so far.
    pub fn relay_activity(&self) -> RelayActivity {
        RelayActivity {
            cycles: self.cycles.get(),
            claimed: self.claimed.get(),
            idle_pipelines: self.idle_pipelines.get(),
            waiting: self.waiting.get(),
        }
    }

    pub(crate) fn of(destination: &str) -> Labels {
        vec![("destination", destination.to_owned())]
    }
}
