//! Durable orchestrated sagas (seed 001 case 2), on SQLite or PostgreSQL.
//!
//! - [`Saga::builder`] and [`Step`]: a definition, checked when built
//!   (compensable steps, then at most one pivot, then retriable-only steps).
//! - [`decision`]: what happens next, as a pure function over the persisted
//!   records and `now`; read it first.
//! - [`SagaEngine`]: runs the decision against a [`SagaStore`] and the steps,
//!   under leases with fencing tokens; workers pick up due and stuck sagas
//!   under rempart's bulkhead and drain on shutdown.
//! - [`SqlSagaStore`]: the store on SQLite or PostgreSQL (`rempart-db`),
//!   with the schema in [`schema::SAGA_SCHEMA`].
//! - [`SagaMetrics`]: the Prometheus metrics.

#![deny(missing_docs)]

pub mod decision;
mod definition;
mod engine;
mod metrics;
pub mod record;
pub mod schema;
mod step;
pub mod store;

pub use decision::{Limits, StepKind};
pub use definition::{DefinitionError, Saga, SagaBuilder};
pub use engine::{EngineConfig, SagaEngine, SagaError};
pub use metrics::SagaMetrics;
pub use record::{SagaRecord, SagaStatus, StepRecord, StepStatus};
pub use step::{Step, StepContext, StepError};
pub use store::{Lease, SagaStore, SagaSummary, SqlSagaStore, StoreError};
