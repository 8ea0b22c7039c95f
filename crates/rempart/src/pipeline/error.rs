use std::error::Error;
use std::fmt;

use crate::bulkhead::BulkheadFull;
use crate::rate_limit::RateLimited;
use crate::timeout::Elapsed;

/// Which policy refused a call, or how the call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PipelineError<E> {
    /// The circuit is open (or HalfOpen and full).
    CircuitOpen,
    /// Over the rate limit; says when to come back.
    RateLimited(RateLimited),
    /// The bulkhead had no slot.
    BulkheadFull(BulkheadFull),
    /// The attempt ran out of time.
    TimedOut(Elapsed),
    /// The operation failed (after any retries).
    Failed(E),
    /// A retry was due but the retry budget was spent; the last error.
    RetryBudgetExhausted(Box<PipelineError<E>>),
}

impl<E> PipelineError<E> {
    /// Whether a policy refused the call without running the operation.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PipelineError::CircuitOpen
                | PipelineError::RateLimited(_)
                | PipelineError::BulkheadFull(_)
        )
    }
}

impl<E: fmt::Display> fmt::Display for PipelineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::CircuitOpen => write!(f, "refused: circuit open"),
            PipelineError::RateLimited(r) => write!(f, "refused: {r}"),
            PipelineError::BulkheadFull(b) => write!(f, "refused: {b}"),
            PipelineError::TimedOut(e) => write!(f, "{e}"),
            PipelineError::Failed(e) => write!(f, "{e}"),
            PipelineError::RetryBudgetExhausted(e) => write!(f, "{e} (retry budget spent)"),
        }
    }
}

impl<E: Error + 'static> Error for PipelineError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PipelineError::Failed(e) => Some(e),
            PipelineError::RateLimited(r) => Some(r),
            PipelineError::BulkheadFull(b) => Some(b),
            PipelineError::TimedOut(e) => Some(e),
            PipelineError::RetryBudgetExhausted(e) => Some(&**e),
            PipelineError::CircuitOpen => None,
        }
    }
}
