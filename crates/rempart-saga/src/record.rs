//! What is persisted about a saga and its steps: the seed's `sagas` and
//! `saga_steps` rows, as plain data.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A saga's status: the seed's names, stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// Persisted, no step started yet.
    Started,
    /// Running its steps forward.
    InProgress,
    /// Every step done. Final.
    Completed,
    /// Undoing completed steps in reverse order.
    Compensating,
    /// Every step that may have taken effect was undone. Final.
    Compensated,
    /// A compensation kept failing: an operator must look, then `resume`.
    CompensationFailed,
}

/// A step's status. `STARTED` is added to the seed's list: the call was made
/// (or is being made), its outcome is not recorded, so it may have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// Not called yet.
    Pending,
    /// Called; the outcome is not recorded (in flight, timed out, or the worker died).
    Started,
    /// Done; its output is stored.
    Completed,
    /// Refused by the service (a business refusal): it took no effect.
    Failed,
    /// Its compensation was called; not recorded as done yet.
    Compensating,
    /// Undone.
    Compensated,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<$ty> {
                match s { $($text => Some($ty::$variant),)* _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(SagaStatus {
    Started => "STARTED",
    InProgress => "IN_PROGRESS",
    Completed => "COMPLETED",
    Compensating => "COMPENSATING",
    Compensated => "COMPENSATED",
    CompensationFailed => "COMPENSATION_FAILED",
});

text_enum!(StepStatus {
    Pending => "PENDING",
    Started => "STARTED",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Compensating => "COMPENSATING",
    Compensated => "COMPENSATED",
});

impl SagaStatus {
    /// Completed, Compensated or CompensationFailed: no engine works on it
    /// (the last one until an operator resumes it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::CompensationFailed
        )
    }
}

/// One `saga_steps` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name, unique within the saga (`UNIQUE (saga_id, step_name)`).
    pub name: String,
    /// Its status.
    pub status: StepStatus,
    /// Calls of `execute` so far.
    pub attempts: u32,
    /// Calls of `compensate` so far (since the last operator resume).
    pub compensation_attempts: u32,
    /// The step's output, once completed: what compensation receives.
    pub output: Option<Value>,
    /// The last error, for operators.
    pub last_error: Option<String>,
}

impl StepRecord {
    /// A step not called yet.
    pub fn pending(name: &str) -> StepRecord {
        StepRecord {
            name: name.to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            compensation_attempts: 0,
            output: None,
            last_error: None,
        }
    }
}

/// One `sagas` row and its steps, in definition order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The saga's id.
    pub id: Uuid,
    /// The definition's name (`create_order`).
    pub saga_type: String,
    /// Its status.
    pub status: SagaStatus,
    /// The input every step receives.
    pub payload: Value,
    /// The step being run or compensated, for operators.
    pub current_step: Option<String>,
    /// The error that sent it to compensation, or the last one.
    pub error: Option<String>,
    /// No step runs before this (ms since the Unix epoch): the backoff.
    pub next_attempt_at: u64,
    /// Past this (ms since the Unix epoch), steps before the pivot are no
    /// longer started: the saga compensates.
    pub deadline: Option<u64>,
    /// An operator asked to abort: compensate, unless the pivot is passed.
    pub abort_requested: bool,
    /// The steps, in the definition's order.
    pub steps: Vec<StepRecord>,
}
