//! The event store's embedded migrations (component `events`).
//!
//! - `events`: one row per event. `global_position` is gapless and in commit
//!   order (appends are serialised: SQLite's single writer, PostgreSQL's
//!   `LOCK TABLE events IN EXCLUSIVE MODE`, which readers do not wait on), so
//!   a reader at position p never misses an event committed later below p.
//!   `payload` and `metadata` are TEXT on both backends, never JSONB: the
//!   hash chain covers their exact bytes, and JSONB would rewrite them.
//! - `technical_events`: the technical-event journal (JET), chained too.
//! - `register_keys`: each register's Ed25519 public key.
//! - `archive_manifest`: filled only in an archive file (see [`crate::archive`]).
//! - `event_snapshots`: derived state, so it may be overwritten.
//!
//! `events`, `technical_events`, `register_keys` and `archive_manifest`
//! refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) with triggers.

use rempart_db::{Component, Migration};

/// The tables, with each backend's types for the position, a UUID and bytes.
macro_rules! event_tables {
    ($pos:literal, $uuid:literal, $bytes:literal) => {
        concat!(
            "
CREATE TABLE events (
  global_position ",
            $pos,
            " PRIMARY KEY,
  event_id        ",
            $uuid,
            " NOT NULL UNIQUE,
  stream_id       TEXT NOT NULL,
  stream_version  BIGINT NOT NULL,
  event_type      TEXT NOT NULL,
  payload         TEXT NOT NULL,
  store_id        TEXT NOT NULL,
  register_id     TEXT NOT NULL,
  training        BOOLEAN NOT NULL,
  metadata        TEXT NOT NULL,
  clock           ",
            $bytes,
            " NOT NULL,
  recorded_at     BIGINT NOT NULL,
  checkpoint      TEXT,
  chain_seq       BIGINT NOT NULL,
  chain_hash      ",
            $bytes,
            " NOT NULL,
  signature       ",
            $bytes,
            ",
  CONSTRAINT events_stream_version UNIQUE (stream_id, stream_version),
  CONSTRAINT events_chain_seq UNIQUE (register_id, chain_seq)
);
CREATE TABLE technical_events (
  seq         ",
            $pos,
            " PRIMARY KEY,
  register_id TEXT NOT NULL,
  kind        TEXT NOT NULL,
  detail      TEXT NOT NULL,
  recorded_at BIGINT NOT NULL,
  chain_hash  ",
            $bytes,
            " NOT NULL
);
CREATE TABLE register_keys (
  register_id TEXT NOT NULL,
  public_key  ",
            $bytes,
            " NOT NULL,
  added_at    BIGINT NOT NULL,
  PRIMARY KEY (register_id, public_key)
);
CREATE TABLE archive_manifest (
  register_id    TEXT PRIMARY KEY,
  period         TEXT NOT NULL,
  first_position BIGINT NOT NULL,
  last_position  BIGINT NOT NULL,
  first_seq      BIGINT NOT NULL,
  last_seq       BIGINT NOT NULL,
  prev_hash      ",
            $bytes,
            " NOT NULL,
  head_hash      ",
            $bytes,
            " NOT NULL,
  event_count    BIGINT NOT NULL,
  created_at     BIGINT NOT NULL,
  signature      ",
            $bytes,
            "
);
CREATE TABLE event_snapshots (
  stream_id      TEXT PRIMARY KEY,
  stream_version BIGINT NOT NULL,
  state          TEXT NOT NULL,
  taken_at       BIGINT NOT NULL
);
"
        )
    };
}

/// SQLite's refusal of UPDATE and DELETE on one table.
macro_rules! sqlite_append_only {
    ($table:literal) => {
        concat!(
            "CREATE TRIGGER ",
            $table,
            "_no_update BEFORE UPDATE ON ",
            $table,
            " BEGIN SELECT RAISE(ABORT, '",
            $table,
            " is append-only (NF 525): UPDATE refused'); END;\n",
            "CREATE TRIGGER ",
            $table,
            "_no_delete BEFORE DELETE ON ",
            $table,
            " BEGIN SELECT RAISE(ABORT, '",
            $table,
            " is append-only (NF 525): DELETE refused'); END;\n"
        )
    };
}

/// PostgreSQL's refusal of UPDATE, DELETE and TRUNCATE on one table.
macro_rules! postgres_append_only {
    ($table:literal) => {
        concat!(
            "CREATE TRIGGER ",
            $table,
            "_append_only BEFORE UPDATE OR DELETE ON ",
            $table,
            " FOR EACH ROW EXECUTE FUNCTION rempart_append_only();\n",
            "CREATE TRIGGER ",
            $table,
            "_no_truncate BEFORE TRUNCATE ON ",
            $table,
            " FOR EACH STATEMENT EXECUTE FUNCTION rempart_append_only();\n"
        )
    };
}

/// The event store's schema, as a [`Component`] for [`rempart_db::Db::migrate`].
pub const EVENTS_SCHEMA: Component = Component {
    name: "events",
    migrations: &[Migration {
        version: 1,
        name: "events, journal, keys, manifest, snapshots; append-only triggers",
        sqlite: concat!(
            event_tables!("INTEGER", "BLOB", "BLOB"),
            sqlite_append_only!("events"),
            sqlite_append_only!("technical_events"),
            sqlite_append_only!("register_keys"),
            sqlite_append_only!("archive_manifest"),
        ),
        postgres: concat!(
            event_tables!("BIGINT", "UUID", "BYTEA"),
            "
CREATE FUNCTION rempart_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only (NF 525): % refused', TG_TABLE_NAME, TG_OP;
END $$;
",
            postgres_append_only!("events"),
            postgres_append_only!("technical_events"),
            postgres_append_only!("register_keys"),
            postgres_append_only!("archive_manifest"),
        ),
    }],
};
