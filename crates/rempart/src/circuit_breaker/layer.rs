use tower_layer::Layer;

use super::CircuitBreaker;
use super::service::{CircuitBreakerService, ErrorsAreFailures};

/// Puts a [`CircuitBreaker`] in front of a `tower::Service`.
///
/// Every service built by one layer shares the layer's breaker, so clones of a
/// service (one per connection, say) see one circuit.
///
/// ```
/// use rempart::{CircuitBreaker, CircuitError};
/// use rempart::circuit_breaker::{CircuitBreakerLayer, Outcome};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let breaker = CircuitBreaker::builder().failure_threshold(1).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()).classify(|r: &Result<u16, std::io::Error>| match r {
///         Ok(status) if *status >= 500 => Outcome::Failure,
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::Failure,
///     }))
///     .service_fn(|_req: ()| async { Ok::<u16, std::io::Error>(503) });
/// assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 503);
/// assert!(matches!(svc.ready().await.unwrap().call(()).await, Err(CircuitError::Open)));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAreFailures> {
    breaker: CircuitBreaker,
    classify: C,
}

impl CircuitBreakerLayer {
    /// A layer that counts `Err` as failure and `Ok` as success.
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classify: ErrorsAreFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judges each result with `classify` instead (see [`Classify`](super::Classify)).
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classify.clone())
    }
}
