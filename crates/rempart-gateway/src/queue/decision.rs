//! A deferred job's life as pure functions: which attempt a delivery is, how
//! long to wait before the next one, what to do after a replay, and what a
//! poll answers. No clock and no broker here: time and randomness come in.

use std::time::{Duration, SystemTime};

use rempart::retry::{Backoff, Jitter};
use rempart::rng::Rng;

/// The AMQP header carrying the attempt a delivery is (1 = first). The worker
/// increments it on every re-publish: seed 002 read it but never wrote it, so
/// its failing jobs looped forever and never reached the dead-letter queue.
pub const ATTEMPT_HEADER: &str = "x-attempt";

/// The AMQP header carrying the last replay error on a delayed or dead job.
pub const ERROR_HEADER: &str = "x-last-error";

/// The AMQP header marking a job an operator put back from the dead-letter
/// queue (`rempart jobs dlq requeue`): its value counts the requeues.
pub const REQUEUED_HEADER: &str = "x-requeued";

/// The attempt a delivery is, from its [`ATTEMPT_HEADER`] value: absent means
/// the first; a value below 1 (a hand-made message) counts as the first too,
/// so it can never skip the dead-letter threshold by starting negative.
pub fn attempt_of(header: Option<i64>) -> u32 {
    match header {
        Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
        _ => 1,
    }
}

/// How a failed job is retried: seed 002's exponential backoff with equal
/// jitter (`d/2 + U(0, d/2)`, never less than half the backoff).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPlan {
    /// Attempts in all, the first included; after the last failed one the
    /// job is dead-lettered.
    pub max_attempts: u32,
    /// The delay before retry `n`, before jitter.
    pub backoff: Backoff,
}

impl RetryPlan {
    /// `max_attempts` attempts, the delays doubling from `initial` up to `max`;
    /// an error names the key and how to fix it.
    pub fn exponential(
        max_attempts: u32,
        initial: Duration,
        max: Duration,
    ) -> Result<RetryPlan, String> {
        if max_attempts == 0 {
            return Err(
                "queue.max_attempts: 0 attempts would dead-letter every job unread; use at least 1"
                    .into(),
            );
        }
        let backoff =
            Backoff::exponential(initial, 2.0, max).map_err(|e| format!("queue.backoff: {e}"))?;
        Ok(RetryPlan {
            max_attempts,
            backoff,
        })
    }

    /// The wait after failed attempt `attempt` (1-based), jittered.
    pub fn delay_after(&self, attempt: u32, rng: &mut dyn Rng) -> Duration {
        let d = self.backoff.delay(attempt);
        Jitter::Equal.apply(d, d, self.backoff.initial(), self.backoff.max(), rng)
    }

    /// The range [`delay_after`](Self::delay_after) stays in: `[d/2, d]`.
    pub fn delay_bounds(&self, attempt: u32) -> (Duration, Duration) {
        let d = self.backoff.delay(attempt);
        (d / 2, d)
    }
}

/// What the upstream answered when a job was replayed, kept for the poll.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAnswer {
    /// The HTTP status.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// How one replay went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The upstream answered for good (2xx, and 4xx too: asking again would
    /// get the same refusal).
    Answered(StoredAnswer),
    /// It was called and could not answer now (unreachable, 5xx, timeout).
    Failed(String),
    /// It was not called at all (breaker open, bulkhead full): the attempt
    /// is not spent, or a long outage would dead-letter every job without a
    /// single real call.
    NotCalled(String),
}

/// Whether a worker takes deliveries now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The service would take a replay: consume.
    Ready,
    /// It would refuse one without a call (says why): take no delivery until
    /// it would, so a job waiting out an outage costs the broker nothing.
    Held(&'static str),
}

/// Whether to consume, from the service's state now: `circuit_allows`, its
/// breaker would let a call through (closed, or half-open with a trial
/// free); `bulkhead_full`, every slot is taken.
pub fn readiness(circuit_allows: bool, bulkhead_full: bool) -> Readiness {
    if !circuit_allows {
        Readiness::Held("the circuit is open")
    } else if bulkhead_full {
        Readiness::Held("the service is busy (bulkhead full)")
    } else {
        Readiness::Ready
    }
}

