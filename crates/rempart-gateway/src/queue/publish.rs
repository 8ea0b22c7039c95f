//! Persistent publishing with publisher confirms: a job counts as queued
//! only once the broker has confirmed it, within a deadline.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::decision::{ATTEMPT_HEADER, ERROR_HEADER, REQUEUED_HEADER};
use super::job::Job;
use super::topology::QueueNames;
use super::{BrokerError, deadline};

/// The header giving why a message was dead-lettered.
pub const DEAD_REASON_HEADER: &str = "x-dead-reason";

/// Publishes one service's jobs on a channel in confirm mode.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
    names: QueueNames,
    timeout: Duration,
}

impl Publisher {
    /// Opens a confirming channel on `conn`; `timeout` bounds every wait.
    pub async fn open(
        conn: &Connection,
        names: QueueNames,
        timeout: Duration,
    ) -> Result<Publisher, BrokerError> {
        let channel = deadline(timeout, "opening a channel", conn.create_channel()).await?;
        deadline(
            timeout,
            "turning publisher confirms on",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(Publisher {
            channel,
            names,
            timeout,
        })
    }

    /// The queues it publishes to.
    pub fn names(&self) -> &QueueNames {
        &self.names
    }

    /// Queues a new job (attempt 1); `Ok` only once the broker confirmed it.
    pub async fn submit(&self, job: &Job) -> Result<(), BrokerError> {
        let props = persistent(&job.id.to_string(), headers(1, None, None));
        let queue = self.names.work.clone();
        self.publish(&queue, &job.encode(), props).await
    }

    /// Puts a failed job in the delay queue for `attempt` (which the header
    /// then carries), to come back to the work queue after `delay`.
    pub async fn delay(
        &self,
        payload: &[u8],
        message_id: Option<&str>,
        attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        self.delay_in(attempt, payload, message_id, attempt, delay, error)
            .await
    }

    /// Re-publishes a job that was not called to wait `delay` as the same
    /// `attempt`, in the delay queue of the next one (whose waits match
    /// this attempt's backoff), or the last one.
    pub async fn wait(
        &self,
        payload: &[u8],
        message_id: Option<&str>,
        attempt: u32,
        max_attempts: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        let queue = (attempt + 1).clamp(2, max_attempts.max(2));
        self.delay_in(queue, payload, message_id, attempt, delay, error)
            .await
    }

    async fn delay_in(
        &self,
        queue: u32,
        payload: &[u8],
        message_id: Option<&str>,
        attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        // Per-message TTL in whole milliseconds; 0 would skip the wait entirely.
        let ms = delay.as_millis().max(1);
        let props = persistent(
            message_id.unwrap_or(""),
            headers(attempt, Some(error), None),
        )
        .with_expiration(ShortString::from(ms.to_string()));
        self.publish(&self.names.delay(queue), payload, props).await
    }

    /// Moves a message to the dead-letter queue with why; the payload is kept
    /// as it came, readable or not, so nothing is lost.
    pub async fn dead(
        &self,
        payload: &[u8],
        message_id: Option<&str>,
        attempt: u32,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let props = persistent(
            message_id.unwrap_or(""),
            headers(attempt, None, Some(reason)),
        );
        let queue = self.names.dead.clone();
        self.publish(&queue, payload, props).await
    }

    /// Puts a dead job back on the work queue for an operator: attempt 1
    /// again, and [`REQUEUED_HEADER`] set to `times`, so the worker reopens
    /// the job instead of taking it for a duplicate of its dead state.
    pub async fn requeue(
        &self,
        payload: &[u8],
        message_id: Option<&str>,
        times: u32,
    ) -> Result<(), BrokerError> {
        let mut headers = headers(1, None, None);
        headers.insert(
            ShortString::from(REQUEUED_HEADER),
            AMQPValue::LongLongInt(i64::from(times)),
        );
        let props = persistent(message_id.unwrap_or(""), headers);
        let queue = self.names.work.clone();
        self.publish(&queue, payload, props).await
    }

    async fn publish(
        &self,
        queue: &str,
        payload: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let what = format!("publishing to {queue}");
        let confirm = deadline(
            self.timeout,
            &what,
            self.channel.basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                // Mandatory: a missing queue is an error, not a silent drop.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                props,
            ),
        )
        .await?;
        match deadline(self.timeout, &what, confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError(format!(
                "{what}: the queue does not exist; declare the topology first"
            ))),
            Confirmation::Nack(_) => Err(BrokerError(format!("{what}: the broker refused it"))),
            Confirmation::NotRequested => Err(BrokerError(format!(
                "{what}: publisher confirms are off on this channel"
            ))),
        }
    }
}

fn persistent(message_id: &str, headers: FieldTable) -> BasicProperties {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if message_id.is_empty() {
        props
    } else {
        props.with_message_id(ShortString::from(message_id))
    }
}

fn headers(attempt: u32, error: Option<&str>, dead: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    for (name, value) in [(ERROR_HEADER, error), (DEAD_REASON_HEADER, dead)] {
        if let Some(v) = value {
            t.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(v)),
            );
        }
    }
    t
}

/// The integer in header `name`, whatever integer type the publisher used.
pub fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    let v = props.headers().as_ref()?.inner().get(name)?;
    v.as_long_long_int()
        .or_else(|| v.as_long_int().map(i64::from))
        .or_else(|| v.as_long_uint().map(i64::from))
        .or_else(|| v.as_short_int().map(i64::from))
        .or_else(|| v.as_short_uint().map(i64::from))
        .or_else(|| v.as_short_short_int().map(i64::from))
        .or_else(|| v.as_short_short_uint().map(i64::from))
}

/// The text in header `name`, if it is one.
pub fn header_text(props: &BasicProperties, name: &str) -> Option<String> {
    let v = props.headers().as_ref()?.inner().get(name)?;
    v.as_long_string().map(|s| s.to_string())
}
