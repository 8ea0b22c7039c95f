//! A register's ticket commands against its own store: read the ticket's
//! stream, fold it, [`decide_at`] the command, and append the events with
//! [`encode`] at the version read (so a concurrent writer on the same store
//! makes the append fail rather than decide on a stale ticket). A close is
//! appended at a signed `ticket` checkpoint.

use crate::envelope::{EnvelopeError, decode, encode};
use crate::store::{
    AppendResult, Checkpoint, Direction, EventStore, ExpectedVersion, NewEvent, StoreError,
};
use crate::ticket::{Refusal, Ticket, TicketCommand, TicketEvent, TicketMeta, apply, decide_at};

/// Events read per page when folding a ticket.
const PAGE: u32 = 1_000;

/// Why a ticket command recorded nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TillError {
    /// The command is refused by the ticket's rules.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed, or another writer moved the stream.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event of the stream cannot be read as a ticket event.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// The ticket stream holding ticket `ticket_id`.
pub fn ticket_stream(ticket_id: &str) -> String {
    format!("ticket-{ticket_id}")
}

impl EventStore {
    /// The ticket in `stream` as this store knows it, and the stream's
    /// version (0: no such stream). Rows that are not ticket events are skipped.
    pub async fn ticket(&self, stream: &str) -> Result<(Ticket, u64), TillError> {
        let (mut ticket, mut version) = (Ticket::new(), 0);
        loop {
            let page = self
                .read_stream(stream, version + 1, Direction::Forward, PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok((ticket, version));
            };
            version = last.version;
            for e in &page {
                if let Some((_, event)) = decode(e)? {
                    ticket = apply(ticket, &event);
                }
            }
        }
    }

    /// Runs `command` on the ticket in `stream` for the register and day in
    /// `meta`; returns the events recorded and the ticket after them.
    pub async fn run_ticket_command(
        &self,
        stream: &str,
        meta: &TicketMeta,
        command: &TicketCommand,
    ) -> Result<(Vec<TicketEvent>, Ticket, AppendResult), TillError> {
        let (state, version) = self.ticket(stream).await?;
        let events = decide_at(&state, &meta.register_id, command)?;
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| {
                let n = encode(meta, e);
                if matches!(e, TicketEvent::Closed(_)) {
                    n.signed(Checkpoint::Ticket)
                } else {
                    n
                }
            })
            .collect();
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let at = self.append(stream, expected, new).await?;
        let after = events.iter().fold(state, apply);
        Ok((events, after, at))
    }
}
