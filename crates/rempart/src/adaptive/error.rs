use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// An adaptive limiter's refusal: its current limit of calls is in flight.
/// A gateway answers it with 503, like a full bulkhead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReached {
    /// The limiter's name (the service it guards).
    pub name: Arc<str>,
    /// The limit at the moment of refusal.
    pub limit: u32,
}

impl fmt::Display for LimitReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "adaptive concurrency limit of `{}` reached: {} calls in flight",
            self.name, self.limit
        )
    }
}

impl Error for LimitReached {}

/// Why a call through an adaptive limiter's `tower::Service` did not return
/// the inner service's own success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdaptiveError<E> {
    /// The limit was reached: the request was not run.
    LimitReached(LimitReached),
    /// The request ran and the inner service failed; its error is kept intact.
    OperationFailed(E),
}

impl<E: fmt::Display> fmt::Display for AdaptiveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdaptiveError::LimitReached(r) => fmt::Display::fmt(r, f),
            AdaptiveError::OperationFailed(e) => write!(f, "operation failed: {e}"),
        }
    }
}

impl<E: Error + 'static> Error for AdaptiveError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AdaptiveError::LimitReached(r) => Some(r),
            AdaptiveError::OperationFailed(e) => Some(e),
        }
    }
}
