//! The saga component's embedded migrations: the seed's `sagas` and
//! `saga_steps`, with what the seed lacked: `UNIQUE (saga_id, step_name)`
//! (its `ON CONFLICT` needed it), lease and fencing columns, attempts, the
//! last error and the backoff's next attempt time.

use rempart_db::{Component, Migration};

/// The saga schema, as a [`Component`] for [`rempart_db::Db::migrate`].
pub const SAGA_SCHEMA: Component = Component {
    name: "saga",
    migrations: &[Migration {
        version: 1,
        name: "sagas and saga_steps",
        sqlite: "
CREATE TABLE sagas (
  id               BLOB PRIMARY KEY,
  type             VARCHAR(100) NOT NULL,
  status           VARCHAR(50) NOT NULL DEFAULT 'STARTED',
  payload          TEXT NOT NULL,
  current_step     VARCHAR(100),
  error            TEXT,
  created_at       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  next_attempt_at  BIGINT NOT NULL DEFAULT 0,
  deadline_at      BIGINT,
  abort_requested  BOOLEAN NOT NULL DEFAULT FALSE,
  lease_owner      VARCHAR(200),
  lease_expires_at BIGINT NOT NULL DEFAULT 0,
  fence            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sagas_due ON sagas (status, next_attempt_at);
CREATE TABLE saga_steps (
  id                    INTEGER PRIMARY KEY AUTOINCREMENT,
  saga_id               BLOB NOT NULL REFERENCES sagas(id),
  step_name             VARCHAR(100) NOT NULL,
  step_index            INTEGER NOT NULL,
  status                VARCHAR(50) NOT NULL,
  result                TEXT,
  attempts              INTEGER NOT NULL DEFAULT 0,
  compensation_attempts INTEGER NOT NULL DEFAULT 0,
  last_error            TEXT,
  executed_at           TIMESTAMP,
  compensated_at        TIMESTAMP,
  CONSTRAINT saga_steps_saga_step UNIQUE (saga_id, step_name)
);
",
        postgres: "
CREATE TABLE sagas (
  id               UUID PRIMARY KEY,
  type             VARCHAR(100) NOT NULL,
  status           VARCHAR(50) NOT NULL DEFAULT 'STARTED',
  payload          JSONB NOT NULL,
  current_step     VARCHAR(100),
  error            TEXT,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  next_attempt_at  BIGINT NOT NULL DEFAULT 0,
  deadline_at      BIGINT,
  abort_requested  BOOLEAN NOT NULL DEFAULT FALSE,
  lease_owner      VARCHAR(200),
  lease_expires_at BIGINT NOT NULL DEFAULT 0,
  fence            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sagas_due ON sagas (status, next_attempt_at);
CREATE TABLE saga_steps (
  id                    BIGSERIAL PRIMARY KEY,
  saga_id               UUID NOT NULL REFERENCES sagas(id),
  step_name             VARCHAR(100) NOT NULL,
  step_index            INTEGER NOT NULL,
  status                VARCHAR(50) NOT NULL,
  result                JSONB,
  attempts              INTEGER NOT NULL DEFAULT 0,
  compensation_attempts INTEGER NOT NULL DEFAULT 0,
  last_error            TEXT,
  executed_at           TIMESTAMPTZ,
  compensated_at        TIMESTAMPTZ,
  CONSTRAINT saga_steps_saga_step UNIQUE (saga_id, step_name)
);
",
    }],
};
