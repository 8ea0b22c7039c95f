use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::error::RateLimitError;
use super::service::KeyExtractor;
use super::sliding::{SlidingWindowError, SlidingWindowLimiter};

/// Puts a [`SlidingWindowLimiter`] in front of a `tower::Service`, keyed by
/// `extract` (any `Fn(&Req) -> impl AsRef<str>`).
///
/// The check is asynchronous (the store may be remote), so the service moves
/// its ready inner service into each response future and keeps a clone for
/// the next call (the usual tower pattern for an async check before a call):
/// the inner service must be `Clone`.
///
/// If the store fails, the request is refused with [`RateLimitError::Store`];
/// [`fail_open`](Self::fail_open) admits it instead (with a `WARN` event),
/// for limits where availability matters more than the limit.
///
/// ```
/// use rempart::rate_limit::{RateLimitError, SlidingWindowLayer, SlidingWindowLimiter};
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = SlidingWindowLimiter::builder().limit(1, Duration::from_secs(60)).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(SlidingWindowLayer::new(limiter, |user: &&'static str| *user))
///     .service_fn(|user: &'static str| async move { Ok::<_, std::io::Error>(user.len()) });
/// assert_eq!(svc.ready().await.unwrap().call("ada").await.unwrap(), 3);
/// let refused = svc.ready().await.unwrap().call("ada").await.unwrap_err();
/// assert!(matches!(refused, RateLimitError::Limited(_)));
/// assert!(svc.ready().await.unwrap().call("grace").await.is_ok());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SlidingWindowLayer<X> {
    limiter: SlidingWindowLimiter,
    extract: X,
    fail_open: bool,
}

impl<X> SlidingWindowLayer<X> {
    /// A layer over `limiter`, keying requests with `extract`.
    pub fn new(limiter: SlidingWindowLimiter, extract: X) -> Self {
        SlidingWindowLayer {
            limiter,
            extract,
            fail_open: false,
        }
    }

    /// Admit requests when the store cannot be reached, instead of refusing them.
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }
}

impl<S, X: Clone> Layer<S> for SlidingWindowLayer<X> {
    type Service = SlidingWindowService<S, X>;

    fn layer(&self, inner: S) -> Self::Service {
        SlidingWindowService {
            inner,
            limiter: self.limiter.clone(),
            extract: self.extract.clone(),
            fail_open: self.fail_open,
        }
    }
}

/// A `tower::Service` behind a [`SlidingWindowLimiter`]; built by [`SlidingWindowLayer`].
#[derive(Debug, Clone)]
pub struct SlidingWindowService<S, X> {
    inner: S,
    limiter: SlidingWindowLimiter,
    extract: X,
    fail_open: bool,
}

/// The response future of [`SlidingWindowService`].
pub type SlidingWindowFuture<T, E> =
    Pin<Box<dyn Future<Output = Result<T, RateLimitError<E>>> + Send>>;

impl<S, X, Req> Service<Req> for SlidingWindowService<S, X>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    Req: Send + 'static,
    X: KeyExtractor<Req>,
    X::Key: AsRef<str> + Send + 'static,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error>;
    type Future = SlidingWindowFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(RateLimitError::OperationFailed)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extract.extract(&req);
        let limiter = self.limiter.clone();
        let fail_open = self.fail_open;
        // The ready service goes with this request; the clone waits for the next.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            match limiter.check(key.as_ref()).await {
                Ok(_) => {}
                Err(SlidingWindowError::Limited(refused)) => {
                    return Err(RateLimitError::Limited(refused));
                }
                Err(SlidingWindowError::Store(e)) if fail_open => {
                    tracing::warn!(limiter = %limiter.name(), error = %e, "sliding-window store failed: request admitted (fail open)");
                }
                Err(SlidingWindowError::Store(e)) => return Err(RateLimitError::Store(e)),
            }
            ready
                .call(req)
                .await
                .map_err(RateLimitError::OperationFailed)
        })
    }
}
