use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

/// `Retry-After` in whole seconds: rounded up, so a client never comes back
/// early, and at least 1, since `Retry-After: 0` invites an immediate retry.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.max(1)
}

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
    /// When the caller may try again: the bulkhead's
    /// [`retry_after`](super::BulkheadBuilder::retry_after), by default its
    /// `max_wait` rounded up to whole seconds, and at least 1 s.
    pub retry_after: Duration,
}

impl BulkheadFull {
    /// A `503 Service Unavailable` response saying the service is busy (the
    /// seed's answer), with a `Retry-After` in whole seconds (rounded up, at
    /// least 1), as the gateway sends on its own 503s.
    ///
    /// ```
    /// use rempart::bulkhead::Bulkhead;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let reports = Bulkhead::builder()
    ///     .name("reports")
    ///     .max_concurrent(1)
    ///     .max_wait(Duration::from_millis(1500))
    ///     .build()
    ///     .unwrap();
    /// let _busy = reports.try_acquire_owned().unwrap();
    /// let refused = reports.acquire().await.unwrap_err().to_response::<String>();
    /// assert_eq!(refused.status(), 503);
    /// assert_eq!(refused.headers()["retry-after"], "2", "1.5 s of max_wait, rounded up");
    /// # });
    /// ```
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(format!(
            "Service busy, try again ({} is at its {} concurrent calls)\n",
            self.name, self.max_concurrent
        )));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            RETRY_AFTER,
            HeaderValue::from(retry_after_secs(self.retry_after)),
        );
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

#[cfg(test)]
mod tests {
    use super::retry_after_secs;
    use std::time::Duration;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }
}
