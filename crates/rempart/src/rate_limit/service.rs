use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::RateLimitError;
use super::refusal::RateLimited;
use super::{KeyedRateLimiter, RateLimiter};

/// Puts one [`RateLimiter`] in front of a `tower::Service`; every service the
/// layer builds shares the layer's bucket.
///
/// ```
/// use rempart::rate_limit::{RateLimitError, RateLimitLayer, RateLimiter};
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = RateLimiter::builder().rate(1, Duration::from_secs(60)).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter))
///     .service_fn(|_req: ()| async { Ok::<_, std::io::Error>("ok") });
/// assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "ok");
/// let refused = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert_eq!(refused.limited().unwrap().retry_after_secs(), 60);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    /// A layer over `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A `tower::Service` behind a [`RateLimiter`]; built by [`RateLimitLayer`].
///
/// A refused request fails at once with [`RateLimitError::Limited`] from its
/// response future; `poll_ready` reports only the inner service's readiness,
/// so a refusal never holds up callers waiting for readiness.
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error>;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(RateLimitError::OperationFailed)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.check() {
            Ok(()) => ResponseFuture::running(self.inner.call(req)),
            Err(refused) => ResponseFuture::refused(refused),
        }
    }
}

/// Picks the rate-limit key of a request (client IP, API key, ...).
///
/// Any `Fn(&Req) -> K + Clone` is an extractor.
pub trait KeyExtractor<Req> {
    /// The key type.
    type Key;
    /// The request's key.
    fn extract(&self, req: &Req) -> Self::Key;
}

impl<Req, K, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> K,
{
    type Key = K;

    #[inline]
    fn extract(&self, req: &Req) -> K {
        self(req)
    }
}

/// Puts a [`KeyedRateLimiter`] in front of a `tower::Service`, with a bucket
/// per key that `extract` picks from each request.
///
/// ```
/// use rempart::rate_limit::{KeyedRateLimitLayer, KeyedRateLimiter};
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let per_key = KeyedRateLimiter::<String>::builder().rate(1, Duration::from_secs(60)).build().unwrap();
/// let api_key = |req: &http::Request<()>| {
///     req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_owned()
/// };
/// let mut svc = ServiceBuilder::new()
///     .layer(KeyedRateLimitLayer::new(per_key, api_key))
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, std::io::Error>(200) });
/// let req = |k: &str| http::Request::builder().header("x-api-key", k).body(()).unwrap();
/// assert!(svc.ready().await.unwrap().call(req("alice")).await.is_ok());
/// assert!(svc.ready().await.unwrap().call(req("alice")).await.is_err());
/// assert!(svc.ready().await.unwrap().call(req("bob")).await.is_ok());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct KeyedRateLimitLayer<K: Hash + Eq + Clone, X> {
    limiter: KeyedRateLimiter<K>,
    extract: X,
}

impl<K: Hash + Eq + Clone, X> KeyedRateLimitLayer<K, X> {
    /// A layer over `limiter`, keying requests with `extract`.
    pub fn new(limiter: KeyedRateLimiter<K>, extract: X) -> Self {
        KeyedRateLimitLayer { limiter, extract }
    }
}

impl<S, K: Hash + Eq + Clone, X: Clone> Layer<S> for KeyedRateLimitLayer<K, X> {
    type Service = KeyedRateLimitService<S, K, X>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimitService {
            inner,
            limiter: self.limiter.clone(),
            extract: self.extract.clone(),
        }
    }
}

/// A `tower::Service` behind a [`KeyedRateLimiter`]; built by [`KeyedRateLimitLayer`].
#[derive(Debug, Clone)]
pub struct KeyedRateLimitService<S, K: Hash + Eq + Clone, X> {
    inner: S,
    limiter: KeyedRateLimiter<K>,
    extract: X,
}

impl<S, K, X, Req> Service<Req> for KeyedRateLimitService<S, K, X>
where
    S: Service<Req>,
    K: Hash + Eq + Clone,
    X: KeyExtractor<Req, Key = K>,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error>;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(RateLimitError::OperationFailed)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extract.extract(&req);
        match self.limiter.check(&key) {
            Ok(()) => ResponseFuture::running(self.inner.call(req)),
            Err(refused) => ResponseFuture::refused(refused),
        }
    }
}

pin_project! {
    /// The response future of the rate-limit services.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Running { #[pin] future: F },
        Refused { refused: Option<RateLimited> },
    }
}

impl<F> ResponseFuture<F> {
    fn running(future: F) -> Self {
        ResponseFuture {
            state: State::Running { future },
        }
    }

    fn refused(refused: RateLimited) -> Self {
        ResponseFuture {
            state: State::Refused {
                refused: Some(refused),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, RateLimitError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future } => {
                future.poll(cx).map_err(RateLimitError::OperationFailed)
            }
            StateProj::Refused { refused } => Poll::Ready(Err(RateLimitError::Limited(
                refused
                    .take()
                    .expect("rate-limit response future polled after it completed"),
            ))),
        }
    }
}
