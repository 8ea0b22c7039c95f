//! The ticket's state, folded from its events: `apply(state, &event)`.
//!
//! `apply` never fails and never refuses: events are facts already
//! recorded, validated by [`decide`](super::decide) when they were made.
//! A removal of more than is on the ticket (possible only in a history
//! [`decide`](super::decide) did not write) takes off what is there.
//! Totals are always recomputed from the lines, never stored.

use super::event::{DiscountApplied, PaymentReceived, TicketClosed, TicketEvent};
use super::meta::{RegisterId, TicketId};
use crate::money::{Cents, Discount, MoneyError, TicketTotals, VatRate, ticket_totals};

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TicketStatus {
    /// No `TICKET_OUVERT` yet.
    #[default]
    NotOpened,
    /// Open on a register: articles, discounts and payments go in.
    Open,
    /// Parked: only a resume is accepted.
    Suspended,
    /// Closed: nothing more is accepted.
    Closed,
    /// Cancelled before payment: nothing more is accepted.
    Cancelled,
}

/// One scanned article and how many of it were taken off since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Barcode.
    pub code_ean: String,
    /// Receipt label.
    pub label: String,
    /// Unit price, tax included.
    pub unit_price: Cents,
    /// VAT rate.
    pub vat_rate: VatRate,
    /// How many were added on this line.
    pub added: u32,
    /// How many of them were removed since.
    pub removed: u32,
}

impl Line {
    /// How many are still on the ticket.
    pub fn quantity(&self) -> u32 {
        self.added - self.removed
    }

    /// `quantity × unit price`, tax included.
    pub fn amount(&self) -> Result<Cents, MoneyError> {
        self.unit_price.checked_mul(i64::from(self.quantity()))
    }
}

/// A ticket, as its events say it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ticket {
    /// Its id, once opened.
    pub id: Option<TicketId>,
    /// Where it is in its life.
    pub status: TicketStatus,
    /// The register that holds it (opened or last resumed it).
    pub register: Option<RegisterId>,
    /// A training-mode ticket.
    pub training: bool,
    /// Its lines, in scan order.
    pub lines: Vec<Line>,
    /// Its discounts, in the order granted.
    pub discounts: Vec<DiscountApplied>,
    /// Its payments.
    pub payments: Vec<PaymentReceived>,
    /// The close, once closed.
    pub closed: Option<TicketClosed>,
}

impl Ticket {
    /// A ticket with no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ticket after `events`, from nothing.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a TicketEvent>) -> Self {
        events.into_iter().fold(Ticket::new(), apply)
    }

    /// How many of `code_ean` are on the ticket.
    pub fn quantity_of(&self, code_ean: &str) -> u32 {
        self.lines
            .iter()
            .filter(|l| l.code_ean == code_ean)
            .map(Line::quantity)
            .fold(0u32, u32::saturating_add)
    }

    /// The totals, computed from the lines and discounts.
    pub fn totals(&self) -> Result<TicketTotals, MoneyError> {
        let lines = self
            .lines
            .iter()
            .map(|l| Ok((l.vat_rate, l.amount()?)))
            .collect::<Result<Vec<_>, MoneyError>>()?;
        let discounts: Vec<Discount> = self.discounts.iter().map(|d| d.discount).collect();
        ticket_totals(&lines, &discounts)
    }

    /// The sum of the payments.
    pub fn paid(&self) -> Result<Cents, MoneyError> {
        self.payments
            .iter()
            .try_fold(Cents::ZERO, |sum, p| sum.checked_add(p.amount))
    }
}

/// The ticket after `event`.
pub fn apply(mut state: Ticket, event: &TicketEvent) -> Ticket {
    match event {
        TicketEvent::Opened(e) => {
            state.id = Some(e.ticket_id.clone());
            state.status = TicketStatus::Open;
            state.register = Some(e.register_id.clone());
            state.training = e.training;
        }
        TicketEvent::ArticleAdded(e) => state.lines.push(Line {
            code_ean: e.code_ean.clone(),
            label: e.label.clone(),
            unit_price: e.unit_price,
            vat_rate: e.vat_rate,
            added: e.quantity,
            removed: 0,
        }),
        TicketEvent::ArticleRemoved(e) => {
            // Latest lines first: a removal undoes the most recent scans,
            // which is what a cashier taking back an article means.
            let mut left = e.quantity;
            for line in state
                .lines
                .iter_mut()
                .rev()
                .filter(|l| l.code_ean == e.code_ean)
            {
                let take = left.min(line.quantity());
                line.removed += take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        TicketEvent::DiscountApplied(e) => state.discounts.push(e.clone()),
        TicketEvent::PaymentReceived(e) => state.payments.push(e.clone()),
        TicketEvent::Suspended(_) => state.status = TicketStatus::Suspended,
        TicketEvent::Resumed(e) => {
            state.status = TicketStatus::Open;
            state.register = Some(e.register_id.clone());
        }
        TicketEvent::Closed(e) => {
            state.status = TicketStatus::Closed;
            state.closed = Some(e.clone());
        }
        TicketEvent::Cancelled(_) => state.status = TicketStatus::Cancelled,
    }
    state
}
