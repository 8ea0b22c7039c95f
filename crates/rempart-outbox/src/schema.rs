//! The outbox and inbox components' embedded migrations.
//!
//! The seed's `outbox` columns stay (`id`, `aggregate_id`, `event_type`,
//! `payload`, `created_at`, `published_at`; `aggregate_id` is text so any
//! key fits, a UUID included). Added:
//! - `aggregate_type`, `headers`;
//! - `seq`, the message's place in its aggregate, taken from
//!   `outbox_sequences` whose row lock serialises writers of one aggregate,
//!   so `seq` order is commit order and has no gaps (a rollback undoes its bump);
//! - `state` (`pending`, `published`, `dead`), `attempts`, `next_attempt_at`
//!   (ms since the Unix epoch) and `last_error`, for retries and dead letters;
//!   (SQLite: version 2's trigger moves the counter, so `enqueue` is one
//!   statement there too);
//! - `outbox_relay_lease`: the one relay allowed to run on SQLite;
//! - `outbox_pending_age`, so a claim reads the oldest pending rows first
//!   and stops at its limit instead of sorting the whole backlog (on
//!   PostgreSQL since version 4 usable by that walk only, so the claim's
//!   per-aggregate lookups probe `outbox_pending`, see `store`);
//! - on PostgreSQL, a trigger that notifies `rempart_outbox` with the
//!   schema's name, so relays wake at commit instead of at their next poll;
//!   since version 3 only while a relay waits for it (`outbox_relay_waiting`,
//!   a row per idle relay with an expiry), run at commit (deferred): a
//!   transaction that ran `NOTIFY` commits under a database-wide lock, so
//!   notifying on every enqueue capped the writers (see `relay`'s doc).
//!
//! The inbox keeps `(consumer, message_id)` rows (version 1) and, per
//! consumer and aggregate, the last seq applied (`inbox_sequences`, version 2).

use rempart_db::{Component, Migration};

/// The outbox tables, with each backend's types for the id, JSON and
/// timestamps: one text, so the two schemas cannot drift apart.
macro_rules! outbox_tables {
    ($id:literal, $json:literal, $ts:literal, $now:literal) => {
        concat!(
            "
CREATE TABLE outbox (
  id              ", $id, " PRIMARY KEY,
  aggregate_type  VARCHAR(200) NOT NULL,
  aggregate_id    VARCHAR(200) NOT NULL,
  seq             BIGINT NOT NULL,
  event_type      VARCHAR(200) NOT NULL,
  payload         ", $json, " NOT NULL,
  headers         ", $json, " NOT NULL DEFAULT '{}',
  created_at      ", $ts, " NOT NULL DEFAULT ", $now, ",
  published_at    ", $ts, ",
  state           VARCHAR(20) NOT NULL DEFAULT 'pending',
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL DEFAULT 0,
  last_error      TEXT,
  CONSTRAINT outbox_aggregate_seq UNIQUE (aggregate_type, aggregate_id, seq)
);
CREATE INDEX outbox_pending ON outbox (aggregate_type, aggregate_id, seq) WHERE state = 'pending';
CREATE INDEX outbox_pending_age ON outbox (created_at) WHERE state = 'pending';
CREATE INDEX outbox_published ON outbox (published_at) WHERE state = 'published';
CREATE TABLE outbox_sequences (
  aggregate_type VARCHAR(200) NOT NULL,
  aggregate_id   VARCHAR(200) NOT NULL,
  last_seq       BIGINT NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE TABLE outbox_relay_lease (
  name       VARCHAR(100) PRIMARY KEY,
  owner      VARCHAR(200) NOT NULL,
  expires_at BIGINT NOT NULL,
  fence      BIGINT NOT NULL
);
"
        )
    };
}

macro_rules! inbox_table {
    ($ts:literal, $now:literal) => {
        concat!(
            "
CREATE TABLE inbox (
  consumer    VARCHAR(200) NOT NULL,
  message_id  VARCHAR(200) NOT NULL,
  received_at ",
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            ",
  PRIMARY KEY (consumer, message_id)
);
"
        )
    };
}

/// The outbox schema, as a [`Component`] for [`rempart_db::Db::migrate`].
pub const OUTBOX_SCHEMA: Component = Component {
    name: "outbox",
    migrations: &[
        Migration {
            version: 1,
            name: "outbox, sequences and relay lease",
            sqlite: outbox_tables!("BLOB", "TEXT", "TIMESTAMP", "CURRENT_TIMESTAMP"),
            postgres: concat!(
                outbox_tables!("UUID", "JSONB", "TIMESTAMPTZ", "NOW()"),
                "
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('rempart_outbox', TG_TABLE_SCHEMA);
  RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"
            ),
        },
        Migration {
            version: 2,
            name: "outbox counter moved by the insert (SQLite)",
            sqlite: OUTBOX_SEQUENCE_TRIGGER,
            // PostgreSQL's enqueue moves the counter in its own statement (a CTE).
            postgres: "SELECT 1",
        },
        Migration {
            version: 3,
            name: "outbox notifies only while a relay waits",
            // SQLite has no NOTIFY: its relay polls.
            sqlite: "SELECT 1",
            postgres: NOTIFY_WHILE_WAITING,
        },
        Migration {
            version: 4,
            name: "outbox claim lookups probe outbox_pending (PostgreSQL)",
            // SQLite keeps its claim and index (no LATERAL there).
            sqlite: "SELECT 1",
            postgres: PENDING_AGE_FOR_DUE_ROWS,
        },
    ],
};

// PostgreSQL: a relay about to wait for a notification writes a row
// (`until` bounds it if the relay dies); the trigger notifies only while
// one is unexpired. Deferred and per row, so it reads the table at commit:
// a writer that read it before a relay registered then commits just after
// (the relay's claim after registering covers earlier commits). The table
// is named with the schema, written in when the migration runs, so the
// function needs no search path and its plan is cached.
const NOTIFY_WHILE_WAITING: &str = "
CREATE TABLE outbox_relay_waiting (
  waiter VARCHAR(200) PRIMARY KEY,
  until  TIMESTAMPTZ NOT NULL
);
DROP TRIGGER outbox_notify ON outbox;
DO $do$ BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM %I.outbox_relay_waiting WHERE until > now()) THEN
    PERFORM pg_notify('rempart_outbox', TG_TABLE_SCHEMA);
  END IF;
  RETURN NULL;
