use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::CircuitBreaker;
use super::breaker::{Outcome, OwnedPermit};
use super::error::{CircuitError, Rejected};

/// Decides whether a service's result counts as a success, a failure, or nothing.
///
/// Any `Fn(&Result<T, E>) -> Outcome + Clone` is a classifier.
pub trait Classify<T, E> {
    /// Judges one result.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<T, E> Classify<T, E> for ErrorsAreFailures {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// A `tower::Service` behind a [`CircuitBreaker`]; built by
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// A refused request fails at once with [`CircuitError::Open`] or
/// [`CircuitError::HalfOpenRejected`] from its response future; `poll_ready`
/// only reports the inner service's readiness, so a refusal never holds up a
/// caller waiting for readiness.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner` with `breaker`, judging results with `classify`.
    pub fn new(inner: S, breaker: CircuitBreaker, classify: C) -> Self {
        CircuitBreakerService {
            inner,
            breaker,
            classify,
        }
    }

    /// The breaker in front of the service.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CircuitError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(CircuitError::OperationFailed)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Ok(permit) => ResponseFuture {
                state: State::Running {
                    future: self.inner.call(req),
                    permit: Some(permit),
                    classify: self.classify.clone(),
                },
            },
            Err(rejected) => ResponseFuture {
                state: State::Rejected { rejected },
            },
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreakerService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, C> {
        Running { #[pin] future: F, permit: Option<OwnedPermit>, classify: C },
        Rejected { rejected: Rejected },
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, CircuitError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running {
                future,
                permit,
                classify,
            } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(p) = permit.take() {
                    p.record(classify.classify(&result));
                }
                Poll::Ready(result.map_err(CircuitError::OperationFailed))
            }
            StateProj::Rejected { rejected } => Poll::Ready(Err(rejected.into_error())),
        }
    }
}
