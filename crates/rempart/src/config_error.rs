//! The one error every policy builder returns for a setting that cannot work.

use std::error::Error;
use std::fmt;

/// A policy setting that cannot work, naming the policy, the setting and what
/// to change.
///
/// ```
/// use rempart::CircuitBreaker;
///
/// let err = CircuitBreaker::builder().failure_rate(150.0).build().unwrap_err();
/// assert_eq!(err.policy(), "circuit breaker");
/// assert_eq!(err.field(), "failure_rate");
/// assert!(err.to_string().starts_with("invalid circuit breaker setting `failure_rate`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    policy: &'static str,
    field: String,
    problem: String,
}

impl ConfigError {
    pub(crate) fn new(
        policy: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError {
            policy,
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The policy whose builder refused ("circuit breaker", "bulkhead", ...).
    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// The setting at fault (for a list of bulkhead limits, the service's name).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it and what would work.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} setting `{}`: {}",
            self.policy, self.field, self.problem
        )
    }
}

impl Error for ConfigError {}
