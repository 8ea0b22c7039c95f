//! The relay's decisions, as plain functions over plain data (time and
//! randomness passed in): what a batch's publish order is, whether a row may
//! be published at all, what a failure does to a row, and how long the relay
//! waits before its next claim. The I/O in `relay.rs` only applies them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rempart::retry::{Backoff, Jitter};
use rempart::rng::Rng;

use crate::message::Envelope;

/// Whether a failed publish is worth trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The broker is down, slow or refused for now: the row stays and is retried.
    Transient,
    /// The message itself is at fault (too large, refused as such): it is
    /// moved aside to the dead-letter state.
    Permanent,
}

/// A destination's failure to publish one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    /// Retry or dead-letter.
    pub kind: FailureKind,
    /// What happened, stored in `last_error`.
    pub message: String,
}

impl PublishError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        PublishError {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    /// A failure of the message itself.
    pub fn permanent(message: impl Into<String>) -> Self {
        PublishError {
            kind: FailureKind::Permanent,
            message: message.into(),
        }
    }
}

/// How failed rows are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The pause before a row's retry n.
    pub backoff: Backoff,
    /// Its randomisation.
    pub jitter: Jitter,
    /// Transient failures of one row before it is dead-lettered; `None`
    /// retries for ever (a broker outage must not turn orders into dead letters).
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(10),
            },
            jitter: Jitter::Full,
            max_attempts: None,
        }
    }
}

/// What becomes of one claimed row after a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// The broker acknowledged it.
    Published,
    /// Try again at `next_attempt_at` (ms since the Unix epoch).
    Retry {
        /// Failed attempts so far.
        attempts: u32,
        /// Not before this.
        next_attempt_at: u64,
        /// The failure.
        error: String,
    },
    /// Moved aside for an operator, with its error.
    Dead {
        /// Failed attempts so far.
        attempts: u32,
        /// The failure.
        error: String,
    },
}

/// What a failed publish of a row that had failed `attempts` times before does.
pub fn after_failure(
    attempts: u32,
    error: &PublishError,
    policy: &RetryPolicy,
    now_ms: u64,
    rng: &mut dyn Rng,
) -> RowOutcome {
    let attempts = attempts.saturating_add(1);
    let out_of_attempts = policy.max_attempts.is_some_and(|max| attempts >= max);
    if error.kind == FailureKind::Permanent || out_of_attempts {
        let error = if out_of_attempts && error.kind == FailureKind::Transient {
            format!("gave up after {attempts} attempts: {}", error.message)
        } else {
            error.message.clone()
        };
        return RowOutcome::Dead { attempts, error };
    }
    let d = policy.backoff.delay(attempts);
    let d = policy
        .jitter
        .apply(d, d, policy.backoff.initial(), policy.backoff.max(), rng);
    let wait = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    RowOutcome::Retry {
        attempts,
        next_attempt_at: now_ms.saturating_add(wait),
        error: error.message.clone(),
    }
}

/// One publish of a cycle: the row, its failed attempts before, the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The outbox id.
    pub id: uuid::Uuid,
    /// Failed attempts before this one.
    pub attempts: u32,
    /// The destination's answer (or the admission check's refusal).
    pub result: Result<(), PublishError>,
}

/// What becomes of each row a cycle tried, and the cycle's counts.
///
/// In an outage (transient failures and nothing published), a failed row is
/// not held against itself: its attempts stay, it is due again at once, and
/// the relay's backoff and circuit breaker pace the retries. So an outage
/// never dead-letters a row through `max_attempts`, and the rows drain as
/// soon as the broker is back rather than at the end of each row's backoff.
/// Otherwise a transient failure is that message's (see [`after_failure`]).
pub fn settle(
    attempts: Vec<Attempt>,
    policy: &RetryPolicy,
    now_ms: u64,
    rng: &mut dyn Rng,
) -> (CycleReport, Vec<(uuid::Uuid, RowOutcome)>) {
    let published = attempts.iter().filter(|a| a.result.is_ok()).count();
    let transient = attempts
        .iter()
        .any(|a| matches!(&a.result, Err(e) if e.kind == FailureKind::Transient));
    let outage = transient && published == 0;
    let mut report = CycleReport::default();
    let outcomes = attempts
        .into_iter()
        .map(|a| {
            let outcome = match a.result {
                Ok(()) => RowOutcome::Published,
                Err(e) if outage && e.kind == FailureKind::Transient => RowOutcome::Retry {
                    attempts: a.attempts,
                    next_attempt_at: now_ms,
                    error: e.message,
                },
                Err(e) => after_failure(a.attempts, &e, policy, now_ms, rng),
            };
            match &outcome {
                RowOutcome::Published => report.published += 1,
                RowOutcome::Retry { .. } => report.retried += 1,
                RowOutcome::Dead { .. } => report.dead += 1,
            }
            (a.id, outcome)
        })
        .collect();
    (report, outcomes)
}

