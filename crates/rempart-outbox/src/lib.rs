//! Transactional outbox (seed 001 case 1), on SQLite or PostgreSQL.
//!
//! - [`Outbox::enqueue`] writes a [`Message`] in the caller's own sqlx
//!   transaction, next to the business change: both commit or neither does.
//! - [`Relay`] publishes committed messages to a [`Destination`] (NATS
//!   JetStream, RabbitMQ, or an in-process channel) with the outbox id as the
//!   message id, and records them published.
//! - [`Inbox::handle_once`] applies a delivered message's effects once per
//!   consumer, in the consumer's transaction; [`jetstream_batch`] and
//!   [`amqp_batch`] do it for a JetStream pull consumer and a RabbitMQ queue,
//!   acking after the commit.
//! - [`decision`]: the relay's decisions as pure functions; read it first.
//! - [`inbox_order`]: the inbox applies an aggregate's messages in their
//!   `rempart-seq` order, whatever order the broker redelivers them in.
//! - [`OutboxStore`]: retention, dead letters, the backlog.
//! - [`OutboxMetrics`]: the Prometheus metrics.
//! - [`CutProxy`]: an outage drill, a TCP proxy that cuts a broker off.
//!
//! ## No skipped rows: claims, not a cursor
//! The seed polls `WHERE published_at IS NULL ORDER BY created_at`; any cursor
//! on an insert-time id or timestamp skips a row whose transaction began
//! earlier but committed later than rows already read past. Two fixes exist:
//! a commit-ordered cursor (`pg_current_xact_id()` stored as `xid8`, reading
//! only below `pg_snapshot_xmin(pg_current_snapshot())`), or claiming
//! unpublished rows by their state. We claim, because:
//! - a claim has no cursor to run ahead: a row is pending until it is marked,
//!   whenever it committed, so a late commit is simply found by the next claim;
//! - it works the same on SQLite, which has no transaction ids;
//! - one long transaction only delays its own rows, where the `xid8` cursor
//!   holds every relay below the oldest open transaction of the database;
//! - rows need a state anyway (retries, dead letters, retention), and
//!   `FOR UPDATE SKIP LOCKED` lets several relays share the table without a
//!   cursor per partition.
//!
//! ## Per-aggregate order, with several relays
//! `enqueue` numbers each aggregate's messages (`seq`) from a counter row in
//! `outbox_sequences` whose lock is held to the commit: writers of one
//! aggregate are serialised, so `seq` order is commit order, without gaps.
//! A relay claims *aggregates*: it locks the head (lowest pending `seq`) of
//! each, skipping heads another relay holds, and takes the aggregate's next
//! rows with it. It publishes one chain per aggregate: chains in parallel
//! (pipelined; acks awaited together), a chain's messages one after another,
//! stopping at a failure, so no message overtakes an earlier one of its
//! aggregate. A dead letter is moved aside and its aggregate goes on: the
//! consumer sees a gap in `rempart-seq`.
//!
//! ## A broker outage
//! A cycle with transient failures and nothing published is an outage: the
//! rows keep their attempts and are due again at once, and the relay backs
//! off (rempart's `Backoff`) behind a circuit breaker around the destination.
//! Rows stay in the table and drain, in order, when the broker is back; a
//! failure among successes is the message's own (its own backoff, and
//! `max_attempts` if set). A message that can never go (not its declared
//! type, over the broker's size limit) is dead-lettered before any publish.
//!
//! ## SQLite
//! A relay's PostgreSQL cycle is one transaction held across the publishes;
//! on SQLite that would block the application's writers, so one relay holds
//! a lease row (`outbox_relay_lease`, fenced), claims without locks and
//! writes the outcomes in a short transaction.
//!
//! ## Duplicates
//! A relay that dies between the publish and the mark publishes again with
//! the same message id: JetStream drops it within its duplicate window
//! (`Nats-Msg-Id`), and the [`Inbox`] absorbs it on any broker.
//!
//! ## Order at the consumer
//! Brokers redeliver a message whose ack was lost, or that was nak'ed, after
//! later messages of its aggregate. The consumer helpers apply a message
//! only when its `rempart-seq` follows the last one applied for its
//! aggregate ([`inbox_order`]); an early one is nak'ed for a redelivery.
//! A consumer that starts after retention deleted an aggregate's first
//! messages calls [`Inbox::start_at`] first, or it waits for seq 1 forever.

#![deny(missing_docs)]

mod amqp;
mod consume;
pub mod decision;
mod destination;
mod drill;
mod enqueue;
pub mod inbox_order;
mod message;
mod metrics;
mod nats;
pub mod pace;
mod relay;
pub mod schema;
mod store;
mod waiters;

pub use amqp::{AMQP_DEFAULT_MAX_MESSAGE, AmqpDestination};
pub use consume::{
    ConsumeError, Consumed, EARLY_REDELIVERY, Incoming, amqp_batch, apply_incoming, jetstream_batch,
};
pub use decision::{FailureKind, PayloadChecks, PublishError, RetryPolicy, RowOutcome};
pub use destination::{ChannelDestination, Delivery, Destination, Routing, standard_headers};
pub use drill::CutProxy;
pub use enqueue::{Backend, EnqueueError, Handled, Inbox, Outbox, message_id};
pub use inbox_order::Position;
pub use message::{Envelope, InvalidMessage, Message};
pub use metrics::{OutboxMetrics, RelayActivity};
pub use nats::{NatsConnectError, NatsDestination};
pub use relay::{NOTIFY_CHANNEL, Relay, RelayConfig, RelayError};
pub use schema::{INBOX_SCHEMA, OUTBOX_SCHEMA};
pub use store::{AggregateBacklog, Backlog, DeadLetter, OutboxStore};