/// What the worker does with a delivery once it has been replayed or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store the answer (first stored wins), then ack.
    Done(StoredAnswer),
    /// Re-publish to the delay queue with `attempt` in [`ATTEMPT_HEADER`]
    /// and the error in [`ERROR_HEADER`], then ack the original.
    Retry {
        /// How long the message waits in the delay queue.
        delay: Duration,
        /// The attempt the redelivery will be.
        attempt: u32,
        /// The failure that caused it.
        error: String,
    },
    /// The service was not called: re-publish to wait `delay` as the same
    /// `attempt` (not spent), then ack the original.
    Wait {
        /// How long the message waits in a delay queue.
        delay: Duration,
        /// The attempt the redelivery still is.
        attempt: u32,
        /// Why the service was not called.
        error: String,
    },
    /// Publish to the dead-letter queue with the reason, then ack.
    DeadLetter {
        /// Why: the last error and how many attempts were made.
        reason: String,
    },
    /// The message cannot be read: to the dead-letter queue at once, never
    /// acked and dropped (seed 002 lost these silently) nor retried.
    Poison {
        /// What is wrong with it.
        reason: String,
    },
}

/// The decision after `attempt` (1-based) ended with `outcome`.
pub fn decide(
    plan: &RetryPlan,
    attempt: u32,
    outcome: ReplayOutcome,
    rng: &mut dyn Rng,
) -> Decision {
    match outcome {
        ReplayOutcome::Answered(answer) => Decision::Done(answer),
        ReplayOutcome::Failed(error) if attempt >= plan.max_attempts => Decision::DeadLetter {
            reason: format!("gave up after {attempt} attempts; last error: {error}"),
        },
        ReplayOutcome::Failed(error) => Decision::Retry {
            delay: plan.delay_after(attempt, rng),
            attempt: attempt + 1,
            error,
        },
        // With a single attempt there are no delay queues to wait in.
        ReplayOutcome::NotCalled(error) if plan.max_attempts <= 1 => Decision::DeadLetter {
            reason: format!("not called and no attempt left to wait for: {error}"),
        },
        ReplayOutcome::NotCalled(error) => Decision::Wait {
            delay: plan.delay_after(attempt, rng),
            attempt,
            error,
        },
    }
}

/// Where a job stands, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not yet replayed.
    Queued,
    /// Replayed and failed; waiting before attempt `attempt`.
    Retrying {
        /// The next attempt.
        attempt: u32,
        /// The last failure.
        error: String,
    },
    /// The upstream answered.
    Done(StoredAnswer),
    /// Dead-lettered.
    Dead {
        /// Why.
        error: String,
    },
}

impl JobState {
    /// Done and dead are final: a late or duplicate delivery cannot undo them.
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Done(_) | JobState::Dead { .. })
    }

    /// The state after `next` is reported: a final state never changes, so
    /// the first stored result wins and a stale retry cannot reopen a job.
    pub fn advance(self, next: JobState) -> JobState {
        if self.is_final() { self } else { next }
    }
}

/// What the worker does with a delivery, given the state stored for its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    /// Not final yet (or not known here): replay it.
    Replay,
    /// Dead, and an operator requeued it: reopen the job, then replay it.
    Revive,
    /// Already final: a redelivery after a crash between the store and the
    /// ack. Ack it without calling the upstream again.
    Duplicate,
}

/// Triage of a delivery: only an explicit requeue reopens a dead job, and
/// nothing reopens a done one, so a stale redelivery can never undo a result.
pub fn triage(stored: Option<&JobState>, requeued: bool) -> Triage {
    match stored {
        Some(JobState::Dead { .. }) if requeued => Triage::Revive,
        Some(s) if s.is_final() => Triage::Duplicate,
        _ => Triage::Replay,
    }
}

/// What `GET /jobs/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The job is known and within its time to live.
    Found(JobState),
    /// The job existed but its result has expired: 410 Gone.
    Gone,
    /// No such job: 404.
    Unknown,
}

