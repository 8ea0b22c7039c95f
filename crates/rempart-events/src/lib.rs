//! Offline-first event store (seed 001 case 3): each cash register keeps its
//! ticket events in a local SQLite store, tagged with vector clocks and
//! hash-chained for NF 525, and syncs them to a central store.
#![deny(missing_docs)]

// Domain (pure: no database, no I/O).
pub mod calendar;
pub mod clock;
pub mod closure;
pub mod conflict;
pub mod money;
pub mod projection;
pub mod ticket;

// The store and its tamper evidence.
pub mod archive;
pub mod chain;
pub mod closing;
pub mod envelope;
pub mod journal;
pub mod revenue;
pub mod schema;
pub mod signing;
pub mod store;
pub mod sync;
pub mod till;
pub mod verify;
