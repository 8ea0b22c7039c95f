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
//!
//! Seed 001's order saga, shortened to two steps: stock is reserved (and
//! released if a later step refuses), then the payment is the pivot, charged
//! once per idempotency key however often a crash makes the engine call it.
//!
//! ```
//! use rempart_saga::{EngineConfig, Saga, SagaEngine, SagaStatus, SqlSagaStore, Step, StepError};
//! use serde_json::{json, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}", dir.path().join("sagas.db").display());
//! let saga = Saga::builder("create_order")
//!     .step(Step::compensable(
//!         "RESERVE_STOCK",
//!         |_ctx, _order: Value| async { Ok::<_, StepError>(json!({ "reservation": 1 })) },
//!         |_ctx, _order: Value, _reservation: Option<Value>| async { Ok(()) },
//!     ))
//!     .step(Step::pivot("PROCESS_PAYMENT", |ctx, _order: Value| async move {
//!         // The payment provider dedupes on this key: `{saga id}:PROCESS_PAYMENT`.
//!         Ok::<_, StepError>(json!({ "charge": ctx.idempotency_key }))
//!     }))
//!     .build()?;
//! let store = SqlSagaStore::open(&url).await?; // or postgres://…
//! let engine = SagaEngine::new(store, vec![saga], EngineConfig::default())?;
//! let done = engine.run("create_order", json!({ "order_id": 7 })).await?;
//! assert_eq!(done.status, SagaStatus::Completed);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod decision;
mod definition;
mod engine;
mod group_commit;
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
pub use store::{Lease, SagaStore, SagaSummary, SqlSagaStore, StoreError, WriteCounts};
