//! When a relay pipeline claims again, and when it declares itself idle
//! (see the relay's module doc for why idleness is declared at all).

use std::time::Duration;

use rempart::retry::Backoff;

use crate::decision::CycleReport;

/// A pipeline's pacing settings (from [`crate::RelayConfig`]).
#[derive(Debug, Clone)]
pub struct Pace {
    /// The pause between claims while rows keep coming.
    pub busy_poll: Duration,
    /// How long without a row before the pipeline declares itself idle.
    pub idle_after: Duration,
    /// The pause after failed cycles (the n-th in a row).
    pub backoff: Backoff,
}

/// What a pipeline does after a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Claim again at once: the last claim was full, more rows wait.
    Now,
    /// Claim again after this pause, without asking writers to notify.
    Poll(Duration),
    /// Declare idle: writers notify from now on; wait for a notification
    /// or the poll interval.
    Idle,
    /// Failures: claim again after this pause, whatever is notified.
    Backoff(Duration),
}

/// The step after a cycle that reported `report`, the `failures`-th in a row
/// to fail (0: it did not), `since_rows` after this pipeline last claimed a
/// row (or started).
///
/// ```
/// use std::time::Duration;
/// use rempart::retry::Backoff;
/// use rempart_outbox::decision::CycleReport;
/// use rempart_outbox::pace::{next, Next, Pace};
///
/// let pace = Pace {
///     busy_poll: Duration::from_millis(5),
///     idle_after: Duration::from_millis(25),
///     backoff: Backoff::constant(Duration::from_millis(100)),
/// };
/// let empty = CycleReport::default();
/// assert_eq!(next(&empty, 0, Duration::from_millis(10), &pace), Next::Poll(Duration::from_millis(5)));
/// assert_eq!(next(&empty, 0, Duration::from_millis(30), &pace), Next::Idle);
/// ```
pub fn next(report: &CycleReport, failures: u32, since_rows: Duration, pace: &Pace) -> Next {
    if failures > 0 {
        return Next::Backoff(pace.backoff.delay(failures));
    }
    if report.full && report.published + report.dead > 0 {
        return Next::Now;
    }
    if report.claimed > 0 || since_rows < pace.idle_after {
        return Next::Poll(pace.busy_poll);
    }
    Next::Idle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> Pace {
        Pace {
            busy_poll: Duration::from_millis(5),
            idle_after: Duration::from_millis(25),
            backoff: Backoff::constant(Duration::from_millis(100)),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rows(claimed: usize, full: bool) -> CycleReport {
        CycleReport {
            claimed,
            published: claimed,
            full,
            ..CycleReport::default()
        }
    }

    #[test]
    fn a_full_claim_claims_again_at_once() {
        assert_eq!(next(&rows(8, true), 0, ms(0), &pace()), Next::Now);
    }

    #[test]
    fn rows_keep_the_pipeline_polling_without_notifications() {
        assert_eq!(next(&rows(3, false), 0, ms(0), &pace()), Next::Poll(ms(5)));
        // Even long after the previous rows: these rows are news.
        assert_eq!(
            next(&rows(3, false), 0, ms(60_000), &pace()),
            Next::Poll(ms(5))
        );
    }

    #[test]
    fn empty_claims_poll_until_idle_after_then_idle() {
        let empty = CycleReport::default();
        for t in [0, 5, 10, 24] {
            assert_eq!(
                next(&empty, 0, ms(t), &pace()),
                Next::Poll(ms(5)),
                "at {t} ms"
            );
        }
        assert_eq!(next(&empty, 0, ms(25), &pace()), Next::Idle);
        assert_eq!(next(&empty, 0, ms(60_000), &pace()), Next::Idle);
    }

    #[test]
    fn failures_back_off_before_anything_else() {
        let failed = CycleReport {
            claimed: 4,
            retried: 4,
            full: true,
            ..CycleReport::default()
        };
        assert_eq!(next(&failed, 1, ms(0), &pace()), Next::Backoff(ms(100)));
        assert_eq!(
            next(&failed, 1, ms(60_000), &pace()),
            Next::Backoff(ms(100))
        );
        let p = Pace {
            backoff: Backoff::exponential(ms(100), 2.0, Duration::from_secs(5)).unwrap(),
            ..pace()
        };
        assert_eq!(next(&failed, 3, ms(0), &p), Next::Backoff(ms(400)));
    }

    #[test]
    fn a_full_claim_of_retries_only_does_not_spin() {
        // Nothing published or dead-lettered: the rows are backing off,
        // claiming again at once would find them again.
        let stuck = CycleReport {
            claimed: 8,
            retried: 8,
            full: true,
            ..CycleReport::default()
        };
        assert_eq!(next(&stuck, 0, ms(0), &pace()), Next::Poll(ms(5)));
    }

    #[test]
    fn idle_after_zero_idles_at_the_first_empty_claim() {
        let p = Pace {
            idle_after: Duration::ZERO,
            ..pace()
        };
        assert_eq!(next(&CycleReport::default(), 0, ms(0), &p), Next::Idle);
        assert_eq!(next(&rows(1, false), 0, ms(0), &p), Next::Poll(ms(5)));
    }
}
