//! Consumer helpers: a JetStream durable pull consumer and a RabbitMQ queue
//! with manual acks, each applying a message through the [`Inbox`] in a
//! transaction and acking only after the commit. A crash before the commit
//! redelivers and applies once; a crash between the commit and the ack
//! redelivers and the inbox skips it. A message with the `rempart-*`
//! headers is applied in its aggregate's order ([`crate::inbox_order`]): one
//! that comes early is nak'ed and applied when the broker brings it again.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use sqlx::{Pool, Transaction};

use crate::enqueue::{Backend, Handled, Inbox};
use crate::inbox_order::Position;

/// How long an early message stays away before the broker brings it again:
/// its predecessor is usually being redelivered at that moment.
pub const EARLY_REDELIVERY: Duration = Duration::from_millis(100);

/// A delivered message, whichever the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The message id (the producer's outbox id): the inbox key.
    pub id: String,
    /// The subject (NATS) or routing key (AMQP).
    pub subject: String,
    /// String headers.
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub payload: Bytes,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumed {
    /// Messages whose handler ran and committed.
    pub applied: u64,
    /// Messages the inbox had seen (acked, not applied).
    pub duplicates: u64,
    /// Messages ahead of their aggregate (an earlier seq not applied yet):
    /// not applied, handed back to the broker for a redelivery.
    pub early: u64,
    /// Messages whose handler or commit failed (redelivered later), or
    /// without a message id or with bad `rempart-*` headers (refused: they
    /// cannot be deduplicated or ordered).
    pub failed: u64,
}

impl Consumed {
    /// Messages taken from the broker.
    pub fn total(&self) -> u64 {
        self.applied + self.duplicates + self.early + self.failed
    }
}

/// The broker failed (not a message).
#[derive(Debug, thiserror::Error)]
#[error("{broker}: {reason}")]
pub struct ConsumeError {
    /// `nats` or `amqp`.
    pub broker: &'static str,
    /// What failed.
    pub reason: String,
}

