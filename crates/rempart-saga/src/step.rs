//! A saga's steps: what they receive ([`StepContext`]), how they fail
//! ([`StepError`]), and how typed closures become steps.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::decision::StepKind;

/// What a step call knows about itself.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The saga's id.
    pub saga_id: Uuid,
    /// The step's name.
    pub step: String,
    /// `{saga id}:{step name}`: the same on every attempt and after recovery;
    /// pass it to the service so a repeated call takes effect once.
    pub idempotency_key: String,
    /// 1 for the first call; above 1 the step may already have run.
    pub attempt: u32,
    /// The call must be over by then (ms since the Unix epoch); the engine
    /// cancels it at that time and counts a retryable timeout.
    pub deadline: u64,
}

/// How a step or a compensation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// A passing failure (timeout, 5xx, connection refused): retried with backoff.
    #[error("{0}")]
    Retryable(String),
    /// A business refusal (payment declined): no retry, the saga compensates.
    #[error("refused: {0}")]
    Refused(String),
}

impl StepError {
    /// A passing failure.
    pub fn retryable(e: impl std::fmt::Display) -> Self {
        StepError::Retryable(e.to_string())
    }
    /// A business refusal.
    pub fn refused(e: impl std::fmt::Display) -> Self {
        StepError::Refused(e.to_string())
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ExecFn = dyn Fn(StepContext, Value) -> BoxFuture<Result<Value, StepError>> + Send + Sync;
type CompFn =
    dyn Fn(StepContext, Value, Option<Value>) -> BoxFuture<Result<(), StepError>> + Send + Sync;

/// A step, with its input and output types erased to JSON.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) kind: StepKind,
    pub(crate) execute: Arc<ExecFn>,
    pub(crate) compensate: Option<Arc<CompFn>>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

fn decode<T: DeserializeOwned>(what: &str, v: Value) -> Result<T, StepError> {
    serde_json::from_value(v).map_err(|e| {
        StepError::Refused(format!(
            "the {what} does not match the step's type: {e}; fix the data or the definition"
        ))
    })
}

impl Step {
    fn exec_fn<I, O, F, Fut>(execute: F) -> Arc<ExecFn>
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(StepContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        let execute = Arc::new(execute);
        Arc::new(move |ctx, payload| {
            let execute = execute.clone();
            Box::pin(async move {
                let input: I = decode("saga payload", payload)?;
                let out = execute(ctx, input).await?;
                serde_json::to_value(out).map_err(|e| StepError::Refused(e.to_string()))
            })
        })
    }

    /// A compensable step: `compensate` receives the saga payload and the
    /// step's stored output, or `None` when the call may have run but its
    /// answer was lost (undo by the context's idempotency key).
    pub fn compensable<I, O, F, Fut, C, CFut>(name: &str, execute: F, compensate: C) -> Step
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(StepContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
        C: Fn(StepContext, I, Option<O>) -> CFut + Send + Sync + 'static,
        CFut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let compensate = Arc::new(compensate);
        Step {
            name: name.to_owned(),
            kind: StepKind::Compensable,
            execute: Step::exec_fn(execute),
            compensate: Some(Arc::new(move |ctx, payload, output| {
                let compensate = compensate.clone();
                Box::pin(async move {
                    // A payload or output that no longer decodes cannot be
                    // undone automatically: retryable, so it ends flagged.
                    let input: I = decode("saga payload", payload)
                        .map_err(|e| StepError::Retryable(e.to_string()))?;
                    let output: Option<O> = output
                        .map(|o| decode("stored output", o))
                        .transpose()
                        .map_err(|e| StepError::Retryable(e.to_string()))?;
                    compensate(ctx, input, output).await
                })
            })),
        }
    }

    /// The pivot: once it completes the saga only goes forward.
    pub fn pivot<I, O, F, Fut>(name: &str, execute: F) -> Step
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(StepContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        Step {
            name: name.to_owned(),
            kind: StepKind::Pivot,
            execute: Step::exec_fn(execute),
            compensate: None,
        }
    }

    /// A step after the pivot: retried until it succeeds, never compensated.
    pub fn retriable<I, O, F, Fut>(name: &str, execute: F) -> Step
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(StepContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        Step {
            kind: StepKind::Retriable,
            ..Step::pivot(name, execute)
        }
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's kind.
    pub fn kind(&self) -> StepKind {
        self.kind
    }
}
