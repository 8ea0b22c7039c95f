//! Hedged calls on tokio's paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rempart::hedge::{Hedge, HedgeDelay};
use rempart::retry::RetryBudget;
use tokio::time::{Instant, sleep};

const MS: Duration = Duration::from_millis(1);

struct DropGuard(Arc<AtomicBool>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn fixed(ms: u64) -> Hedge {
    Hedge::builder()
        .delay(HedgeDelay::Fixed(MS * ms as u32))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_sends_no_hedge() {
    let hedge = fixed(50);
    let start = Instant::now();
    let r = hedge
        .call(|| async {
            sleep(MS * 20).await;
            Ok::<_, ()>(1)
        })
        .await;
    assert_eq!(r, Ok(1));
    assert_eq!(start.elapsed(), MS * 20);
    assert_eq!(hedge.metrics().hedges_sent, 0);
}

#[tokio::test(start_paused = true)]
async fn the_first_success_wins_and_the_loser_is_cancelled() {
    let hedge = fixed(50);
    let first_dropped = Arc::new(AtomicBool::new(false));
    let n = AtomicU32::new(0);
    let start = Instant::now();
    let r = hedge
        .call(|| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let guard = DropGuard(Arc::clone(&first_dropped));
            async move {
                if i == 0 {
                    let _g = guard; // the slow first copy
                    sleep(MS * 10_000).await;
                    Ok::<_, ()>("first")
                } else {
                    std::mem::forget(guard);
                    sleep(MS * 10).await;
                    Ok("hedge")
                }
            }
        })
        .await;
    assert_eq!(r, Ok("hedge"));
    assert_eq!(start.elapsed(), MS * 60, "50 ms hedge delay + 10 ms");
    assert!(
        first_dropped.load(Ordering::SeqCst),
        "the losing copy must be dropped"
    );
    let m = hedge.metrics();
    assert_eq!((m.calls, m.hedges_sent, m.hedges_won), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_copy_waits_for_the_other() {
    let hedge = fixed(50);
    let n = AtomicU32::new(0);
    let r = hedge
        .call(|| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 0 {
                    sleep(MS * 70).await;
                    Err("first failed")
                } else {
                    sleep(MS * 100).await;
                    Ok("second")
                }
            }
        })
        .await;
    assert_eq!(r, Ok("second"));
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_sends_no_hedge() {
    let budget = Arc::new(RetryBudget::new(0, 0).unwrap());
    let hedge = Hedge::builder()
        .delay(HedgeDelay::Fixed(MS * 50))
        .budget(budget)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let r = hedge
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                sleep(MS * 500).await;
                Ok::<_, ()>(1)
            }
        })
        .await;
    assert_eq!(r, Ok(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), MS * 500);
    assert_eq!(hedge.metrics().budget_refusals, 1);
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_follows_recent_latencies() {
    let hedge = Hedge::builder()
        .delay(HedgeDelay::Percentile {
            percentile: 95.0,
            min_samples: 20,
            until_known: MS * 100,
        })
        .build()
        .unwrap();
    assert_eq!(hedge.current_delay(), MS * 100);
    for ms in 1..=20u32 {
        hedge
            .call(|| async move {
                sleep(MS * ms).await;
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
    }
    assert_eq!(
        hedge.current_delay(),
        MS * 19,
        "nearest-rank p95 of 1..=20 ms"
    );
    assert!(
        Hedge::builder()
            .delay(HedgeDelay::Percentile {
                percentile: 150.0,
                min_samples: 1,
                until_known: MS
            })
            .build()
            .is_err()
    );
}
