//! SIGTERM to our own process triggers the shutdown. Its own test binary, so
//! the signal cannot reach another test.
#![cfg(unix)]

use std::time::Duration;

use rempart::shutdown::Shutdown;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::test]
async fn sigterm_triggers_the_shutdown() {
    // Installing tokio's SIGTERM handler here first means an early signal can
    // never fall through to the default action (killing the test process).
    let _guard = signal(SignalKind::terminate()).unwrap();
    let shutdown = Shutdown::new();
    let listener = shutdown.clone();
    let waiting = tokio::spawn(async move { listener.wait_for_signal().await });
    tokio::task::yield_now().await; // let the listener subscribe
    assert!(!shutdown.is_triggered());

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(5), shutdown.triggered())
        .await
        .expect("SIGTERM triggers the shutdown");
    waiting.await.unwrap().unwrap();
}
