use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::{AdaptiveError, LimitReached};
use super::{AdaptiveLimiter, AdaptivePermit};

/// Puts an [`AdaptiveLimiter`] in front of a `tower::Service`: `Ok` responses
/// are success samples, `Err` ones overload samples.
///
/// ```
/// use rempart::adaptive::{AdaptiveLayer, AdaptiveLimiter, Aimd};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = AdaptiveLimiter::builder(Aimd::builder().initial_limit(1).build().unwrap()).build();
/// let mut svc = ServiceBuilder::new()
///     .layer(AdaptiveLayer::new(limiter.clone()))
///     .service_fn(|_req: ()| async { Ok::<_, std::io::Error>(()) });
/// svc.ready().await.unwrap().call(()).await.unwrap();
/// assert_eq!(limiter.limit(), 2, "a success with the limit in use raised it");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveLayer {
    limiter: AdaptiveLimiter,
}

impl AdaptiveLayer {
    /// A layer over `limiter`.
    pub fn new(limiter: AdaptiveLimiter) -> Self {
        AdaptiveLayer { limiter }
    }
}

impl<S> Layer<S> for AdaptiveLayer {
    type Service = AdaptiveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveService {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A `tower::Service` behind an [`AdaptiveLimiter`]; built by [`AdaptiveLayer`].
#[derive(Debug, Clone)]
pub struct AdaptiveService<S> {
    inner: S,
    limiter: AdaptiveLimiter,
}

impl<S, Req> Service<Req> for AdaptiveService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = AdaptiveError<S::Error>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(AdaptiveError::OperationFailed)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.limiter.try_acquire() {
            Ok(permit) => State::Running {
                future: self.inner.call(req),
                permit: Some(permit),
            },
            Err(refused) => State::Refused {
                refused: Some(refused),
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response future of [`AdaptiveService`].
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
        Running { #[pin] future: F, permit: Option<AdaptivePermit> },
        Refused { refused: Option<LimitReached> },
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, AdaptiveError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future, permit } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    match &result {
                        Ok(_) => permit.success(),
                        Err(_) => permit.dropped(),
                    }
                }
                Poll::Ready(result.map_err(AdaptiveError::OperationFailed))
            }
            StateProj::Refused { refused } => Poll::Ready(Err(AdaptiveError::LimitReached(
                refused
                    .take()
                    .expect("adaptive response future polled after it completed"),
            ))),
        }
    }
}
