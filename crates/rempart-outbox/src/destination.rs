//! Where the relay publishes: one trait, and the in-process channel.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::decision::PublishError;
use crate::message::Envelope;

/// A broker the relay publishes to. `publish` returns once the broker has
/// acknowledged the message (or failed); the relay runs many at once, so a
/// destination's publishes must be safe to overlap.
pub trait Destination: Send + Sync + 'static {
    /// The name in logs and metrics (`nats`, `amqp`, `channel`).
    fn name(&self) -> &str;

    /// The largest message (payload and headers, in bytes) the broker takes;
    /// larger ones are dead-lettered without a publish.
    fn max_payload(&self) -> Option<usize> {
        None
    }

    /// Publishes one message, with the outbox id as its message id.
    fn publish(&self, message: &Envelope) -> impl Future<Output = Result<(), PublishError>> + Send;
}

type SubjectFn = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// How an aggregate type and an event type become a subject (NATS) or a
/// routing key (AMQP). Default: `{prefix}.{aggregate_type}.{event_type}`.
#[derive(Clone)]
pub struct Routing {
    subject: SubjectFn,
}

impl fmt::Debug for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Routing(e.g. {})",
            (self.subject)("order", "OrderCreated")
        )
    }
}

impl Routing {
    /// `{prefix}.{aggregate_type}.{event_type}`, e.g. `events.order.OrderCreated`.
    pub fn prefixed(prefix: impl Into<String>) -> Routing {
        let prefix = prefix.into();
        Routing {
            subject: Arc::new(move |agg, ev| format!("{prefix}.{agg}.{ev}")),
        }
    }

    /// Any rule of yours.
    pub fn custom(f: impl Fn(&str, &str) -> String + Send + Sync + 'static) -> Routing {
        Routing {
            subject: Arc::new(f),
        }
    }

    /// The subject of a message.
    pub fn subject(&self, message: &Envelope) -> String {
        (self.subject)(&message.aggregate_type, &message.event_type)
    }
}

/// Headers every destination adds to the message's own: where it comes
/// from and its place in its aggregate, so a consumer can check the order.
pub fn standard_headers(message: &Envelope) -> Result<BTreeMap<String, String>, PublishError> {
    let mut h = message.header_map().map_err(PublishError::permanent)?;
    h.insert(
        "rempart-aggregate-type".into(),
        message.aggregate_type.clone(),
    );
    h.insert("rempart-aggregate-id".into(), message.aggregate_id.clone());
    h.insert("rempart-event-type".into(), message.event_type.clone());
    h.insert("rempart-seq".into(), message.seq.to_string());
    Ok(h)
}

/// A message delivered through a [`ChannelDestination`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message id (the outbox id).
    pub id: Uuid,
    /// The subject.
    pub subject: String,
    /// The headers, standard ones included.
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub payload: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its place in the aggregate.
    pub seq: i64,
}

/// An in-process destination: a bounded channel, for tests and for a demo
/// without a broker. A full channel waits (the relay's publish deadline
/// applies); a dropped receiver is a transient failure, so rows stay.
#[derive(Debug, Clone)]
pub struct ChannelDestination {
    tx: mpsc::Sender<Delivery>,
    routing: Routing,
    max_payload: Option<usize>,
}

impl ChannelDestination {
    /// A destination and the receiving end, holding up to `capacity` messages.
    pub fn new(capacity: usize, routing: Routing) -> (Self, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            ChannelDestination {
                tx,
                routing,
                max_payload: None,
            },
            rx,
        )
    }

    /// Refuses messages over `bytes`, like a broker's limit.
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }
}

impl Destination for ChannelDestination {
    fn name(&self) -> &str {
        "channel"
    }

    fn max_payload(&self) -> Option<usize> {
        self.max_payload
    }

    async fn publish(&self, message: &Envelope) -> Result<(), PublishError> {
        let delivery = Delivery {
            id: message.id,
            subject: self.routing.subject(message),
            headers: standard_headers(message)?,
            payload: message.payload.clone(),
            aggregate_id: message.aggregate_id.clone(),
            seq: message.seq,
        };
        self.tx
            .send(delivery)
            .await
            .map_err(|_| PublishError::transient("the channel's receiver is gone"))
    }
}

/// One destination shared by several relays (one connection, many publishers).
impl<D: Destination> Destination for Arc<D> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn max_payload(&self) -> Option<usize> {
        (**self).max_payload()
    }

    fn publish(&self, message: &Envelope) -> impl Future<Output = Result<(), PublishError>> + Send {
        (**self).publish(message)
    }
}
