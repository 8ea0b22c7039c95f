use std::error::Error;
use std::fmt;

/// Why a call through a rate-limited `tower::Service` did not return the
/// inner service's own success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitError<E> {
    /// The limiter refused the request: it was not run. Turn it into a 429
    /// with [`RateLimited::to_response`](super::RateLimited::to_response).
    Limited(super::RateLimited),
    /// The request ran and the inner service failed; its error is kept intact.
    OperationFailed(E),
    /// A sliding-window limiter could not reach its store and was not told
    /// to fail open: the request was not run.
    Store(super::StoreError),
}

impl<E> RateLimitError<E> {
    /// The refusal, if the limiter refused the request.
    pub fn limited(&self) -> Option<&super::RateLimited> {
        match self {
            RateLimitError::Limited(r) => Some(r),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RateLimitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitError::Limited(r) => fmt::Display::fmt(r, f),
            RateLimitError::OperationFailed(e) => write!(f, "operation failed: {e}"),
            RateLimitError::Store(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: Error + 'static> Error for RateLimitError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RateLimitError::Limited(r) => Some(r),
            RateLimitError::OperationFailed(e) => Some(e),
            RateLimitError::Store(e) => Some(e),
        }
    }
}
