//! Timeouts: a limit on how long an operation may take, after which it is
//! dropped (cancelled: nothing keeps running) and the caller gets [`Elapsed`]
//! naming the limit.
//!
//! ```
//! use rempart::timeout::{timeout, Elapsed};
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let slow = async { tokio::time::sleep(Duration::from_secs(30)).await; 42 };
//! let err = timeout(Duration::from_secs(2), slow).await.unwrap_err();
//! assert_eq!(err, Elapsed { limit: Duration::from_secs(2) });
//! assert_eq!(err.to_string(), "timed out after 2s");
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

/// An operation ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    /// The limit it ran out of.
    pub limit: Duration,
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.limit)
    }
}

impl std::error::Error for Elapsed {}

/// Runs `fut` for at most `limit`, within any [`Deadline`](crate::deadline::Deadline)
/// in scope: the shorter of the two applies, and the error names it.
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let limit = crate::deadline::Deadline::current().map_or(limit, |d| d.remaining().min(limit));
    Timeout::new(limit, fut).await
}

pin_project_lite::pin_project! {
    /// A future limited to a duration, whose timer is armed only if the
    /// future is not ready on its first poll.
    ///
    /// Why: on a healthy system most calls a timeout guards complete at once
    /// or after one wake-up, and registering and cancelling a timer costs far
    /// more than such a call. The limit counts from the end of the first poll,
    /// so it does not include that poll's own synchronous work. Not bounded by
    /// a [`Deadline`](crate::deadline::Deadline): [`timeout`] is.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        limit: Duration,
    }
}

impl<F> Timeout<F> {
    /// `inner`, limited to `limit`.
    pub fn new(limit: Duration, inner: F) -> Self {
        Timeout {
            inner,
            sleep: None,
            limit,
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.limit)));
        }
        let sleep = this.sleep.as_pin_mut().expect("armed above");
        match sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed { limit: *this.limit })),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A tower service's error under a [`TimeoutLayer`].
#[derive(Debug)]
pub enum TimeoutError<E> {
    /// The request ran out of time.
    Elapsed(Elapsed),
    /// The inner service failed in time.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for TimeoutError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutError::Elapsed(e) => write!(f, "{e}"),
            TimeoutError::Inner(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TimeoutError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimeoutError::Elapsed(e) => Some(e),
            TimeoutError::Inner(e) => Some(e),
        }
    }
}

/// Limits each request through a `tower::Service` to `limit`.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A layer allowing each request `limit`.
    pub fn new(limit: Duration) -> Self {
        TimeoutLayer { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    limit: Duration,
}

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = TimeoutError<S::Error>;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(TimeoutError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture {
            inner: tokio::time::timeout(self.limit, self.inner.call(req)),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TimeoutService`].
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, TimeoutError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r.map_err(TimeoutError::Inner)),
            Poll::Ready(Err(_)) => {
                Poll::Ready(Err(TimeoutError::Elapsed(Elapsed { limit: *this.limit })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
