//! # rempart-gateway
//!
//! A resilient HTTP API gateway built on rempart's policies (seed 001 case 4):
//! a circuit breaker, bulkhead and timeout per service, stale-cache fallback
//! marked `X-Degraded-Mode`, per-client rate limits, and an admin listener with
//! `/health`, `/ready` and `/metrics`.
//!
//! Today this crate holds the gateway's configuration ([`config`]): the TOML
//! file parsed into plain structs, with every problem reported at once by
//! file, line, column and key. The server itself is being built on it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod cacheable;
pub mod client;
pub mod client_conn;
pub mod client_limit;
pub mod config;
pub mod deadline_body;
pub mod demo;
pub mod headers;
pub mod health_check;
pub mod jobs_worker;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod queue;
pub mod redis_backend;
mod retry_pause;
pub mod router;
pub mod server;
pub mod stale;
pub mod upstream;
