//! Sync's own tables (component `events_sync`), beside the event store's.
//! They hold derived, updatable state (acknowledged positions, the fleet
//! registry, detected conflicts): never the facts themselves.
//!
//! - `sync_registers` (central): each register's number in the fleet, its
//!   shop, and the last seq of its chain central acknowledged. A register
//!   keeps its number and shop forever: a batch claiming another is refused.
//! - `sync_peer` (a register): its number in the fleet (so whoever opens
//!   the store, `rempart events close` included, ticks its clock),
//!   central's acknowledgement of its chain, and how far it pulled its
//!   shop's events from central.
//! - `sync_conflicts` (central): concurrent events on one stream, with the
//!   decision the domain hook took.
//! - an index for the pull (a shop's events after a position).

use rempart_db::{Component, Migration};

const TABLES: &str = "
CREATE TABLE sync_registers (
  register_id TEXT PRIMARY KEY,
  register_no BIGINT NOT NULL UNIQUE,
  store_id    TEXT NOT NULL,
  acked_seq   BIGINT NOT NULL,
  updated_at  BIGINT NOT NULL
);
CREATE TABLE sync_peer (
  register_id     TEXT PRIMARY KEY,
  register_no     BIGINT NOT NULL,
  acked_seq       BIGINT NOT NULL,
  pulled_position BIGINT NOT NULL
);
CREATE TABLE sync_conflicts (
  stream_id         TEXT NOT NULL,
  first_register    BIGINT NOT NULL,
  first_counter     BIGINT NOT NULL,
  second_register   BIGINT NOT NULL,
  second_counter    BIGINT NOT NULL,
  decision_register BIGINT,
  decision_counter  BIGINT,
  detected_at       BIGINT NOT NULL,
  PRIMARY KEY (stream_id, first_register, first_counter, second_register, second_counter)
);
CREATE INDEX events_store_position ON events (store_id, global_position);
";

/// Sync's schema; migrate it after [`crate::schema::EVENTS_SCHEMA`] (it
/// indexes the `events` table).
pub const SYNC_SCHEMA: Component = Component {
    name: "events_sync",
    migrations: &[Migration {
        version: 1,
        name: "fleet registry, register's acks, conflicts, pull index",
        sqlite: TABLES,
        postgres: TABLES,
    }],
};
