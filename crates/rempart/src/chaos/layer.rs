//! Tower: a [`Chaos`] policy in front of a service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{Chaos, Fault};

/// Injects a [`Chaos`] policy's fault into a service's calls.
#[derive(Debug, Clone)]
pub struct ChaosLayer<T, E> {
    chaos: Chaos<T, E>,
}

impl<T, E> ChaosLayer<T, E> {
    /// A layer injecting `chaos`.
    pub fn new(chaos: Chaos<T, E>) -> Self {
        ChaosLayer { chaos }
    }
}

impl<S, T, E> Layer<S> for ChaosLayer<T, E> {
    type Service = ChaosService<S, T, E>;

    fn layer(&self, inner: S) -> Self::Service {
        ChaosService {
            inner,
            chaos: self.chaos.clone(),
        }
    }
}

/// The service [`ChaosLayer`] builds.
#[derive(Debug, Clone)]
pub struct ChaosService<S, T, E> {
    inner: S,
    chaos: Chaos<T, E>,
}

impl<S, Req, T, E> Service<Req> for ChaosService<S, T, E>
where
    S: Service<Req, Response = T, Error = E>,
    S::Future: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Response = T;
    type Error = E;
    type Future = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.chaos.draw() {
            None => Box::pin(self.inner.call(req)),
            Some(Fault::Error(make)) => {
                let e = make();
                Box::pin(async move { Err(e) })
            }
            Some(Fault::Outcome(make)) => {
                let v = make();
                Box::pin(async move { Ok(v) })
            }
            Some(Fault::Latency(d)) => {
                // The request is handed over now (the service was polled ready);
                // its future is first polled after the delay.
                let fut = self.inner.call(req);
                Box::pin(async move {
                    tokio::time::sleep(d).await;
                    fut.await
                })
            }
        }
    }
}
