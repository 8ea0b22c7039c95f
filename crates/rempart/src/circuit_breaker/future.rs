use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::breaker::{CircuitBreaker, Permit};
use super::error::CircuitError;
use super::service::Classify;

pin_project! {
    /// The future of [`CircuitBreaker::call`] and [`CircuitBreaker::call_classified`].
    ///
    /// On its first poll it asks the breaker for a permit, then runs the
    /// operation. Dropped before the operation finishes, it records nothing and
    /// frees any HalfOpen slot it held (its permit is dropped unrecorded).
    ///
    /// A hand-written future rather than an `async fn`: the permit then stays
    /// in place while the operation runs instead of being copied in and out of
    /// a generator, which measurably costs on every call.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Call<'a, C, F, Fut> {
        breaker: &'a CircuitBreaker,
        operation: Option<F>,
        classify: Option<C>,
        permit: Option<Permit<'a>>,
        #[pin]
        running: Option<Fut>,
    }
}

impl<'a, C, F, Fut> Call<'a, C, F, Fut> {
    pub(crate) fn new(breaker: &'a CircuitBreaker, classify: C, operation: F) -> Self {
        Call {
            breaker,
            operation: Some(operation),
            classify: Some(classify),
            permit: None,
            running: None,
        }
    }
}

impl<C, F, Fut, T, E> Future for Call<'_, C, F, Fut>
where
    C: Classify<T, E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, CircuitError<E>>;

    // Always inlined: the caller's poll loop then keeps the per-thread counter
    // row in hand instead of looking it up through thread-local storage again.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(operation) = this.operation.take() {
            match this.breaker.try_acquire() {
                Ok(permit) => {
                    *this.permit = Some(permit);
                    this.running.set(Some(operation()));
                }
                Err(rejected) => return Poll::Ready(Err(rejected.into_error())),
            }
        }
        let running = this
            .running
            .as_mut()
            .as_pin_mut()
            .expect("circuit breaker call polled after it completed");
        let result = ready!(running.poll(cx));
        this.running.set(None);
        if let (Some(permit), Some(classify)) = (this.permit.take(), this.classify.take()) {
            permit.record(classify.classify(&result));
        }
        Poll::Ready(result.map_err(CircuitError::OperationFailed))
    }
}

impl<C, F, Fut> std::fmt::Debug for Call<'_, C, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("breaker", &self.breaker.name())
            .field("started", &self.operation.is_none())
            .finish_non_exhaustive()
    }
}
