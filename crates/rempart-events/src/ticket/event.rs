//! The ticket's events: the seed's six, plus suspend and resume for a
//! ticket parked on one register and taken up on another, and cancel (the
//! seed's state has an `ANNULE` status but no event leading to it).
//!
//! On the wire they keep the seed's names (`TICKET_OUVERT`, …, `payload`);
//! amounts are cents, rates basis points. Changes from the seed, on purpose:
//! an article carries its VAT rate (a closure needs totals per rate), a
//! discount says its unit, a close carries the per-rate breakdown it was
//! validated against, and the training flag travels with open and close.

use serde::{Deserialize, Serialize};

use super::meta::{CashierId, RegisterId, TicketId};
use crate::money::{Cents, Discount, MoneyError, TicketTotals, VatBreakdown, VatRate};

/// Something that happened to a ticket. Never edited: a correction is a new
/// event (an [`ArticleRemoved`] undoes an [`ArticleAdded`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum TicketEvent {
    /// The ticket was opened.
    #[serde(rename = "TICKET_OUVERT")]
    Opened(TicketOpened),
    /// An article was scanned.
    #[serde(rename = "ARTICLE_AJOUTE")]
    ArticleAdded(ArticleAdded),
    /// Some of an article was taken off (the seed ignored this one).
    #[serde(rename = "ARTICLE_RETIRE")]
    ArticleRemoved(ArticleRemoved),
    /// A discount was granted on the whole ticket.
    #[serde(rename = "REMISE_APPLIQUEE")]
    DiscountApplied(DiscountApplied),
    /// A payment was taken.
    #[serde(rename = "PAIEMENT_RECU")]
    PaymentReceived(PaymentReceived),
    /// The ticket was parked, to be resumed (maybe on another register).
    #[serde(rename = "TICKET_SUSPENDU")]
    Suspended(TicketSuspended),
    /// A parked ticket was taken up.
    #[serde(rename = "TICKET_REPRIS")]
    Resumed(TicketResumed),
    /// The ticket was closed, fully paid.
    #[serde(rename = "TICKET_CLOS")]
    Closed(TicketClosed),
    /// The ticket was abandoned before it was paid: kept, never counted.
    #[serde(rename = "TICKET_ANNULE")]
    Cancelled(TicketCancelled),
}

impl TicketEvent {
    /// The seed's name of the event kind (`TICKET_OUVERT`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            TicketEvent::Opened(_) => "TICKET_OUVERT",
            TicketEvent::ArticleAdded(_) => "ARTICLE_AJOUTE",
            TicketEvent::ArticleRemoved(_) => "ARTICLE_RETIRE",
            TicketEvent::DiscountApplied(_) => "REMISE_APPLIQUEE",
            TicketEvent::PaymentReceived(_) => "PAIEMENT_RECU",
            TicketEvent::Suspended(_) => "TICKET_SUSPENDU",
            TicketEvent::Resumed(_) => "TICKET_REPRIS",
            TicketEvent::Closed(_) => "TICKET_CLOS",
            TicketEvent::Cancelled(_) => "TICKET_ANNULE",
        }
    }
}

/// `TICKET_OUVERT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketOpened {
    /// The ticket.
    #[serde(rename = "ticketId")]
    pub ticket_id: TicketId,
    /// The cashier (the seed's `caissierIdId`, typo fixed).
    #[serde(rename = "caissierId")]
    pub cashier_id: CashierId,
    /// The register it was opened on.
    #[serde(rename = "caisseId")]
    pub register_id: RegisterId,
    /// A training-mode ticket: recorded and marked, never counted in fiscal
    /// totals.
    #[serde(rename = "modeFormation")]
    pub training: bool,
}

/// `ARTICLE_AJOUTE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleAdded {
    /// The article's barcode.
    #[serde(rename = "codeEan")]
    pub code_ean: String,
    /// Its label on the receipt.
    #[serde(rename = "libelle")]
    pub label: String,
    /// How many (at least 1). A weighed article is one unit at the price
    /// the scale computed.
    #[serde(rename = "quantite")]
    pub quantity: u32,
    /// Unit price, tax included.
    #[serde(rename = "prixUnitaire")]
    pub unit_price: Cents,
    /// Its VAT rate.
    #[serde(rename = "tauxTva")]
    pub vat_rate: VatRate,
}

/// `ARTICLE_RETIRE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleRemoved {
    /// The article's barcode.
    #[serde(rename = "codeEan")]
    pub code_ean: String,
    /// How many are taken off.
    #[serde(rename = "quantite")]
    pub quantity: u32,
}

/// `REMISE_APPLIQUEE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscountApplied {
    /// The discount.
    #[serde(flatten)]
    pub discount: Discount,
    /// Why it was granted.
    #[serde(rename = "motif")]
    pub reason: String,
}

/// How a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentMode {
    /// Bank card.
    #[serde(rename = "CB")]
    Card,
    /// Cash.
    #[serde(rename = "ESPECES")]
    Cash,
    /// Meal voucher.
    #[serde(rename = "TITRE_RESTAURANT")]
    MealVoucher,
}

/// `PAIEMENT_RECU`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReceived {
    /// How.
    pub mode: PaymentMode,
    /// How much is kept (cash handed back as change is not part of it).
    #[serde(rename = "montant")]
    pub amount: Cents,
}

/// `TICKET_SUSPENDU`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSuspended {
    /// The register that parked it.
    #[serde(rename = "caisseId")]
    pub register_id: RegisterId,
}

/// `TICKET_REPRIS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketResumed {
    /// The register that took it up.
    #[serde(rename = "caisseId")]
    pub register_id: RegisterId,
}

/// `TICKET_ANNULE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCancelled {
    /// Why (the customer left, a test, …).
    #[serde(rename = "motif")]
    pub reason: String,
}

/// `TICKET_CLOS`. Its figures are the ones computed from the ticket's
/// events, checked against what the register sent before it is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClosed {
    /// Total due, tax included.
    #[serde(rename = "montantTotal")]
    pub total: Cents,
    /// VAT over all rates.
    #[serde(rename = "montantTVA")]
    pub vat: Cents,
    /// The receipt number.
    #[serde(rename = "ticketNumber")]
    pub ticket_number: String,
    /// HT, TVA and TTC per rate (a closure adds these up).
    #[serde(rename = "ventilationTva")]
    pub breakdown: VatBreakdown,
    /// Copied from the opening: a training ticket stays out of fiscal totals.
    #[serde(rename = "modeFormation")]
    pub training: bool,
}

impl TicketClosed {
    /// The close of a ticket with these totals (the figures come from the
    /// totals, never from the register's display).
    pub fn from_totals(
        totals: TicketTotals,
        ticket_number: impl Into<String>,
        training: bool,
    ) -> Result<Self, MoneyError> {
        Ok(TicketClosed {
            total: totals.ttc(),
            vat: totals.tva()?,
            ticket_number: ticket_number.into(),
            breakdown: totals.breakdown,
            training,
        })
    }
}
