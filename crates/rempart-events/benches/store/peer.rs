//! The Rust peer, cqrs-es 0.5 (sqlite-es, postgres-es), on the same ticket
//! workload as ours, in the same run: one command rings up a whole ticket
//! (open, articles, payment, close), validated by our own `decide`, and its
//! events are committed in one transaction. cqrs-es loads the aggregate
//! (none yet), runs the command, and inserts the events one statement each;
//! ours decides the same commands and appends the batch hash-chained, the
//! close signed, the register's clock ticked.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rempart_events::ticket::{Refusal, Ticket, TicketCommand, TicketEvent, apply, decide};
use serde::{Deserialize, Serialize};

/// A ticket as cqrs-es sees it: our state, folded by our `apply`.
/// cqrs-es wants a serializable aggregate for its snapshots, which this
/// bench does not take: the state is skipped.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PeerTicket {
    #[serde(skip)]
    state: Ticket,
}

/// Our ticket event, under cqrs-es's event trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PeerEvent(pub(crate) TicketEvent);

impl DomainEvent for PeerEvent {
    fn event_type(&self) -> String {
        self.0.kind().to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// The register's commands for one ticket, run as one cqrs-es command.
#[derive(Debug)]
pub(crate) struct RingUp(pub(crate) Vec<TicketCommand>);

impl Aggregate for PeerTicket {
    const TYPE: &'static str = "ticket";
    type Command = RingUp;
    type Event = PeerEvent;
    type Error = Refusal;
    type Services = ();

    async fn handle(
        &mut self,
        command: RingUp,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Refusal> {
        for c in &command.0 {
            for e in decide(&self.state, c)? {
                sink.write(PeerEvent(e), self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: PeerEvent) {
        self.state = apply(std::mem::take(&mut self.state), &event.0);
    }
}

/// The tables sqlite-es and postgres-es read and write (what their
/// repositories' queries name), on `backend` ("sqlite" or "postgres").
pub(crate) fn tables(backend: &str) -> String {
    let json = if backend == "sqlite" { "text" } else { "json" };
    format!(
        "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL,
           sequence bigint NOT NULL, event_type text NOT NULL, event_version text NOT NULL,
           payload {json} NOT NULL, metadata {json} NOT NULL,
           PRIMARY KEY (aggregate_type, aggregate_id, sequence));
         CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL,
           last_sequence bigint NOT NULL, current_snapshot bigint NOT NULL, payload {json} NOT NULL,
           PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));"
    )
}
