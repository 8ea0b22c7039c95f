//! The revenue projection `chiffre_affaires(date, store_id, total_ht,
//! total_tva, ticket_count)`, as a pure fold with a checkpoint.
//!
//! The seed's upsert added a ticket again each time its event was
//! replayed. Here every event is read with its global position, and the
//! projection keeps the position of the last event it applied (its
//! checkpoint): an event at or below the checkpoint changes nothing. A
//! store applies [`step`]'s [`RevenueChange`] and the new checkpoint in one
//! transaction, so a crash between the two cannot double-count either.
//! Rebuilding from position zero gives the same rows.
//!
//! Only fiscal `TICKET_CLOS` events count (training tickets are left out),
//! with the figures the close was validated with; the store and the date
//! come from the event's metadata, never from the register's name.

use std::collections::BTreeMap;

use crate::money::{Cents, MoneyError};
use crate::ticket::{BusinessDate, StoreId, TicketEvent, TicketMeta};

/// One row: a store's revenue on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revenue {
    /// Before tax.
    pub total_ht: Cents,
    /// The tax.
    pub total_tva: Cents,
    /// How many tickets.
    pub ticket_count: u64,
}

/// What one event adds to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueChange {
    /// The row's day.
    pub date: BusinessDate,
    /// The row's store.
    pub store_id: StoreId,
    /// HT to add.
    pub total_ht: Cents,
    /// TVA to add.
    pub total_tva: Cents,
    /// Tickets to add.
    pub ticket_count: u64,
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// At or below the checkpoint: already in the projection, skip it.
    AlreadyApplied,
    /// Move the checkpoint to `checkpoint` and apply `change` (if any), in
    /// one transaction.
    Advance {
        /// The new checkpoint (the event's position).
        checkpoint: u64,
        /// The change to the rows, if the event counts.
        change: Option<RevenueChange>,
    },
}

/// What an event at global `position` does to a projection whose checkpoint
/// is `checkpoint` (`None`: nothing applied yet).
pub fn step(
    checkpoint: Option<u64>,
    position: u64,
    meta: &TicketMeta,
    event: &TicketEvent,
) -> Result<Step, MoneyError> {
    if checkpoint.is_some_and(|c| position <= c) {
        return Ok(Step::AlreadyApplied);
    }
    let change = match event {
        TicketEvent::Closed(closed) if !closed.training => Some(RevenueChange {
            date: meta.business_date,
            store_id: meta.store_id.clone(),
            total_ht: closed.total.checked_sub(closed.vat)?,
            total_tva: closed.vat,
            ticket_count: 1,
        }),
        _ => None,
    };
    Ok(Step::Advance {
        checkpoint: position,
        change,
    })
}

/// The projection held in memory (central keeps the same rows in a table).
///
/// ```
/// use rempart_events::projection::RevenueProjection;
/// let projection = RevenueProjection::new();
/// assert_eq!(projection.checkpoint(), None);
/// assert!(projection.rows().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevenueProjection {
    rows: BTreeMap<(BusinessDate, StoreId), Revenue>,
    checkpoint: Option<u64>,
}

impl RevenueProjection {
    /// An empty projection, before any event.
    pub fn new() -> Self {
        Self::default()
    }

    /// The position of the last event applied.
    pub fn checkpoint(&self) -> Option<u64> {
        self.checkpoint
    }

    /// The rows, keyed by (date, store).
    pub fn rows(&self) -> &BTreeMap<(BusinessDate, StoreId), Revenue> {
        &self.rows
    }

    /// The row of `store` on `date`.
    pub fn row(&self, date: BusinessDate, store: &StoreId) -> Option<&Revenue> {
        self.rows.get(&(date, store.clone()))
    }

    /// Apply the event at `position`; returns what it did. On an overflow
    /// the projection is left unchanged.
    pub fn apply(
        &mut self,
        position: u64,
        meta: &TicketMeta,
        event: &TicketEvent,
    ) -> Result<Step, MoneyError> {
        let outcome = step(self.checkpoint, position, meta, event)?;
        if let Step::Advance { checkpoint, change } = &outcome {
            if let Some(c) = change {
                let row = self.rows.get(&(c.date, c.store_id.clone()));
                let current = row.copied().unwrap_or_default();
                let updated = Revenue {
                    total_ht: current.total_ht.checked_add(c.total_ht)?,
                    total_tva: current.total_tva.checked_add(c.total_tva)?,
                    ticket_count: current.ticket_count.checked_add(c.ticket_count).ok_or(
                        MoneyError::Overflow {
                            what: "a ticket count",
                        },
                    )?,
                };
                self.rows.insert((c.date, c.store_id.clone()), updated);
            }
            self.checkpoint = Some(*checkpoint);
        }
        Ok(outcome)
    }
}