/// The answer to a poll for a job accepted at `accepted_at` (read from its
/// id), given what the store holds (`None` once expired or never seen).
/// A job older than `result_ttl` that the store no longer has is gone, not
/// unknown: the client did get a 202 for it.
pub fn poll(
    stored: Option<JobState>,
    accepted_at: Option<SystemTime>,
    result_ttl: Duration,
    now: SystemTime,
) -> Poll {
    match (stored, accepted_at) {
        (Some(state), _) => Poll::Found(state),
        (None, Some(at)) if at + result_ttl <= now => Poll::Gone,
        (None, _) => Poll::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rempart::rng::SplitMix64;

    fn plan() -> RetryPlan {
        RetryPlan::exponential(5, Duration::from_secs(1), Duration::from_secs(60)).unwrap()
    }

    fn failed() -> ReplayOutcome {
        ReplayOutcome::Failed("503 from upstream".into())
    }

    #[test]
    fn the_worker_consumes_only_while_the_service_would_be_called() {
        assert_eq!(readiness(true, false), Readiness::Ready);
        // An open circuit holds whatever the bulkhead says: it is why.
        for full in [false, true] {
            assert!(matches!(readiness(false, full), Readiness::Held(w) if w.contains("circuit")));
        }
        assert!(matches!(readiness(true, true), Readiness::Held(w) if w.contains("bulkhead")));
    }

    #[test]
    fn a_job_not_called_waits_without_spending_an_attempt_however_long_it_lasts() {
        let plan = plan();
        let mut rng = SplitMix64::seeded(3);
        for attempt in 1..=plan.max_attempts {
            for _ in 0..100 {
                match decide(
                    &plan,
                    attempt,
                    ReplayOutcome::NotCalled("circuit open".into()),
                    &mut rng,
                ) {
                    Decision::Wait {
                        attempt: a, delay, ..
                    } => {
                        assert_eq!(a, attempt, "the attempt is not spent");
                        let (lo, hi) = plan.delay_bounds(attempt);
                        assert!(delay >= lo && delay <= hi);
                    }
                    other => panic!("attempt {attempt}: {other:?}"),
                }
            }
        }
        let single =
            RetryPlan::exponential(1, Duration::from_secs(1), Duration::from_secs(60)).unwrap();
        assert!(matches!(
            decide(
                &single,
                1,
                ReplayOutcome::NotCalled("open".into()),
                &mut rng
            ),
            Decision::DeadLetter { .. }
        ));
    }

    #[test]
    fn only_an_operator_requeue_reopens_a_dead_job_and_nothing_reopens_a_done_one() {
        let dead = JobState::Dead {
            error: "503".into(),
        };
        let done = JobState::Done(StoredAnswer {
            status: 200,
            content_type: None,
            body: b"ok".to_vec(),
        });
        let retrying = JobState::Retrying {
            attempt: 2,
            error: "503".into(),
        };
        assert_eq!(triage(Some(&dead), true), Triage::Revive);
        assert_eq!(triage(Some(&dead), false), Triage::Duplicate);
        assert_eq!(triage(Some(&done), true), Triage::Duplicate);
        assert_eq!(triage(Some(&done), false), Triage::Duplicate);
        assert_eq!(triage(Some(&retrying), true), Triage::Replay);
        assert_eq!(triage(Some(&JobState::Queued), false), Triage::Replay);
        // A store that never saw it (a memory store in another process).
        assert_eq!(triage(None, true), Triage::Replay);
        assert_eq!(triage(None, false), Triage::Replay);
    }

    #[test]
    fn a_missing_or_nonsense_attempt_header_is_the_first_attempt() {
        assert_eq!(attempt_of(None), 1);
        assert_eq!(attempt_of(Some(0)), 1);
        assert_eq!(attempt_of(Some(-4)), 1);
        assert_eq!(attempt_of(Some(3)), 3);
        assert_eq!(attempt_of(Some(i64::MAX)), u32::MAX);
    }

    #[test]
    fn a_job_failing_forever_is_dead_lettered_at_exactly_max_attempts() {
        let mut rng = SplitMix64::seeded(1);
        let mut attempt = attempt_of(None);
        let mut replays = 0;
        loop {
            replays += 1;
            match decide(&plan(), attempt, failed(), &mut rng) {
                Decision::Retry { attempt: next, .. } => {
                    assert_eq!(next, attempt + 1, "each retry counts one more attempt");
                    attempt = next;
                }
                Decision::DeadLetter { reason } => {
                    assert!(reason.contains("5 attempts"), "{reason}");
                    assert!(reason.contains("503 from upstream"), "{reason}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(replays < 100, "never dead-lettered");
        }
        assert_eq!(replays, 5);
    }

    #[test]
    fn an_answer_is_done_whatever_the_attempt() {
        let answer = StoredAnswer {
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
        };
        let mut rng = SplitMix64::seeded(2);
        for attempt in [1, 5, 9] {
            assert_eq!(
                decide(
                    &plan(),
                    attempt,
                    ReplayOutcome::Answered(answer.clone()),
                    &mut rng
                ),
                Decision::Done(answer.clone())
            );
        }
    }

    #[test]
    fn delays_follow_the_seed_schedule_within_equal_jitter() {
        let mut rng = SplitMix64::seeded(3);
        for (attempt, secs) in [(1, 1), (2, 2), (3, 4), (4, 8), (7, 60), (40, 60)] {
            let (lo, hi) = plan().delay_bounds(attempt);
            assert_eq!(hi, Duration::from_secs(secs));
            assert_eq!(lo, hi / 2);
        }
        let d = plan().delay_after(3, &mut rng);
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
            "{d:?}"
        );
    }

    #[test]
    fn zero_attempts_is_refused_with_the_key() {
        let e =
            RetryPlan::exponential(0, Duration::from_secs(1), Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("max_attempts"), "{e}");
    }

    #[test]
    fn final_states_are_not_overwritten() {
        let done = JobState::Done(StoredAnswer {
            status: 200,
            content_type: None,
            body: b"first".to_vec(),
        });
        let later = JobState::Done(StoredAnswer {
            status: 200,
            content_type: None,
            body: b"second".to_vec(),
        });
        assert_eq!(done.clone().advance(later.clone()), done);
        let retry = JobState::Retrying {
            attempt: 2,
            error: "x".into(),
        };
        assert_eq!(done.clone().advance(retry.clone()), done);
        assert_eq!(JobState::Queued.advance(retry.clone()), retry);
        assert_eq!(retry.advance(later.clone()), later);
    }

    #[test]
    fn polls_tell_unknown_from_gone() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(86_400);
        assert_eq!(
            poll(Some(JobState::Queued), Some(t0), ttl, t0),
            Poll::Found(JobState::Queued)
        );
        assert_eq!(poll(None, Some(t0), ttl, t0 + ttl), Poll::Gone);
        assert_eq!(
            poll(None, Some(t0), ttl, t0 + ttl - Duration::from_secs(1)),
            Poll::Unknown
        );
        assert_eq!(poll(None, None, ttl, t0 + ttl * 3), Poll::Unknown);
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_its_bounds(
            seed in any::<u64>(),
            attempt in 1u32..200,
            initial_ms in 1u64..5_000,
            extra_ms in 0u64..600_000,
        ) {
            let plan = RetryPlan::exponential(
                10,
                Duration::from_millis(initial_ms),
                Duration::from_millis(initial_ms + extra_ms),
            ).unwrap();
            let mut rng = SplitMix64::seeded(seed);
            let d = plan.delay_after(attempt, &mut rng);
            let (lo, hi) = plan.delay_bounds(attempt);
            prop_assert!(d >= lo && d <= hi, "{d:?} outside [{lo:?}, {hi:?}]");
            prop_assert!(hi <= plan.backoff.max());
        }

        #[test]
        fn a_failing_job_is_never_retried_past_max_attempts(
            seed in any::<u64>(),
            max in 1u32..20,
            attempt in 1u32..40,
        ) {
            let plan = RetryPlan::exponential(max, Duration::from_millis(10), Duration::from_secs(1)).unwrap();
            let mut rng = SplitMix64::seeded(seed);
            match decide(&plan, attempt, failed(), &mut rng) {
                Decision::Retry { attempt: next, .. } => {
                    prop_assert!(attempt < max);
                    prop_assert_eq!(next, attempt + 1);
                }
                Decision::DeadLetter { .. } => prop_assert!(attempt >= max),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
