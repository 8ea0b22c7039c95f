use std::error::Error;
use std::fmt;

/// Why a call through a [`CircuitBreaker`](super::CircuitBreaker) did not return the
/// operation's own success.
///
/// ```
/// use rempart::{CircuitBreaker, CircuitBreakerConfig, CircuitError};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let cb = CircuitBreaker::new(CircuitBreakerConfig::default());
/// cb.trip();
/// let r = cb.call(|| async { Ok::<_, std::io::Error>(1) }).await;
/// assert!(matches!(r, Err(CircuitError::Open)));
/// assert_eq!(r.unwrap_err().to_string(), "circuit breaker is open: call rejected without running");
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitError<E> {
    /// The circuit is open: the operation was not run.
    Open,
    /// The circuit is half-open and all its trial slots are taken: the operation was not run.
    HalfOpenRejected,
    /// The operation ran and failed; its error is kept intact.
    OperationFailed(E),
}

impl<E> CircuitError<E> {
    /// `true` when the breaker refused the call (it never ran).
    pub fn is_rejected(&self) -> bool {
        !matches!(self, CircuitError::OperationFailed(_))
    }

    /// The operation's own error, if it ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CircuitError::OperationFailed(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for CircuitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CircuitError::Open => f.write_str("circuit breaker is open: call rejected without running"),
            CircuitError::HalfOpenRejected => f.write_str(
                "circuit breaker is half-open and all trial calls are in flight: call rejected without running",
            ),
            CircuitError::OperationFailed(e) => write!(f, "operation failed: {e}"),
        }
    }
}

impl<E: Error + 'static> Error for CircuitError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CircuitError::OperationFailed(e) => Some(e),
            _ => None,
        }
    }
}

/// A breaker's refusal to hand out a [`Permit`](super::Permit): the circuit is open,
/// or half-open with every trial slot taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The circuit is open.
    Open,
    /// The circuit is half-open and at capacity.
    HalfOpenFull,
}

impl Rejected {
    /// The same refusal as a [`CircuitError`].
    pub fn into_error<E>(self) -> CircuitError<E> {
        match self {
            Rejected::Open => CircuitError::Open,
            Rejected::HalfOpenFull => CircuitError::HalfOpenRejected,
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.into_error::<std::convert::Infallible>(), f)
    }
}

impl Error for Rejected {}
