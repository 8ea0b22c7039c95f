//! The queues a deferred service uses, declared idempotently at start.
//!
//! One delay queue per attempt, not one for all: RabbitMQ expires messages
//! only at a queue's head, so a 60 s message would hold back a 1 s one behind
//! it. Within one attempt's queue every delay is at most that attempt's
//! backoff `d` and those ahead were published earlier, so each message still
//! leaves within its own `[d/2, d]` jitter bounds.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};

use super::BrokerError;
use super::deadline;

/// The names of one service's queues, all on the default exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    /// Jobs to replay now.
    pub work: String,
    /// Jobs given up on (failed `max_attempts` times, or unreadable).
    pub dead: String,
}

impl QueueNames {
    /// `name` for the work queue, `name.dlq` for the dead letters and
    /// `name.delay.N` for the waits.
    pub fn new(name: &str) -> QueueNames {
        QueueNames {
            work: name.to_owned(),
            dead: format!("{name}.dlq"),
        }
    }

    /// The queue holding jobs waiting to become attempt `attempt` (2 or more).
    pub fn delay(&self, attempt: u32) -> String {
        format!("{}.delay.{attempt}", self.work)
    }

    /// Every queue for `max_attempts`, work queue first.
    pub fn all(&self, max_attempts: u32) -> Vec<String> {
        let mut v = vec![self.work.clone(), self.dead.clone()];
        v.extend((2..=max_attempts).map(|a| self.delay(a)));
        v
    }
}

/// Opens a connection within `timeout`, naming the broker when it fails.
pub async fn connect(url: &str, timeout: Duration) -> Result<Connection, BrokerError> {
    deadline(
        timeout,
        &format!("connecting to RabbitMQ at {}", redact(url)),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Declares the work queue, the dead-letter queue and one delay queue per
/// retry, all durable. Declaring again with the same arguments is a no-op, so
/// every gateway and worker does it at start.
pub async fn declare(
    channel: &Channel,
    names: &QueueNames,
    max_attempts: u32,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for q in [&names.work, &names.dead] {
        deadline(
            timeout,
            &format!("declaring queue {q}"),
            channel.queue_declare(q.as_str().into(), durable, FieldTable::default()),
        )
        .await?;
    }
    for attempt in 2..=max_attempts {
        let q = names.delay(attempt);
        // Expired messages go back to the work queue through the default exchange.
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(names.work.as_str())),
        );
        deadline(
            timeout,
            &format!("declaring delay queue {q}"),
            channel.queue_declare(q.as_str().into(), durable, args),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_configured_queue() {
        let n = QueueNames::new("optimizer-jobs");
        assert_eq!(
            n.all(3),
            [
                "optimizer-jobs",
                "optimizer-jobs.dlq",
                "optimizer-jobs.delay.2",
                "optimizer-jobs.delay.3"
            ]
        );
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
