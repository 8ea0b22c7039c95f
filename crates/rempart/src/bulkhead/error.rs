use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};

/// A bulkhead's refusal: every slot stayed taken for the whole wait.
/// A gateway answers it with `503 Service Unavailable` ([`to_response`](Self::to_response)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    /// The bulkhead's name (the service it guards).
    pub name: Arc<str>,
    /// Its number of slots.
    pub max_concurrent: u32,
    /// How long the call waited for a slot before giving up.
    pub waited: Duration,
}

impl BulkheadFull {
    /// A `503 Service Unavailable` response saying the service is busy (the seed's answer).
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(format!(
            "Service busy, try again ({} is at its {} concurrent calls)\n",
            self.name, self.max_concurrent
        )));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead `{}` is full: all {} slots stayed taken for {:?}",
            self.name, self.max_concurrent, self.waited
        )
    }
}

impl Error for BulkheadFull {}

/// Why a call through a bulkhead's `tower::Service` did not return the inner
/// service's own success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkheadError<E> {
    /// No slot came free in time: the request was not run.
    Full(BulkheadFull),
    /// The request ran and the inner service failed; its error is kept intact.
    OperationFailed(E),
}

impl<E> BulkheadError<E> {
    /// The refusal, if the bulkhead refused the request.
    pub fn full(&self) -> Option<&BulkheadFull> {
        match self {
            BulkheadError::Full(f) => Some(f),
            BulkheadError::OperationFailed(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for BulkheadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BulkheadError::Full(full) => fmt::Display::fmt(full, f),
            BulkheadError::OperationFailed(e) => write!(f, "operation failed: {e}"),
        }
    }
}

impl<E: Error + 'static> Error for BulkheadError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BulkheadError::Full(full) => Some(full),
            BulkheadError::OperationFailed(e) => Some(e),
        }
    }
}
