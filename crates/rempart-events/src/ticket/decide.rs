//! Command validation: `decide(&state, command) -> Result<events, Refusal>`.
//!
//! A pure function of the ticket's state: no clock, no I/O. Each accepted
//! command yields the events to record; a refused one says what is wrong
//! and what to do instead. Totals are always computed from the events: a
//! close carries the register's figures only so they can be checked.

use super::event::{
    ArticleAdded, ArticleRemoved, DiscountApplied, PaymentMode, PaymentReceived, TicketCancelled,
    TicketClosed, TicketEvent, TicketOpened, TicketResumed, TicketSuspended,
};
use super::meta::{CashierId, RegisterId, TicketId};
use super::state::{Ticket, TicketStatus, apply};
use crate::money::{Cents, Discount, MoneyError};

/// What a register asks of a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketCommand {
    /// Open a new ticket.
    Open {
        /// Its id.
        ticket_id: TicketId,
        /// The cashier.
        cashier_id: CashierId,
        /// The register.
        register_id: RegisterId,
        /// Training mode.
        training: bool,
    },
    /// Scan an article.
    AddArticle(ArticleAdded),
    /// Take some of an article off.
    RemoveArticle(ArticleRemoved),
    /// Grant a discount on the whole ticket.
    ApplyDiscount {
        /// The discount.
        discount: Discount,
        /// Why.
        reason: String,
    },
    /// Take a payment.
    ReceivePayment {
        /// How.
        mode: PaymentMode,
        /// How much.
        amount: Cents,
    },
    /// Park the ticket.
    Suspend {
        /// The register parking it.
        register_id: RegisterId,
    },
    /// Take up a parked ticket.
    Resume {
        /// The register taking it up.
        register_id: RegisterId,
    },
    /// Abandon the ticket before payment.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Close the ticket, with the figures the register shows.
    Close {
        /// The TTC total the register computed.
        expected_total: Cents,
        /// The VAT the register computed.
        expected_vat: Cents,
        /// The receipt number.
        ticket_number: String,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Open on a ticket that already exists.
    #[error("ticket is already opened: open a new ticket with a new id")]
    AlreadyOpened,
    /// Anything but open before the ticket is opened.
    #[error("ticket is not opened: open it first (TICKET_OUVERT)")]
    NotOpened,
    /// Anything on a closed ticket.
    #[error("ticket is closed: a correction is a new ticket, the closed one stays as it is")]
    Closed,
    /// Anything on a cancelled ticket.
    #[error("ticket is cancelled: open a new ticket")]
    Cancelled,
    /// A cancel once something is paid.
    #[error("cannot cancel a ticket with {paid} € paid: refund the payments first, or close it")]
    CancelAfterPayment {
        /// What is paid.
        paid: Cents,
    },
    /// A command from a register that does not hold the ticket.
    #[error(
        "ticket is held by register {holder}, not {register}: suspend it there and resume it here"
    )]
    HeldElsewhere {
        /// The register that holds it.
        holder: RegisterId,
        /// The register the command came from.
        register: RegisterId,
    },
    /// Anything but resume on a parked ticket.
    #[error("ticket is suspended: resume it on a register first")]
    Suspended,
    /// Resume of a ticket that is not parked.
    #[error("ticket is not suspended: only a suspended ticket can be resumed")]
    NotSuspended,
    /// An article with quantity 0.
    #[error("quantity must be at least 1 (to take an article off, remove it)")]
    ZeroQuantity,
    /// An article with a negative price.
    #[error("unit price {price} € is negative: a refund is an article removal or a refund ticket")]
    NegativePrice {
        /// The price given.
        price: Cents,
    },
    /// A removal of more than is on the ticket.
    #[error("cannot remove {asked} × {code_ean}: the ticket has {on_ticket}")]
    ArticleNotOnTicket {
        /// The barcode.
        code_ean: String,
        /// How many are on the ticket.
        on_ticket: u32,
        /// How many the command removes.
        asked: u32,
    },
    /// A discount of zero or less.
    #[error("a discount must be above zero")]
    EmptyDiscount,
    /// A percentage above 100 %.
    #[error("discount of {basis_points} basis points is above 100 % (10 % is 1000)")]
    PercentOutOfRange {
        /// What was given.
        basis_points: u32,
    },
    /// An amount discount above what is due.
    #[error("discount of {discount} € is above the {due} € due")]
    DiscountAboveDue {
        /// The discount.
        discount: Cents,
        /// What is due.
        due: Cents,
    },
    /// A change that would make the total lower than what was paid.
    #[error(
        "the total would fall to {total} € while {paid} € is already paid: refund the payment first"
    )]
    BelowPaid {
        /// The new total.
        total: Cents,
        /// What is paid.
        paid: Cents,
    },
    /// A payment of zero or less.
    #[error("payment of {amount} € must be above zero")]
    PaymentNotPositive {
        /// What was given.
        amount: Cents,
    },
    /// A payment above what is left to pay.
    #[error(
        "payment of {amount} € is above the {due} € left to pay (keep only the amount due; change is not part of it)"
    )]
    PaymentAboveDue {
        /// The payment.
        amount: Cents,
        /// What is left to pay.
        due: Cents,
    },
    /// A close before the ticket is paid.
    #[error("ticket is not fully paid: {paid} € paid of {total} €")]
    NotFullyPaid {
        /// What is paid.
        paid: Cents,
        /// The total.
        total: Cents,
    },
    /// A close whose total differs from the one computed from the events.
    #[error("close says a total of {sent} € but the ticket's events add up to {computed} €")]
    TotalMismatch {
        /// What the register sent.
        sent: Cents,
        /// What the events give.
        computed: Cents,
    },
    /// A close whose VAT differs from the one computed from the events.
    #[error("close says {sent} € of VAT but the ticket's events give {computed} €")]
    VatMismatch {
        /// What the register sent.
        sent: Cents,
        /// What the events give.
        computed: Cents,
    },
    /// A close without a receipt number.
    #[error("a close needs a receipt number")]
    NoTicketNumber,
    /// The figures overflow.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The events `command` makes on `state`, or why it is refused.
