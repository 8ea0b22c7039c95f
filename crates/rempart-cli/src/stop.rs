//! The stop request of a long-running command: SIGTERM or Ctrl-C.
//!
//! The handlers are installed when [`stop_signal`] is called, not when its
//! future is first polled. A command calls it before it connects to anything,
//! so a SIGTERM sent during the start stops it cleanly (exit 0) instead of
//! killing the process with the default action.

use std::future::Future;

/// Completes on the first SIGTERM or Ctrl-C received after this call.
#[cfg(unix)]
pub(crate) fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Completes on the first Ctrl-C.
#[cfg(not(unix))]
pub(crate) fn stop_signal() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