/// Applies one message in a transaction of its own through the inbox
/// ([`Inbox::handle_in_order`] with the message's [`Position`]), and
/// commits; `Err` leaves nothing behind (the transaction rolls back), and
/// `Handled::Early` means hand the message back to the source for a later
/// redelivery (nak it; do not ack it), nothing was applied. The
/// brokers' helpers call it; call it for a source of your own, and ack
/// that source only after it returns `Ok`.
pub async fn apply_incoming<DB, H, E>(
    pool: &Pool<DB>,
    consumer: &str,
    incoming: &Incoming,
    handler: &H,
) -> Result<Handled<()>, String>
where
    DB: Backend,
    H: AsyncFn(&mut Transaction<'static, DB>, &Incoming) -> Result<(), E>,
    E: std::fmt::Display,
{
    let position = Position::from_headers(&incoming.headers)
        .map_err(|e| format!("message {}: {e}", incoming.id))?;
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let handled = Inbox::handle_in_order(
        &mut tx,
        consumer,
        &incoming.id,
        position.as_ref(),
        async |tx| {
            handler(tx, incoming)
                .await
                .map_err(|e| Failure(e.to_string()))
        },
    )
    .await
    .map_err(|Failure(e)| e)?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(handled)
}

/// A handler's or the inbox's failure, as text for the log.
struct Failure(String);

impl From<crate::enqueue::EnqueueError> for Failure {
    fn from(e: crate::enqueue::EnqueueError) -> Failure {
        Failure(e.to_string())
    }
}

fn count(c: &mut Consumed, r: &Result<Handled<()>, String>, consumer: &str, id: &str) {
    match r {
        Ok(Handled::Applied(())) => c.applied += 1,
        Ok(Handled::Duplicate) => c.duplicates += 1,
        Ok(Handled::Early { expected }) => {
            c.early += 1;
            tracing::debug!(
                consumer,
                id,
                expected,
                "message ahead of its aggregate; redelivered later"
            );
        }
        Err(e) => {
            c.failed += 1;
            tracing::warn!(consumer, id, error = %e, "message not applied; it will be redelivered");
        }
    }
}

/// Fetches up to `max` messages from a durable pull consumer (waiting at
/// most `wait` for them), applies each, and acks it after its commit; a
/// failed one is nak'ed for redelivery after `retry_after`, an early one
/// after [`EARLY_REDELIVERY`]; one with bad `rempart-*` headers is
/// terminated. An early nak is a delivery: leave the consumer's
/// `max_deliver` unlimited (the default), or a message that waits long for
/// its predecessor is dropped.
pub async fn jetstream_batch<DB, H, E>(
    source: &PullConsumer,
    pool: &Pool<DB>,
    consumer: &str,
    handler: &H,
    max: usize,
    wait: Duration,
    retry_after: Duration,
) -> Result<Consumed, ConsumeError>
where
    DB: Backend,
    H: AsyncFn(&mut Transaction<'static, DB>, &Incoming) -> Result<(), E>,
    E: std::fmt::Display,
{
    let fail = |reason: String| ConsumeError {
        broker: "nats",
        reason,
    };
    let fetch = source
        .fetch()
        .max_messages(max.max(1))
        .expires(wait)
        .messages();
    let mut batch = tokio::time::timeout(wait + Duration::from_secs(5), fetch)
        .await
        .map_err(|_| fail(format!("no answer to a fetch within {wait:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let mut c = Consumed::default();
    while let Some(msg) = tokio::time::timeout(wait + Duration::from_secs(5), batch.next())
        .await
        .map_err(|_| fail("a fetch did not end".into()))?
    {
        let msg = msg.map_err(|e| fail(e.to_string()))?;
        let mut headers = BTreeMap::new();
        if let Some(h) = &msg.headers {
            for (k, vs) in h.iter() {
                if let Some(v) = vs.first() {
                    headers.insert(k.to_string(), v.as_str().to_owned());
                }
            }
        }
        let Some(id) = headers.get("Nats-Msg-Id").cloned() else {
            c.failed += 1;
            tracing::warn!(consumer, subject = %msg.subject, "message without Nats-Msg-Id refused");
            let _ = msg.ack_with(AckKind::Term).await;
            continue;
        };
        if let Err(e) = Position::from_headers(&headers) {
            c.failed += 1;
            tracing::warn!(consumer, id, error = %e, "message with bad ordering headers refused");
            let _ = msg.ack_with(AckKind::Term).await;
            continue;
        }
        let incoming = Incoming {
            id,
            subject: msg.subject.to_string(),
            headers,
            payload: msg.payload.clone(),
        };
        let r = apply_incoming(pool, consumer, &incoming, handler).await;
        count(&mut c, &r, consumer, &incoming.id);
        let ack = match r {
            Ok(Handled::Early { .. }) => msg.ack_with(AckKind::Nak(Some(EARLY_REDELIVERY))).await,
            Ok(_) => msg.ack().await,
            Err(_) => msg.ack_with(AckKind::Nak(Some(retry_after))).await,
        };
        ack.map_err(|e| fail(format!("ack: {e}")))?;
    }
    Ok(c)
}

/// Takes up to `max` messages from `queue` with manual acks (`basic.get`),
/// applies each, and acks it after its commit; a failed one is nack'ed back
/// to the queue; one without `message_id` or with bad `rempart-*` headers is
/// rejected (dead-lettered if the queue has a dead-letter exchange). Early
/// ones are held (unacked) to the end of the batch, so the batch takes what
/// follows them (their predecessor, often), then after [`EARLY_REDELIVERY`]
/// nack'ed back to the queue: a queue holding only early messages is polled
/// at that pace, not in a hot loop.
pub async fn amqp_batch<DB, H, E>(
    channel: &lapin::Channel,
    queue: &str,
    pool: &Pool<DB>,
    consumer: &str,
    handler: &H,
    max: usize,
    timeout: Duration,
) -> Result<Consumed, ConsumeError>
where
    DB: Backend,
    H: AsyncFn(&mut Transaction<'static, DB>, &Incoming) -> Result<(), E>,
    E: std::fmt::Display,
{
    let fail = |reason: String| ConsumeError {
        broker: "amqp",
        reason,
    };
    let mut c = Consumed::default();
    let mut early = Vec::new();
    for _ in 0..max.max(1) {
        let got = tokio::time::timeout(
            timeout,
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .map_err(|_| fail(format!("no answer to basic.get within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
        let Some(got) = got else {
            break;
        };
        let d = got.delivery;
        let Some(id) = d.properties.message_id().as_ref().map(|s| s.to_string()) else {
            c.failed += 1;
            tracing::warn!(consumer, "message without message_id refused");
            d.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map_err(|e| fail(e.to_string()))?;
            continue;
        };
        let mut headers = BTreeMap::new();
        if let Some(table) = d.properties.headers() {
            for (k, v) in table.inner() {
                if let AMQPValue::LongString(s) = v {
                    headers.insert(k.to_string(), s.to_string());
                }
            }
        }
        if let Err(e) = Position::from_headers(&headers) {
            c.failed += 1;
            tracing::warn!(consumer, id, error = %e, "message with bad ordering headers refused");
            d.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map_err(|e| fail(e.to_string()))?;
            continue;
        }
        let incoming = Incoming {
            id,
            subject: d.routing_key.to_string(),
            headers,
            payload: Bytes::from(d.data.clone()),
        };
        let r = apply_incoming(pool, consumer, &incoming, handler).await;
        count(&mut c, &r, consumer, &incoming.id);
        let ack = match r {
            Ok(Handled::Early { .. }) => {
                early.push(d.acker);
                continue;
            }
            Ok(_) => d.acker.ack(BasicAckOptions::default()).await,
            Err(_) => {
                d.acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        ack.map_err(|e| fail(format!("ack: {e}")))?;
    }
    if !early.is_empty() {
        tokio::time::sleep(EARLY_REDELIVERY).await;
    }
    for acker in early {
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map_err(|e| fail(format!("nack: {e}")))?;
    }
    Ok(c)
}