///
/// ```
/// use rempart_events::money::{Cents, VatRate};
/// use rempart_events::ticket::{decide, ArticleAdded, Refusal, Ticket, TicketCommand};
/// let state = Ticket::new();
/// let add = TicketCommand::AddArticle(ArticleAdded {
///     code_ean: "3017620422003".into(),
///     label: "Pâte à tartiner".into(),
///     quantity: 1,
///     unit_price: Cents::new(4_99),
///     vat_rate: VatRate::REDUCED,
/// });
/// assert_eq!(decide(&state, &add), Err(Refusal::NotOpened));
/// ```
pub fn decide(state: &Ticket, command: &TicketCommand) -> Result<Vec<TicketEvent>, Refusal> {
    if let TicketCommand::Open {
        ticket_id,
        cashier_id,
        register_id,
        training,
    } = command
    {
        if state.status != TicketStatus::NotOpened {
            return Err(Refusal::AlreadyOpened);
        }
        return Ok(vec![TicketEvent::Opened(TicketOpened {
            ticket_id: ticket_id.clone(),
            cashier_id: cashier_id.clone(),
            register_id: register_id.clone(),
            training: *training,
        })]);
    }
    match state.status {
        TicketStatus::NotOpened => return Err(Refusal::NotOpened),
        TicketStatus::Closed => return Err(Refusal::Closed),
        TicketStatus::Cancelled => return Err(Refusal::Cancelled),
        TicketStatus::Suspended if !matches!(command, TicketCommand::Resume { .. }) => {
            return Err(Refusal::Suspended);
        }
        TicketStatus::Open if matches!(command, TicketCommand::Resume { .. }) => {
            return Err(Refusal::NotSuspended);
        }
        _ => {}
    }
    let event = match command {
        TicketCommand::Open { .. } => return Err(Refusal::AlreadyOpened),
        TicketCommand::AddArticle(a) => {
            if a.quantity == 0 {
                return Err(Refusal::ZeroQuantity);
            }
            if a.unit_price < Cents::ZERO {
                return Err(Refusal::NegativePrice {
                    price: a.unit_price,
                });
            }
            let event = TicketEvent::ArticleAdded(a.clone());
            // Refuse now a ticket whose figures would overflow later.
            apply(state.clone(), &event).totals()?;
            event
        }
        TicketCommand::RemoveArticle(r) => {
            let on_ticket = state.quantity_of(&r.code_ean);
            if r.quantity == 0 {
                return Err(Refusal::ZeroQuantity);
            }
            if r.quantity > on_ticket {
                return Err(Refusal::ArticleNotOnTicket {
                    code_ean: r.code_ean.clone(),
                    on_ticket,
                    asked: r.quantity,
                });
            }
            let event = TicketEvent::ArticleRemoved(r.clone());
            not_below_paid(state, &event)?;
            event
        }
        TicketCommand::ApplyDiscount { discount, reason } => {
            let due = state.totals()?.ttc();
            match *discount {
                Discount::Percent { basis_points } if basis_points > 10_000 => {
                    return Err(Refusal::PercentOutOfRange { basis_points });
                }
                Discount::Percent { basis_points: 0 } => return Err(Refusal::EmptyDiscount),
                Discount::Amount { cents } if cents <= Cents::ZERO => {
                    return Err(Refusal::EmptyDiscount);
                }
                Discount::Amount { cents } if cents > due => {
                    return Err(Refusal::DiscountAboveDue {
                        discount: cents,
                        due,
                    });
                }
                _ => {}
            }
            let event = TicketEvent::DiscountApplied(DiscountApplied {
                discount: *discount,
                reason: reason.clone(),
            });
            not_below_paid(state, &event)?;
            event
        }
        TicketCommand::ReceivePayment { mode, amount } => {
            if *amount <= Cents::ZERO {
                return Err(Refusal::PaymentNotPositive { amount: *amount });
            }
            let due = state.totals()?.ttc().checked_sub(state.paid()?)?;
            if *amount > due {
                return Err(Refusal::PaymentAboveDue {
                    amount: *amount,
                    due,
                });
            }
            TicketEvent::PaymentReceived(PaymentReceived {
                mode: *mode,
                amount: *amount,
            })
        }
        TicketCommand::Suspend { register_id } => TicketEvent::Suspended(TicketSuspended {
            register_id: register_id.clone(),
        }),
        TicketCommand::Resume { register_id } => TicketEvent::Resumed(TicketResumed {
            register_id: register_id.clone(),
        }),
        TicketCommand::Cancel { reason } => {
            let paid = state.paid()?;
            if paid != Cents::ZERO {
                return Err(Refusal::CancelAfterPayment { paid });
            }
            TicketEvent::Cancelled(TicketCancelled {
                reason: reason.clone(),
            })
        }
        TicketCommand::Close {
            expected_total,
            expected_vat,
            ticket_number,
        } => close(state, *expected_total, *expected_vat, ticket_number)?,
    };
    Ok(vec![event])
}