END $$
$f$, current_schema());
END $do$;
CREATE CONSTRAINT TRIGGER outbox_notify AFTER INSERT ON outbox
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION outbox_notify();
";

// PostgreSQL: `outbox_pending_age` serves the claim's walk over due rows
// (`next_attempt_at <= $1` implies the predicate) and nothing else. With
// `state = 'pending'` alone it matched the claim's per-aggregate lookups
// too, and when statistics said few rows were pending the planner scanned
// this small index whole for each head instead of probing
// `outbox_pending`: quadratic in the backlog (`store::CLAIM_POSTGRES`).
const PENDING_AGE_FOR_DUE_ROWS: &str = "
DROP INDEX outbox_pending_age;
CREATE INDEX outbox_pending_age ON outbox (created_at)
  WHERE state = 'pending' AND next_attempt_at IS NOT NULL;
";

// SQLite: the counter follows each insert, in the insert's statement, so
// `enqueue` is one round trip (it reads `last_seq + 1` in a subquery). MAX:
// a row written by hand with an old seq never moves the counter back.
const OUTBOX_SEQUENCE_TRIGGER: &str = "
CREATE TRIGGER outbox_sequence AFTER INSERT ON outbox
BEGIN
  INSERT INTO outbox_sequences (aggregate_type, aggregate_id, last_seq)
  VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.seq)
  ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq);
END;
";

// Per (consumer, aggregate), the last `rempart-seq` applied: the inbox
// applies only the next one (see `inbox_order`). Same text on both backends.
const INBOX_SEQUENCES: &str = "
CREATE TABLE inbox_sequences (
  consumer       VARCHAR(200) NOT NULL,
  aggregate_type VARCHAR(200) NOT NULL,
  aggregate_id   VARCHAR(200) NOT NULL,
  last_seq       BIGINT NOT NULL,
  PRIMARY KEY (consumer, aggregate_type, aggregate_id)
);
";

/// The inbox schema: a consumer's database migrates this one only.
pub const INBOX_SCHEMA: Component = Component {
    name: "inbox",
    migrations: &[
        Migration {
            version: 1,
            name: "inbox",
            sqlite: inbox_table!("TIMESTAMP", "CURRENT_TIMESTAMP"),
            postgres: inbox_table!("TIMESTAMPTZ", "NOW()"),
        },
        Migration {
            version: 2,
            name: "inbox per-aggregate order",
            sqlite: INBOX_SEQUENCES,
            postgres: INBOX_SEQUENCES,
        },
    ],
};
