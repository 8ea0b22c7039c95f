//! Retry as a tower layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::error::RetryError;
use super::policy::RetryPolicy;
use super::retry::Retry;

/// Retries requests through a `tower::Service` with a [`Retry`] and a policy.
/// The request must be `Clone` (each attempt sends a copy); the inner
/// service is cloned for each call, as tower's own retry does.
///
/// ```
/// use rempart::retry::{Decision, Retry, RetryLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let retry = Retry::builder().max_attempts(2).build().unwrap();
/// let policy = |r: Result<&u16, &std::io::Error>| match r {
///     Ok(503) => Decision::Retry,
///     _ => Decision::Accept,
/// };
/// let mut svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(retry, policy))
///     .service_fn(|_req: ()| async { Ok::<u16, std::io::Error>(503) });
/// // Retried once, then the last answer is returned.
/// assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 503);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<P> {
    retry: Retry,
    policy: P,
}

impl<P> RetryLayer<P> {
    /// A layer retrying with `retry`, judging results with `policy`.
    pub fn new(retry: Retry, policy: P) -> Self {
        RetryLayer { retry, policy }
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = RetryService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.retry.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S, P> {
    inner: S,
    retry: Retry,
    policy: P,
}

impl<S, P, Req> Service<Req> for RetryService<S, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + Sync,
    S::Error: Send + Sync,
    Req: Clone + Send + 'static,
    P: RetryPolicy<S::Response, S::Error> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = RetryError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, RetryError<S::Error>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked again before each attempt, inside the call.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => {
                Poll::Ready(Err(RetryError::NotRetried { attempts: 0, error }))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Use the service that was made ready; keep a fresh clone for later calls.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (retry, policy) = (self.retry.clone(), self.policy.clone());
        Box::pin(async move {
            let mut inner = Some(inner);
            let fresh = inner.clone();
            retry
                .call_with(policy, move || {
                    let req = req.clone();
                    let mut svc = match inner.take() {
                        Some(ready) => Ready::Yes(ready),
                        None => Ready::No(fresh.clone().expect("a clone of the service")),
                    };
                    async move {
                        let svc = match &mut svc {
                            Ready::Yes(s) => s,
                            Ready::No(s) => {
                                std::future::poll_fn(|cx| s.poll_ready(cx)).await?;
                                s
                            }
                        };
                        svc.call(req).await
                    }
                })
                .await
        })
    }
}

enum Ready<S> {
    Yes(S),
    No(S),
}