/// [`decide`] for a command made on `register`: an open ticket takes
/// commands only from the register that holds it (opened or last resumed
/// it), so two registers never ring up the same open ticket at once; a
/// suspended one can be resumed anywhere.
pub fn decide_at(
    state: &Ticket,
    register: &RegisterId,
    command: &TicketCommand,
) -> Result<Vec<TicketEvent>, Refusal> {
    if state.status == TicketStatus::Open
        && let Some(holder) = &state.register
        && holder != register
    {
        return Err(Refusal::HeldElsewhere {
            holder: holder.clone(),
            register: register.clone(),
        });
    }
    decide(state, command)
}

fn close(
    state: &Ticket,
    expected_total: Cents,
    expected_vat: Cents,
    ticket_number: &str,
) -> Result<TicketEvent, Refusal> {
    if ticket_number.trim().is_empty() {
        return Err(Refusal::NoTicketNumber);
    }
    let totals = state.totals()?;
    let (total, vat, paid) = (totals.ttc(), totals.tva()?, state.paid()?);
    if expected_total != total {
        return Err(Refusal::TotalMismatch {
            sent: expected_total,
            computed: total,
        });
    }
    if expected_vat != vat {
        return Err(Refusal::VatMismatch {
            sent: expected_vat,
            computed: vat,
        });
    }
    if paid != total {
        return Err(Refusal::NotFullyPaid { paid, total });
    }
    Ok(TicketEvent::Closed(TicketClosed::from_totals(
        totals,
        ticket_number,
        state.training,
    )?))
}

/// Refuse a change that leaves the total under what is already paid: the
/// payments stay facts, so the customer would be owed money silently.
fn not_below_paid(state: &Ticket, event: &TicketEvent) -> Result<(), Refusal> {
    let total = apply(state.clone(), event).totals()?.ttc();
    let paid = state.paid()?;
    if total < paid {
        return Err(Refusal::BelowPaid { total, paid });
    }
    Ok(())
}
