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
//! - `outbox_relay_lease`: the one relay allowed to run on SQLite;
//! - `outbox_pending_age`, so a claim reads the oldest pending rows first
//!   and stops at its limit instead of sorting the whole backlog;
//! - on PostgreSQL, a statement trigger that notifies `rempart_outbox` with
//!   the schema's name, so relays wake at commit instead of at their next poll.

use rempart_db::{Component, Migration};

/// The outbox schema, as a [`Component`] for [`rempart_db::Db::migrate`].
pub const OUTBOX_SCHEMA: Component = Component {
    name: "outbox",
    migrations: &[Migration {
        version: 1,
        name: "outbox, sequences and relay lease",
        sqlite: "
CREATE TABLE outbox (
  id              BLOB PRIMARY KEY,
  aggregate_type  VARCHAR(200) NOT NULL,
  aggregate_id    VARCHAR(200) NOT NULL,
  seq             BIGINT NOT NULL,
  event_type      VARCHAR(200) NOT NULL,
  payload         TEXT NOT NULL,
  headers         TEXT NOT NULL DEFAULT '{}',
  created_at      TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  published_at    TIMESTAMP,
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
",
        postgres: "
CREATE TABLE outbox (
  id              UUID PRIMARY KEY,
  aggregate_type  VARCHAR(200) NOT NULL,
  aggregate_id    VARCHAR(200) NOT NULL,
  seq             BIGINT NOT NULL,
  event_type      VARCHAR(200) NOT NULL,
  payload         JSONB NOT NULL,
  headers         JSONB NOT NULL DEFAULT '{}',
  created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  published_at    TIMESTAMPTZ,
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
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('rempart_outbox', TG_TABLE_SCHEMA);
  RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
",
    }],
};

/// The inbox schema: a consumer's database migrates this one only.
pub const INBOX_SCHEMA: Component = Component {
    name: "inbox",
    migrations: &[Migration {
        version: 1,
        name: "inbox",
        sqlite: "
CREATE TABLE inbox (
  consumer    VARCHAR(200) NOT NULL,
  message_id  VARCHAR(200) NOT NULL,
  received_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (consumer, message_id)
);
",
        postgres: "
CREATE TABLE inbox (
  consumer    VARCHAR(200) NOT NULL,
  message_id  VARCHAR(200) NOT NULL,
  received_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (consumer, message_id)
);
",
    }],
};
