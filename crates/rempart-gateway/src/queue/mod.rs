//! Degrading to a queue (seed 002): a request a service cannot answer now is
//! kept durably in RabbitMQ and replayed later by a worker, with equal-jitter
//! backoff through per-attempt delay queues and a dead-letter queue at the end.
//!
//! - [`decision`]: the pure rules (attempts, delays, outcomes, polls);
//! - [`job`]: the message format;
//! - [`topology`] and [`publish`]: the queues and confirmed publishing;
//! - [`results`] and [`redis_results`]: where states and results are kept
//!   for polls;
//! - [`worker`]: the consumer;
//! - [`dead_letters`]: listing and requeueing dead jobs, for operators;
//! - [`owner`]: whose job it is (credentials or address, hashed);
//! - [`defer`]: accepting a request, once per owner and `Idempotency-Key`;
//! - [`answer`]: the 202 and the answers to `GET /jobs/{id}`;
//! - [`service`]: a service's queue as the gateway runs it.

pub mod answer;
pub mod dead_letters;
pub mod decision;
pub mod defer;
pub mod job;
pub mod owner;
pub mod publish;
pub mod redis_results;
pub mod results;
pub mod service;
pub mod topology;
pub mod worker;

use std::future::Future;
use std::time::{Duration, SystemTime};

/// RabbitMQ failed or did not answer in time; says what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError(pub String);

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrokerError {}

/// Every wait on the broker has a deadline: a stalled broker must turn into
/// an error (a 503, a retry), never a request or worker hung forever.
pub(crate) async fn deadline<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerError(format!("{what}: {e}"))),
        Err(_) => Err(BrokerError(format!("{what}: no answer within {timeout:?}"))),
    }
}

/// A clock's reading as wall time: job ids and result expiry are dates, the
/// same in every gateway and worker (read it from a `UnixClock`).
pub fn wall_time(clock: &dyn rempart::clock::Clock) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(clock.now().as_nanos())
}
