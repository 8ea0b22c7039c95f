use std::collections::HashMap;
use std::sync::RwLock;

use super::pipeline::Pipeline;

/// Pipelines by service name, replaceable while in use.
///
/// A caller takes a pipeline (`get`, a cheap clone) per call, so a
/// replacement applies to the next call while calls in flight finish on the
/// pipeline they started with.
///
/// ```
/// use rempart::pipeline::{Pipeline, PipelineRegistry};
/// use rempart::CircuitBreaker;
/// use std::time::Duration;
///
/// let registry = PipelineRegistry::new();
/// registry.insert(
///     Pipeline::builder("users")
///         .circuit_breaker(CircuitBreaker::builder().name("users").build().unwrap())
///         .timeout(Duration::from_secs(3))
///         .build(),
/// );
/// registry.get("users").unwrap().breaker().unwrap().trip();
/// // A new timeout, the same breaker: the circuit stays open.
/// registry.update("users", |old| {
///     let old = old.unwrap();
///     Pipeline::builder("users")
///         .circuit_breaker(old.breaker().unwrap().clone())
///         .timeout(Duration::from_secs(5))
///         .build()
/// });
/// let users = registry.get("users").unwrap();
/// assert_eq!(users.timeout(), Some(Duration::from_secs(5)));
/// assert_eq!(users.breaker().unwrap().state(), rempart::CircuitState::Open);
/// ```
#[derive(Debug, Default)]
pub struct PipelineRegistry {
    pipelines: RwLock<HashMap<String, Pipeline>>,
}

impl PipelineRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `pipeline` under its name, replacing any pipeline of that name.
    pub fn insert(&self, pipeline: Pipeline) -> Option<Pipeline> {
        self.write().insert(pipeline.name().to_owned(), pipeline)
    }

    /// The pipeline of service `name`.
    pub fn get(&self, name: &str) -> Option<Pipeline> {
        self.read().get(name).cloned()
    }

    /// Replaces the pipeline of `name` with what `rebuild` makes from the
    /// current one (`None` if there is none), atomically with respect to
    /// other updates.
    pub fn update(&self, name: &str, rebuild: impl FnOnce(Option<&Pipeline>) -> Pipeline) {
        let mut map = self.write();
        let next = rebuild(map.get(name));
        map.insert(name.to_owned(), next);
    }

    /// Removes the pipeline of `name`.
    pub fn remove(&self, name: &str) -> Option<Pipeline> {
        self.write().remove(name)
    }

    /// The services' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().keys().cloned().collect();
        v.sort();
        v
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Pipeline>> {
        self.pipelines.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Pipeline>> {
        self.pipelines.write().unwrap_or_else(|p| p.into_inner())
    }
}