/// A check of a payload against its event type's declared shape.
pub type PayloadCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The declared payload shape per event type. A type with no entry must
/// still be JSON.
#[derive(Clone, Default)]
pub struct PayloadChecks {
    by_type: HashMap<String, PayloadCheck>,
}

impl fmt::Debug for PayloadChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_type.keys()).finish()
    }
}

impl PayloadChecks {
    /// No declared types.
    pub fn new() -> Self {
        Self::default()
    }

    /// Payloads of `event_type` must deserialize as `T`.
    pub fn declare<T: serde::de::DeserializeOwned>(mut self, event_type: &str) -> Self {
        let name = event_type.to_owned();
        let check: PayloadCheck = Arc::new(move |payload: &str| {
            serde_json::from_str::<T>(payload)
                .map(drop)
                .map_err(|e| format!("payload is not a valid {name}: {e}"))
        });
        self.by_type.insert(event_type.to_owned(), check);
        self
    }

    /// Payloads of `event_type` must pass `check`.
    pub fn declare_with(mut self, event_type: &str, check: PayloadCheck) -> Self {
        self.by_type.insert(event_type.to_owned(), check);
        self
    }

    fn check(&self, event_type: &str, payload: &str) -> Result<(), String> {
        match self.by_type.get(event_type) {
            Some(check) => check(payload),
            None => serde_json::from_str::<serde::de::IgnoredAny>(payload)
                .map(drop)
                .map_err(|e| format!("payload is not JSON: {e}")),
        }
    }
}

/// Whether a row may be published at all; `Err` is a dead letter's reason.
/// Checked before the publish, so a bad message never reaches the broker
/// and never blocks its aggregate.
pub fn admissible(
    row: &Envelope,
    max_payload: Option<usize>,
    checks: &PayloadChecks,
) -> Result<(), String> {
    if let Some(max) = max_payload {
        let size = row.payload.len() + row.headers.len();
        if size > max {
            return Err(format!(
                "message of {size} bytes (payload and headers) is over the destination's limit of {max} bytes"
            ));
        }
    }
    row.header_map()?;
    checks.check(&row.event_type, &row.payload)
}

/// The batch as publish chains, one per aggregate, each in `seq` order:
/// chains run side by side (pipelined), a chain's messages one after the
/// other, so a failure stops its aggregate and no later message overtakes it.
/// Chains come in the order of their first row in the batch.
pub fn chains(rows: Vec<Envelope>) -> Vec<Vec<Envelope>> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut out: Vec<Vec<Envelope>> = Vec::new();
    for row in rows {
        let key = (row.aggregate_type.clone(), row.aggregate_id.clone());
        match index.get(&key) {
            Some(&i) => out[i].push(row),
            None => {
                index.insert(key, out.len());
                out.push(vec![row]);
            }
        }
    }
    for chain in &mut out {
        chain.sort_by_key(|r| r.seq);
    }
    out
}

/// What one relay cycle did, for deciding the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CycleReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows the broker acknowledged.
    pub published: usize,
    /// Rows left for a retry after a transient failure.
    pub retried: usize,
    /// Rows moved to the dead-letter state.
    pub dead: usize,
    /// The claim hit its limit: there is probably more.
    pub full: bool,
}

impl CycleReport {
    /// Did the destination look down: transient failures and nothing
    /// published? One message refused among many published is that message's
    /// problem (its own backoff), not a reason to open the breaker.
    pub fn destination_failing(&self) -> bool {
        self.retried > 0 && self.published == 0
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
