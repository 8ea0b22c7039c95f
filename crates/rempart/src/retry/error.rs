use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Why a retried call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// Every attempt failed (or time for more ran out); the last error.
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: E,
    },
    /// The policy judged the error not worth retrying (a 404, a validation
    /// error) or said stop (an open circuit).
    NotRetried {
        /// Attempts made.
        attempts: u32,
        /// The error.
        error: E,
    },
    /// A retry was due but the retry budget was spent.
    BudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: E,
    },
    /// The last attempt ran out of time (the per-attempt or overall timeout).
    TimedOut {
        /// Attempts made.
        attempts: u32,
        /// The limit that ran out.
        limit: Duration,
    },
}

impl<E> RetryError<E> {
    /// Attempts made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Exhausted { attempts, .. }
            | RetryError::NotRetried { attempts, .. }
            | RetryError::BudgetExhausted { attempts, .. }
            | RetryError::TimedOut { attempts, .. } => *attempts,
        }
    }

    /// The operation's last error, if the last attempt produced one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RetryError::Exhausted { error, .. }
            | RetryError::NotRetried { error, .. }
            | RetryError::BudgetExhausted { error, .. } => Some(error),
            RetryError::TimedOut { .. } => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::Exhausted { attempts, error } => {
                write!(f, "failed after {attempts} attempts: {error}")
            }
            RetryError::NotRetried { attempts, error } => {
                write!(f, "failed, not retried (attempt {attempts}): {error}")
            }
            RetryError::BudgetExhausted { attempts, error } => write!(
                f,
                "failed after {attempts} attempts, retry budget spent: {error}"
            ),
            RetryError::TimedOut { attempts, limit } => {
                write!(f, "timed out after {limit:?} ({attempts} attempts)")
            }
        }
    }
}

impl<E: Error + 'static> Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RetryError::Exhausted { error, .. }
            | RetryError::NotRetried { error, .. }
            | RetryError::BudgetExhausted { error, .. } => Some(error),
            RetryError::TimedOut { .. } => None,
        }
    }
}
