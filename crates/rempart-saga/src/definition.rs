//! A saga's definition: its name and steps, validated when built.

use std::time::Duration;

use crate::decision::StepKind;
use crate::step::Step;

/// Why a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga {saga:?}: {problem}")]
pub struct DefinitionError {
    saga: String,
    problem: String,
}

/// A validated saga definition.
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) name: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) kinds: Vec<StepKind>,
    pub(crate) step_timeout: Duration,
    pub(crate) deadline: Option<Duration>,
}

/// Builds a [`Saga`]: `Saga::builder("create_order").step(...).build()`.
#[derive(Debug)]
pub struct SagaBuilder {
    name: String,
    steps: Vec<Step>,
    step_timeout: Duration,
    deadline: Option<Duration>,
}

impl Saga {
    /// A new definition named `name` (the `type` column).
    pub fn builder(name: &str) -> SagaBuilder {
        SagaBuilder {
            name: name.to_owned(),
            steps: Vec::new(),
            step_timeout: Duration::from_secs(30),
            deadline: None,
        }
    }

    /// The definition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps' kinds, in order.
    pub fn kinds(&self) -> &[StepKind] {
        &self.kinds
    }
}

impl SagaBuilder {
    /// Adds a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// How long one step call may take before it counts as a retryable timeout (30 s).
    pub fn step_timeout(mut self, d: Duration) -> Self {
        self.step_timeout = d;
        self
    }

    /// Past this time from the start, steps before the pivot are no longer
    /// started and the saga compensates (no deadline by default).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// Checks the shape: at least one step, unique names of at most 100
    /// characters, at most one pivot, no compensable step after it, and
    /// retriable steps only after it.
    pub fn build(self) -> Result<Saga, DefinitionError> {
        let fail = |problem: String| DefinitionError {
            saga: self.name.clone(),
            problem,
        };
        if self.name.is_empty() || self.name.len() > 100 {
            return Err(fail("the name must have 1 to 100 characters".into()));
        }
        if self.steps.is_empty() {
            return Err(fail("it has no step; add one with .step(...)".into()));
        }
        if self.step_timeout.is_zero() {
            return Err(fail(
                "the step timeout is zero; give it a positive duration".into(),
            ));
        }
        let mut pivot: Option<&str> = None;
        for (i, s) in self.steps.iter().enumerate() {
            if s.name.is_empty() || s.name.len() > 100 {
                return Err(fail(format!(
                    "step {i}: a name must have 1 to 100 characters"
                )));
            }
            if self.steps[..i].iter().any(|p| p.name == s.name) {
                return Err(fail(format!(
                    "two steps are named {:?}; step names must be unique (they key the step records)",
                    s.name
                )));
            }
            match (s.kind, pivot) {
                (StepKind::Pivot, Some(p)) => {
                    return Err(fail(format!(
                        "{:?} is a second pivot after {p:?}; a saga has at most one",
                        s.name
                    )));
                }
                (StepKind::Pivot, None) => pivot = Some(&s.name),
                (StepKind::Compensable, Some(p)) => {
                    return Err(fail(format!(
                        "compensable step {:?} comes after the pivot {p:?}; it could never be undone. Make it retriable, or move it before the pivot",
                        s.name
                    )));
                }
                (StepKind::Retriable, None) => {
                    return Err(fail(format!(
                        "retriable step {:?} has no pivot before it; mark the go/no-go step with Step::pivot",
                        s.name
                    )));
                }
                _ => {}
            }
        }
        let kinds = self.steps.iter().map(|s| s.kind).collect();
        Ok(Saga {
            name: self.name,
            steps: self.steps,
            kinds,
            step_timeout: self.step_timeout,
            deadline: self.deadline,
        })
    }
}
