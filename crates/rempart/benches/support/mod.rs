//! Shared by the criterion benches.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The one executor every contestant runs on: pin the future on the stack and
/// poll it with a no-op waker until it is ready. Every contestant here is
/// ready on its first poll on one thread; the loop only matters for a future
/// that can be Pending under contention (tower-resilience's
/// `tokio::sync::Mutex` with two threads), which then pays for its own retries.
#[inline(always)]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::hint::spin_loop();
    }
}
