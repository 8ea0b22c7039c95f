//! Tower: a [`FallbackChain`] in front of a service.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, Fallback, FallbackChain};

/// Wraps a service so its errors go through a [`FallbackChain`]; the
/// response becomes a [`Fallback<T>`].
#[derive(Debug, Clone)]
pub struct FallbackLayer<T, E> {
    chain: FallbackChain<T, E>,
}

impl<T, E> FallbackLayer<T, E> {
    /// A layer answering failures with `chain`.
    pub fn new(chain: FallbackChain<T, E>) -> Self {
        FallbackLayer { chain }
    }
}

impl<S, T, E> Layer<S> for FallbackLayer<T, E> {
    type Service = FallbackService<S, T, E>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            chain: self.chain.clone(),
        }
    }
}

/// The service [`FallbackLayer`] builds.
#[derive(Debug, Clone)]
pub struct FallbackService<S, T, E> {
    inner: S,
    chain: FallbackChain<T, E>,
}

impl<S, Req, T, E> Service<Req> for FallbackService<S, T, E>
where
    S: Service<Req, Response = T, Error = E>,
    S::Future: Send + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Response = Fallback<T>;
    type Error = E;
    type Future = BoxFuture<'static, Result<Fallback<T>, E>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        // A refusal at readiness is passed on: the chain answers call errors.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let chain = self.chain.clone();
        Box::pin(async move {
            match fut.await {
                Ok(v) => Ok(Fallback::fresh(v)),
                Err(e) => chain.recover(e).await,
            }
        })
    }
}
