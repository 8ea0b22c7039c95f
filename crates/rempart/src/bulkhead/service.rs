use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::{BulkheadError, BulkheadFull};
use super::{Bulkhead, OwnedBulkheadPermit, PermitBody};

/// When a [`BulkheadService`] gives its slot back.
pub trait Release<T> {
    /// The response the service returns.
    type Output;
    /// Gives `permit` back now, or ties it to `response`.
    fn release(&self, permit: OwnedBulkheadPermit, response: T) -> Self::Output;
}

/// Release the slot when the response is ready (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnResponse;

impl<T> Release<T> for OnResponse {
    type Output = T;

    #[inline]
    fn release(&self, permit: OwnedBulkheadPermit, response: T) -> T {
        drop(permit);
        response
    }
}

/// Keep the slot until the `http::Response`'s body ends or is dropped: the
/// response's body becomes a [`PermitBody`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HoldThroughBody;

impl<B> Release<http::Response<B>> for HoldThroughBody {
    type Output = http::Response<PermitBody<B>>;

    fn release(
        &self,
        permit: OwnedBulkheadPermit,
        response: http::Response<B>,
    ) -> http::Response<PermitBody<B>> {
        response.map(|body| PermitBody::new(body, permit))
    }
}

/// Puts a [`Bulkhead`] in front of a `tower::Service`. Every service the
/// layer builds shares the bulkhead's slots.
///
/// A slot is taken in `poll_ready` (waiting up to `max_wait`), as tower's own
/// `ConcurrencyLimit` does; if none comes, readiness still succeeds and the
/// next `call` fails at once with [`BulkheadError::Full`], so a refusal is an
/// answer the caller can turn into a 503, not a stuck service.
///
/// ```
/// use rempart::bulkhead::{Bulkhead, BulkheadError, BulkheadLayer};
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let reporting = Bulkhead::builder().name("reporting").max_concurrent(3).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(BulkheadLayer::new(reporting.clone()))
///     .service_fn(|_req: ()| async { Ok::<_, std::io::Error>("report") });
/// let _taken: Vec<_> = (0..3).map(|_| reporting.try_acquire_owned().unwrap()).collect();
/// let refused = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert_eq!(refused.full().unwrap().to_response::<String>().status(), 503);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer<R = OnResponse> {
    bulkhead: Bulkhead,
    release: R,
}

impl BulkheadLayer {
    /// A layer over `bulkhead` that frees the slot when the response is ready.
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer {
            bulkhead,
            release: OnResponse,
        }
    }
}

impl<R> BulkheadLayer<R> {
    /// Keeps each slot until the response body ends ([`HoldThroughBody`]).
    pub fn hold_through_body(self) -> BulkheadLayer<HoldThroughBody> {
        BulkheadLayer {
            bulkhead: self.bulkhead,
            release: HoldThroughBody,
        }
    }
}

impl<S, R: Clone> Layer<S> for BulkheadLayer<R> {
    type Service = BulkheadService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone(), self.release.clone())
    }
}

type Waiting = Pin<Box<dyn Future<Output = Result<OwnedBulkheadPermit, BulkheadFull>> + Send>>;

/// A `tower::Service` behind a [`Bulkhead`]; built by [`BulkheadLayer`].
pub struct BulkheadService<S, R = OnResponse> {
    inner: S,
    bulkhead: Bulkhead,
    release: R,
    permit: Option<OwnedBulkheadPermit>,
    waiting: Option<Waiting>,
    refused: Option<BulkheadFull>,
}

impl<S, R> BulkheadService<S, R> {
    /// Wraps `inner` with `bulkhead`, giving slots back as `release` says.
    pub fn new(inner: S, bulkhead: Bulkhead, release: R) -> Self {
        BulkheadService {
            inner,
            bulkhead,
            release,
            permit: None,
            waiting: None,
            refused: None,
        }
    }

    /// The bulkhead in front of the service.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S: fmt::Debug, R: fmt::Debug> fmt::Debug for BulkheadService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadService")
            .field("inner", &self.inner)
            .field("bulkhead", &self.bulkhead.name())
            .field("release", &self.release)
            .field("holds_slot", &self.permit.is_some())
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

// A clone starts without a slot: slots are per call, not per service value.
impl<S: Clone, R: Clone> Clone for BulkheadService<S, R> {
    fn clone(&self) -> Self {
        BulkheadService::new(
            self.inner.clone(),
            self.bulkhead.clone(),
            self.release.clone(),
        )
    }
}

impl<S, R, Req> Service<Req> for BulkheadService<S, R>
where
    S: Service<Req>,
    R: Release<S::Response> + Clone,
{
    type Response = R::Output;
    type Error = BulkheadError<S::Error>;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() && self.refused.is_none() {
            if self.waiting.is_none() {
                match self.bulkhead.take_owned() {
                    Some(permit) => self.permit = Some(permit),
                    None => {
                        let bulkhead = self.bulkhead.clone();
                        self.waiting = Some(Box::pin(async move { bulkhead.wait_owned().await }));
                    }
                }
            }
            if let Some(waiting) = self.waiting.as_mut() {
                let outcome = std::task::ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
                match outcome {
                    Ok(permit) => self.permit = Some(permit),
                    Err(full) => self.refused = Some(full),
                }
            }
        }
        if self.refused.is_some() {
            return Poll::Ready(Ok(())); // `call` answers with the refusal
        }
        self.inner
            .poll_ready(cx)
            .map_err(BulkheadError::OperationFailed)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(full) = self.refused.take() {
            return ResponseFuture {
                state: State::Refused { full: Some(full) },
            };
        }
        let permit = self
            .permit
            .take()
            .expect("BulkheadService::call without a successful poll_ready");
        ResponseFuture {
            state: State::Running {
                future: self.inner.call(req),
                permit: Some(permit),
                release: self.release.clone(),
            },
        }
    }
}

pin_project! {
    /// The response future of [`BulkheadService`]; it holds the slot until
    /// the response is ready (or, with [`HoldThroughBody`], hands it to the body).
    pub struct ResponseFuture<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Running { #[pin] future: F, permit: Option<OwnedBulkheadPermit>, release: R },
        Refused { full: Option<BulkheadFull> },
    }
}

impl<F, R, T, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<T, E>>,
    R: Release<T>,
{
    type Output = Result<R::Output, BulkheadError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running {
                future,
                permit,
                release,
            } => {
                let result = std::task::ready!(future.poll(cx));
                let permit = permit
                    .take()
                    .expect("bulkhead response future polled after it completed");
                Poll::Ready(match result {
                    Ok(response) => Ok(release.release(permit, response)),
                    Err(e) => Err(BulkheadError::OperationFailed(e)),
                })
            }
            StateProj::Refused { full } => Poll::Ready(Err(BulkheadError::Full(
                full.take()
                    .expect("bulkhead response future polled after it completed"),
            ))),
        }
    }
}
