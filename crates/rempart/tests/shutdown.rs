//! Graceful shutdown under paused time: drain before hooks, hooks in
//! declared order, each within its timeout, deadline exceeded reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rempart::shutdown::{HookOutcome, HookReport, Shutdown};
use tokio::time::{Instant, sleep};

type Log = Arc<Mutex<Vec<String>>>;

fn logged(
    log: &Log,
    name: &'static str,
) -> impl FnOnce() -> std::future::Ready<Result<(), String>> + Send + 'static {
    let log = log.clone();
    move || {
        log.lock().unwrap().push(name.to_owned());
        std::future::ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn drains_in_flight_work_then_runs_hooks_in_declared_order() {
    let log: Log = Arc::default();
    let shutdown = Shutdown::new()
        .hook("server", Duration::from_secs(5), logged(&log, "server"))
        .hook("broker", Duration::from_secs(5), logged(&log, "broker"))
        .hook("cache", Duration::from_secs(5), logged(&log, "cache"));

    for secs in [1, 3] {
        let guard = shutdown.in_flight();
        let log = log.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(secs)).await;
            log.lock().unwrap().push(format!("request {secs}s done"));
            drop(guard);
        });
    }
    let start = Instant::now();
    let report = shutdown.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "request 1s done",
            "request 3s done",
            "server",
            "broker",
            "cache"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn triggering_stops_acceptance_everywhere() {
    let shutdown = Shutdown::new();
    let server = shutdown.clone();
    let accepting = tokio::spawn(async move {
        server.triggered().await;
        Instant::now()
    });
    sleep(Duration::from_secs(2)).await;
    assert!(!shutdown.is_triggered());
    let at = Instant::now();
    shutdown.trigger();
    assert_eq!(accepting.await.unwrap(), at);
}

#[tokio::test(start_paused = true)]
async fn deadline_exceeded_is_reported_and_hooks_still_run() {
    let log: Log = Arc::default();
    let shutdown = Shutdown::with_drain_deadline(Duration::from_secs(30)).hook(
        "cache",
        Duration::from_secs(1),
        logged(&log, "cache"),
    );
    let stuck = shutdown.in_flight();
    let start = Instant::now();
    let report = shutdown.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(!report.drained);
    assert_eq!(report.abandoned, 1);
    assert_eq!(*log.lock().unwrap(), ["cache"]);
    assert!(
        report
            .to_string()
            .contains("drain deadline exceeded with 1 call(s) in flight"),
        "{report}"
    );
    drop(stuck);
}

#[tokio::test(start_paused = true)]
async fn failed_and_slow_hooks_are_reported_without_stopping_the_rest() {
    let log: Log = Arc::default();
    let shutdown = Shutdown::new()
        .hook("server", Duration::from_secs(5), || async {
            Err("listener already closed".to_owned())
        })
        .hook("broker", Duration::from_secs(2), || async {
            sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .hook("cache", Duration::from_secs(5), logged(&log, "cache"));
    let start = Instant::now();
    let report = shutdown.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(report.drained);
    assert!(!report.is_clean());
    assert_eq!(
        report.hooks,
        [
            HookReport {
                name: "server".into(),
                outcome: HookOutcome::Failed("listener already closed".into())
            },
            HookReport {
                name: "broker".into(),
                outcome: HookOutcome::TimedOut(Duration::from_secs(2))
            },
            HookReport {
                name: "cache".into(),
                outcome: HookOutcome::Done
            },
        ]
    );
}
