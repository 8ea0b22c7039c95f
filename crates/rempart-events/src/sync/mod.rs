//! Sync between registers and central (issue 13): both ways, idempotent,
//! in causal order, keeping every register's hash chain.
//!
//! - Push: a register sends its own chain after central's last ack
//!   ([`RegisterSync::outbox`]); central ([`Central::receive`]) ignores the
//!   event ids it holds, holds back events whose causal dependencies have not
//!   arrived (the [`crate::clock::CausalBuffer`]), appends the rest in one
//!   transaction (each event must land on its register's chain link, so the
//!   chain is kept, never rewritten), records concurrent events on a stream
//!   with the decision of [`crate::conflict::resolve`], and answers the
//!   register's acknowledged seq.
//! - Pull: a register takes its shop's events after the central position it
//!   reached ([`Central::pull`], [`RegisterSync::apply_pull`]); its store
//!   merges their clocks into its own on its next sale.
//!
//! - Who asks: every request is signed with the register's key ([`auth`]);
//!   a push must be signed by the key it carries, a pull by the enrolled key
//!   of a register of that shop.
//!
//! The decisions are plain functions in [`decide`] and [`auth`]; the HTTP
//! transport is `rempart events serve` (crates/rempart-cli).

pub mod auth;
mod central;
pub mod decide;
mod register;
mod schema;
pub mod wire;

pub use central::{Central, MAX_PULL_EVENTS, MAX_WAITING, RecordedConflict};
pub use register::RegisterSync;
pub use schema::SYNC_SCHEMA;

use crate::store::StoreError;

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The batch or page is wrong as sent (answered 400/422): the message
    /// says what, where, and how to fix it.
    #[error("{0}")]
    Rejected(String),
    /// It contradicts what central knows of the register (answered 409).
    #[error("{0}")]
    Conflict(String),
    /// Central is holding too much back now; send again later (503).
    #[error("{0}")]
    Busy(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
