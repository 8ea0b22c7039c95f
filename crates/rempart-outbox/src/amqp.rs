//! RabbitMQ as a destination: publisher confirms, and `message_id` is the
//! outbox id so an inbox can drop a republished message.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::decision::PublishError;
use crate::destination::{Destination, Routing, standard_headers};
use crate::message::Envelope;

/// RabbitMQ's default `max_message_size` (16 MiB since 4.0).
pub const AMQP_DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Publishes to an exchange with the routing key from [`Routing`],
/// `mandatory` (an unroutable message is an error, not lost) and publisher
/// confirms. A broken channel is reopened on the next publish.
#[derive(Debug)]
pub struct AmqpDestination {
    url: String,
    exchange: String,
    routing: Routing,
    timeout: Duration,
    max_payload: usize,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpDestination {
    /// A destination on `url` (`amqp://guest:guest@127.0.0.1:5672/%2f`)
    /// publishing to `exchange`; connects now, within `timeout`.
    pub async fn connect(
        url: &str,
        exchange: &str,
        routing: Routing,
        timeout: Duration,
    ) -> Result<Self, PublishError> {
        let d = AmqpDestination {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            routing,
            timeout,
            max_payload: AMQP_DEFAULT_MAX_MESSAGE,
            channel: Mutex::new(None),
        };
        let ch = d.open().await?;
        *d.channel.lock().await = Some(ch);
        Ok(d)
    }

    /// The broker's `max_message_size`, if not the default.
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    async fn open(&self) -> Result<(Connection, Channel), PublishError> {
        let fail = |e: String| {
            PublishError::transient(format!(
                "cannot reach RabbitMQ at {}: {e}",
                rempart_db::redact(&self.url)
            ))
        };
        let open = async {
            let conn = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, lapin::Error>((conn, ch))
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut slot = self.channel.lock().await;
        if let Some((conn, ch)) = slot.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let (conn, ch) = self.open().await?;
        *slot = Some((conn, ch.clone()));
        Ok(ch)
    }
}

impl Destination for AmqpDestination {
    fn name(&self) -> &str {
        "amqp"
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.max_payload)
    }

    async fn publish(&self, message: &Envelope) -> Result<(), PublishError> {
        let mut table = FieldTable::default();
        for (k, v) in standard_headers(message)? {
            table.insert(
                ShortString::from(k),
                AMQPValue::LongString(LongString::from(v)),
            );
        }
        let props = BasicProperties::default()
            .with_message_id(ShortString::from(crate::message_id(message.id)))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_headers(table);
        let ch = self.channel().await?;
        let confirm = ch
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(self.routing.subject(message)),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                message.payload.as_bytes(),
                props,
            )
            .await
            .map_err(|e| PublishError::transient(format!("RabbitMQ publish: {e}")))?;
        match confirm
            .await
            .map_err(|e| PublishError::transient(format!("RabbitMQ confirm: {e}")))?
        {
            lapin::Confirmation::Ack(None) => Ok(()),
            lapin::Confirmation::Ack(Some(_)) => Err(PublishError::transient(format!(
                "RabbitMQ: no queue is bound to {} for {}; the message stays in the outbox",
                self.exchange,
                self.routing.subject(message)
            ))),
            lapin::Confirmation::Nack(_) => Err(PublishError::transient(
                "RabbitMQ refused the message (nack)",
            )),
            lapin::Confirmation::NotRequested => Err(PublishError::transient(
                "RabbitMQ: publisher confirms are off on this channel",
            )),
        }
    }
}
