//! The engine's two clocks: a step call cut by the step timeout, and a saga
//! that runs out of its deadline while a step keeps failing.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rempart::clock::ManualClock;
use rempart_saga::{EngineConfig, SagaEngine, SagaStatus, SagaStore, StepStatus};
use support::*;

both_backends!(
    a_step_that_never_answers_is_cut_by_the_step_timeout_then_undone_by_key,
    a_saga_past_its_deadline_stops_retrying_and_compensates,
);

async fn a_step_that_never_answers_is_cut_by_the_step_timeout_then_undone_by_key(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    world.hang.lock().unwrap().insert("charge".into());
    // The timeout is tokio's: the hung call is dropped, counted as a
    // retryable failure, retried, then the saga gives up. Nothing here waits
    // for a fixed time; the worker runs until the saga is final.
    let saga = order_builder(&world)
        .step_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut cfg = config();
    cfg.limits.max_step_attempts = 2;
    let engine = SagaEngine::new(store, vec![saga], cfg).unwrap();
    let id = engine.start("create_order", order()).await.unwrap();
    let done = run_until_final(&engine, &[id]).await;
    let r = &done[0];
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(r.steps[1].attempts, 2, "timed out twice, then gave up");
    let err = r.error.as_deref().unwrap();
    assert!(
        err.contains("PROCESS_PAYMENT") && err.contains("timed out"),
        "{err}"
    );
    // A timed-out charge may have gone through: it is refunded by key,
    // then the reservation is released with its stored output.
    assert_eq!(world.log(), ["reserve", "refund", "undo reserve r-7"]);
    assert_eq!(r.steps[1].status, StepStatus::Compensated);
}

async fn a_saga_past_its_deadline_stops_retrying_and_compensates(backend: &str) {
    let (store, world, _t) = setup(backend).await;
    world
        .fail_first
        .lock()
        .unwrap()
        .insert("charge".into(), u32::MAX);
    let clock = ManualClock::new();
    // Start at a realistic epoch time; the engine reads the clock as Unix time.
    clock.advance(Duration::from_secs(1_800_000_000));
    let saga = order_builder(&world)
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    let cfg = EngineConfig {
        // Leases outlive the manual time this test moves through.
        lease: Duration::from_secs(3600),
        ..config()
    };
    let mut cfg = cfg;
    // Only the deadline can end the retries.
    cfg.limits.max_step_attempts = u32::MAX;
    cfg.limits.backoff = rempart::retry::Backoff::constant(Duration::from_secs(1));
    cfg.limits.jitter = rempart::retry::Jitter::None;
    let engine = SagaEngine::with_clock(store, vec![saga], cfg, Arc::new(clock.clone())).unwrap();
    let id = engine.start("create_order", order()).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = engine.clone();
    let running = tokio::spawn(async move {
        worker
            .run_worker(async {
                let _ = stopped.await;
            })
            .await
    });
    // Time moves only when the test moves it: a second at a time, each
    // once the charge has been tried again (every retry waits 1 s).
    let mut final_record = None;
    for _ in 0..2_000 {
        let r = engine.store().load(id).await.unwrap();
        if r.status.is_final() {
            final_record = Some(r);
            break;
        }
        let due = r.next_attempt_at;
        let now_ms = clock_ms(&clock);
        if due > now_ms {
            clock.advance(Duration::from_millis(due - now_ms));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    let r = final_record.expect("the saga ended");
    assert_eq!(r.status, SagaStatus::Compensated);
    let tries = r.steps[1].attempts;
    // Tried at 0 s, 1 s, ..., 9 s; at 10 s the deadline had passed, so the
    // charge was not called again.
    assert_eq!(tries, 10, "retried once a second until the 10 s deadline");
    assert!(
        clock_ms(&clock) >= r.deadline.unwrap(),
        "not before the deadline"
    );
    assert_eq!(world.log(), ["reserve", "refund", "undo reserve r-7"]);
    assert_eq!(world.overlaps.load(Ordering::SeqCst), 0);
}

fn clock_ms(clock: &ManualClock) -> u64 {
    use rempart::clock::Clock;
    clock.now().as_nanos() / 1_000_000
}
