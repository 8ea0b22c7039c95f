//! What goes into the outbox, and what comes out of it for the relay.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

/// A message to enqueue: an event about one aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The outbox id, sent as the broker's message id (`Nats-Msg-Id`,
    /// AMQP `message_id`) so brokers and inboxes can drop duplicates.
    pub id: Uuid,
    /// The aggregate's type, e.g. `order`: a subject token.
    pub aggregate_type: String,
    /// The aggregate's id; messages of one aggregate are published in order.
    pub aggregate_id: String,
    /// The event's type, e.g. `OrderCreated`: a subject token.
    pub event_type: String,
    /// The payload.
    pub payload: Value,
    /// Headers sent with the message.
    pub headers: BTreeMap<String, String>,
}

/// A message that cannot be enqueued, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbox message: {field} {value:?} {problem}")]
pub struct InvalidMessage {
    /// The field at fault.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong and how to fix it.
    pub problem: &'static str,
}

impl Message {
    /// A message with a fresh id and no headers. The types become subject
    /// tokens and routing-key words, so they are checked here:
    /// non-empty, at most 200 bytes, letters, digits, `_` and `-` only.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: Value,
    ) -> Result<Message, InvalidMessage> {
        let m = Message {
            id: Uuid::new_v4(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            payload,
            headers: BTreeMap::new(),
        };
        m.check()?;
        Ok(m)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks the fields (also run by `enqueue`, for messages built by hand).
    pub fn check(&self) -> Result<(), InvalidMessage> {
        token("aggregate_type", &self.aggregate_type)?;
        token("event_type", &self.event_type)?;
        if self.aggregate_id.is_empty() || self.aggregate_id.len() > 200 {
            return Err(InvalidMessage {
                field: "aggregate_id",
                value: self.aggregate_id.clone(),
                problem: "must be 1 to 200 bytes",
            });
        }
        Ok(())
    }
}

fn token(field: &'static str, v: &str) -> Result<(), InvalidMessage> {
    let ok = !v.is_empty()
        && v.len() <= 200
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidMessage {
            field,
            value: v.to_owned(),
            problem: "must be 1 to 200 ASCII letters, digits, '_' or '-' (it becomes a subject token)",
        })
    }
}

/// A row the relay claimed: what a destination publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The outbox id.
    pub id: Uuid,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The message's place in its aggregate (1, 2, 3, …), sent as a header.
    pub seq: i64,
    /// The event's type.
    pub event_type: String,
    /// The payload as stored (JSON text, unless someone wrote the table by hand).
    pub payload: String,
    /// The headers as stored (a JSON object of strings).
    pub headers: String,
    /// Failed publish attempts so far.
    pub attempts: u32,
    /// When the row was written (ms since the Unix epoch, database time;
    /// whole seconds on SQLite), for the lag metric.
    pub created_ms: i64,
}

impl Envelope {
    /// The headers, parsed; `Err` names the problem (a dead letter).
    pub fn header_map(&self) -> Result<BTreeMap<String, String>, String> {
        serde_json::from_str(&self.headers)
            .map_err(|e| format!("headers are not a JSON object of strings: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_that_cannot_be_a_subject_token_is_refused_with_its_field() {
        let e = Message::new("order.v1", "1", "OrderCreated", Value::Null).unwrap_err();
        assert_eq!(e.field, "aggregate_type");
        let e = Message::new("order", "1", "Order Created", Value::Null).unwrap_err();
        assert_eq!(e.field, "event_type");
        let e = Message::new("order", "", "OrderCreated", Value::Null).unwrap_err();
        assert_eq!(e.field, "aggregate_id");
        assert!(Message::new("order", "42", "OrderCreated", Value::Null).is_ok());
    }
}
