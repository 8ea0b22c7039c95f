//! A deadline in scope bounds retries and pipelines (issue 10): no pause
//! ends past it, and no attempt outlives it. On tokio's paused time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rempart::deadline::Deadline;
use rempart::pipeline::{Pipeline, PipelineError};
use rempart::retry::{Backoff, GiveUp, Jitter, Retry, RetryError, RetryListener};
use rempart::timeout::Elapsed;
use tokio::time::Instant;

const S: Duration = Duration::from_secs(1);

fn constant(pause: Duration, attempts: u32) -> rempart::retry::RetryBuilder {
    Retry::builder()
        .max_attempts(attempts)
        .backoff(Backoff::constant(pause))
        .jitter(Jitter::None)
}

/// An operation that does not answer for a minute, counting its calls.
async fn hang(calls: &AtomicU32) -> Result<(), ()> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(60 * S).await;
    Ok(())
}

#[derive(Debug, Default, Clone)]
struct GiveUps(Arc<Mutex<Vec<(u32, GiveUp)>>>);

impl RetryListener for GiveUps {
    fn on_give_up(&self, _: &str, attempts: u32, why: GiveUp) {
        self.0.lock().unwrap().push((attempts, why));
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_whose_deadline_has_passed_does_not_retry() {
    let give_ups = GiveUps::default();
    let retry = constant(Duration::from_millis(100), 5)
        .listener(give_ups.clone())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = Deadline::after(S)
        .scope(async {
            tokio::time::sleep(2 * S).await;
            retry
                .call(|| async { Err::<(), _>(calls.fetch_add(1, Ordering::SeqCst)) })
                .await
                .unwrap_err()
        })
        .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry past the deadline"
    );
    assert!(
        matches!(
            err,
            RetryError::Exhausted {
                attempts: 1,
                error: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), 2 * S, "no pause taken");
    assert_eq!(*give_ups.0.lock().unwrap(), [(1, GiveUp::OutOfTime)]);
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_would_cross_the_deadline_gives_up_at_once_with_the_last_error() {
    let retry = constant(S, 10).build().unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = Deadline::after(Duration::from_millis(2500))
        .scope(async {
            retry
                .call(|| async { Err::<(), _>(calls.fetch_add(1, Ordering::SeqCst) + 1) })
                .await
                .unwrap_err()
        })
        .await;
    // Attempts at 0, 1 and 2 s; the next pause would end at 3 s, past 2.5 s.
    assert!(
        matches!(
            err,
            RetryError::Exhausted {
                attempts: 3,
                error: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), 2 * S, "gave up at once, without the pause");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_is_not_waited_for() {
    use rempart::retry::Decision;
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(S, 2.0, 60 * S).unwrap())
        .build()
        .unwrap();
    let start = Instant::now();
    let answer = Deadline::after(10 * S)
        .scope(retry.call_with(
            |r: Result<&u16, &()>| match r {
                Ok(503) => Decision::RetryAfter(30 * S),
                _ => Decision::Accept,
            },
            || async { Ok::<u16, ()>(503) },
        ))
        .await;
    assert_eq!(answer.unwrap(), 503, "the last answer stands");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_retry_attempt_timeout_is_cut_at_the_deadline() {
    let retry = constant(Duration::from_millis(100), 5)
        .attempt_timeout(10 * S)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = Deadline::after(3 * S)
        .scope(retry.call(|| hang(&calls)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::TimedOut { attempts: 1, limit } if limit == 3 * S),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), 3 * S);
}

#[tokio::test(start_paused = true)]
async fn pipeline_attempts_are_cut_at_the_deadline_and_not_retried_past_it() {
    let p = Pipeline::builder("slow")
        .retry(constant(Duration::from_millis(10), 3).build().unwrap())
        .timeout(10 * S)
        .build();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = Deadline::after(2 * S)
        .scope(p.call(|| hang(&calls)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::TimedOut(Elapsed { limit }) if limit == 2 * S),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), 2 * S);
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_without_a_timeout_still_ends_its_attempt_at_the_deadline() {
    let p = Pipeline::builder("no-timeout").build();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = Deadline::after(S)
        .scope(p.call(|| hang(&calls)))
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::TimedOut(_)), "{err:?}");
    assert_eq!(start.elapsed(), S);
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_the_pipeline_timeout_and_retries_are_unchanged() {
    let p = Pipeline::builder("plain")
        .retry(constant(Duration::from_millis(10), 3).build().unwrap())
        .timeout(S)
        .build();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = p.call(|| hang(&calls)).await.unwrap_err();
    assert!(matches!(err, PipelineError::TimedOut(Elapsed { limit }) if limit == S));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(3020));
}

#[tokio::test(start_paused = true)]
async fn a_scope_made_outside_a_sooner_one_still_ends_with_it() {
    // Built before the outer scope exists, awaited inside it: the sooner
    // deadline is the one in force, so the inner work cannot outlive its caller.
    let inner = Deadline::after(10 * S).scope(async { Deadline::current().unwrap().remaining() });
    let left = Deadline::after(2 * S).scope(inner).await;
    assert_eq!(left, 2 * S);
    let outside = Deadline::after(3 * S).scope(async {
        tokio::time::sleep(S).await;
        Deadline::current().unwrap().remaining()
    });
    assert_eq!(outside.await, 2 * S, "the scope holds across an await");
    assert_eq!(Deadline::current(), None, "and ends with its work");
}
