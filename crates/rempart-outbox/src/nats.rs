//! NATS JetStream as a destination: `Nats-Msg-Id` is the outbox id, so the
//! stream's duplicate window drops a republished message.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};

use crate::decision::PublishError;
use crate::destination::{Destination, Routing, standard_headers};
use crate::message::Envelope;

/// Publishes to JetStream; the subject comes from [`Routing`]. A stream
/// must capture the subjects (the relay retries while none does).
#[derive(Debug, Clone)]
pub struct NatsDestination {
    js: jetstream::Context,
    routing: Routing,
    max_payload: usize,
}

/// The NATS server could not be reached.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect to NATS at {url}: {reason}; check that nats-server runs with JetStream (-js) and the URL"
)]
pub struct NatsConnectError {
    /// The URL.
    pub url: String,
    /// Why.
    pub reason: String,
}

impl NatsDestination {
    /// Connects to `url` within `timeout`; acks are awaited at most `timeout` too.
    pub async fn connect(
        url: &str,
        routing: Routing,
        timeout: Duration,
    ) -> Result<Self, NatsConnectError> {
        let fail = |reason: String| NatsConnectError {
            url: url.to_owned(),
            reason,
        };
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(url);
        let client = tokio::time::timeout(timeout, client)
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self::new(client, routing, timeout))
    }

    /// On a connected client.
    pub fn new(client: async_nats::Client, routing: Routing, ack_timeout: Duration) -> Self {
        let max_payload = client.server_info().max_payload;
        let mut js = jetstream::new(client);
        js.set_timeout(ack_timeout);
        NatsDestination {
            js,
            routing,
            max_payload,
        }
    }
}

fn classify(e: &async_nats::jetstream::context::PublishError) -> PublishError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => PublishError::permanent(format!("NATS: {e}")),
        _ => PublishError::transient(format!("NATS: {e}")),
    }
}

impl Destination for NatsDestination {
    fn name(&self) -> &str {
        "nats"
    }

    fn max_payload(&self) -> Option<usize> {
        (self.max_payload > 0).then_some(self.max_payload)
    }

    async fn publish(&self, message: &Envelope) -> Result<(), PublishError> {
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in standard_headers(message)? {
            headers.insert(k.as_str(), v.as_str());
        }
        headers.insert("Nats-Msg-Id", crate::message_id(message.id).as_str());
        let ack = self
            .js
            .publish_with_headers(
                self.routing.subject(message),
                headers,
                message.payload.clone().into(),
            )
            .await
            .map_err(|e| classify(&e))?;
        ack.await.map_err(|e| classify(&e))?;
        Ok(())
    }
}
