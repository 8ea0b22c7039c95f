//! Day, month and year closures (NF 525 "clôtures"), computed from ticket
//! events.
//!
//! Decisions:
//! - A day closure adds up the `TICKET_CLOS` events of the day: per VAT
//!   rate HT, TVA and TTC (the tickets' already-rounded figures: nothing is
//!   rounded again) and the ticket count. Other events carry no fiscal
//!   figure and are skipped.
//! - The perpetual grand total is the running sum of every fiscal TTC since
//!   the register's first sale: a closure carries it from the previous one
//!   (`grand_total = grand_total_before + period TTC`) and never resets.
//! - A month closure is the sum of its day closures, a year closure the sum
//!   of its month closures, so the three levels agree by construction; the
//!   parts must be of the period, in order, each chained to the previous
//!   one's grand total, or the roll-up is refused.
//! - Training-mode tickets are kept in a section of their own
//!   ([`Closure::training`]), marked, and never reach the fiscal totals or
//!   the grand total.

use serde::{Deserialize, Serialize};

use crate::money::{Cents, MoneyError, VatBreakdown};
use crate::ticket::{BusinessDate, TicketEvent, TicketMeta};

/// The period a closure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "periode")]
pub enum Period {
    /// One business day.
    #[serde(rename = "JOUR")]
    Day {
        /// The day.
        date: BusinessDate,
    },
    /// One calendar month.
    #[serde(rename = "MOIS")]
    Month {
        /// The year.
        year: u16,
        /// The month, 1 to 12.
        month: u8,
    },
    /// One year (or fiscal year, named by the year it ends in).
    #[serde(rename = "ANNEE")]
    Year {
        /// The year.
        year: u16,
    },
}

impl Period {
    /// True if `part` is a period directly inside `self` (a day of this
    /// month, a month of this year).
    fn contains(&self, part: &Period) -> bool {
        match (self, part) {
            (Period::Month { year, month }, Period::Day { date }) => {
                date.year() == *year && date.month() == *month
            }
            (Period::Year { year }, Period::Month { year: y, .. }) => y == year,
            _ => false,
        }
    }
}

/// Figures of a period: per rate, and the number of tickets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeriodTotals {
    /// HT, TVA, TTC per VAT rate.
    #[serde(rename = "ventilationTva")]
    pub breakdown: VatBreakdown,
    /// How many closed tickets.
    #[serde(rename = "nombreTickets")]
    pub ticket_count: u64,
}

impl PeriodTotals {
    fn add(&mut self, other: &PeriodTotals) -> Result<(), ClosureError> {
        self.breakdown.add_all(&other.breakdown)?;
        self.ticket_count =
            self.ticket_count
                .checked_add(other.ticket_count)
                .ok_or(MoneyError::Overflow {
                    what: "a ticket count",
                })?;
        Ok(())
    }

    /// The TTC over all rates.
    pub fn ttc(&self) -> Result<Cents, MoneyError> {
        Ok(self.breakdown.total()?.ttc)
    }
}

/// A closure: a period's totals and the perpetual grand total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The period.
    #[serde(flatten)]
    pub period: Period,
    /// Fiscal figures (training excluded).
    #[serde(rename = "ventes")]
    pub sales: PeriodTotals,
    /// Training-mode figures, marked and kept apart.
    #[serde(rename = "formation")]
    pub training: PeriodTotals,
    /// The perpetual grand total before the period.
    #[serde(rename = "grandTotalAvant")]
    pub grand_total_before: Cents,
    /// The perpetual grand total at the end of the period.
    #[serde(rename = "grandTotalPerpetuel")]
    pub grand_total: Cents,
}

/// Why a closure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClosureError {
    /// A ticket closed on another day than the one being closed.
    #[error(
        "ticket {ticket_number} closed on {date} cannot go into the closure of {period:?}: pass only the period's events"
    )]
    OutOfPeriod {
        /// The ticket.
        ticket_number: String,
        /// Its business date.
        date: BusinessDate,
        /// The period being closed.
        period: Period,
    },
    /// A part that is not inside the period (a day of another month, …).
    #[error("{part:?} is not part of {period:?}")]
    NotAPart {
        /// The part.
        part: Period,
        /// The period.
        period: Period,
    },
    /// Parts out of order or twice.
    #[error("{part:?} is out of order or given twice: pass the parts once each, in order")]
    Unordered {
        /// The part out of place.
        part: Period,
    },
    /// A part whose grand total does not follow from the previous one.
    #[error(
        "{part:?} starts from a grand total of {found} € but the previous closure ended at {expected} €: a closure is missing or altered"
    )]
    Unchained {
        /// The part.
        part: Period,
        /// The grand total it should start from.
        expected: Cents,
        /// The one it starts from.
        found: Cents,
    },
    /// The figures overflow.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Close the day `date`: add up its closed tickets, carrying the perpetual
/// grand total on from `grand_total_before`.
pub fn close_day<'a>(
    date: BusinessDate,
    grand_total_before: Cents,
    events: impl IntoIterator<Item = (&'a TicketMeta, &'a TicketEvent)>,
) -> Result<Closure, ClosureError> {
    let period = Period::Day { date };
    let (mut sales, mut training) = (PeriodTotals::default(), PeriodTotals::default());
    for (meta, event) in events {
        let TicketEvent::Closed(closed) = event else {
            continue;
        };
        if meta.business_date != date {
            return Err(ClosureError::OutOfPeriod {
                ticket_number: closed.ticket_number.clone(),
                date: meta.business_date,
                period,
            });
        }
        let section = if closed.training {
            &mut training
        } else {
            &mut sales
        };
        section.add(&PeriodTotals {
            breakdown: closed.breakdown.clone(),
            ticket_count: 1,
        })?;
    }
    Ok(Closure {
        period,
        grand_total: grand_total_before.checked_add(sales.ttc()?)?,
        sales,
        training,
        grand_total_before,
    })
}

/// Close a month from its day closures (in order, chained).
pub fn close_month(
    year: u16,
    month: u8,
    grand_total_before: Cents,
    days: &[Closure],
) -> Result<Closure, ClosureError> {
    roll_up(Period::Month { year, month }, grand_total_before, days)
}

/// Close a year from its month closures (in order, chained).
pub fn close_year(
    year: u16,
    grand_total_before: Cents,
    months: &[Closure],
) -> Result<Closure, ClosureError> {
    roll_up(Period::Year { year }, grand_total_before, months)
}

fn roll_up(
    period: Period,
    grand_total_before: Cents,
    parts: &[Closure],
) -> Result<Closure, ClosureError> {
    let (mut sales, mut training) = (PeriodTotals::default(), PeriodTotals::default());
    let mut grand_total = grand_total_before;
    let mut previous: Option<Period> = None;
    for part in parts {
        if !period.contains(&part.period) {
            return Err(ClosureError::NotAPart {
                part: part.period,
                period,
            });
        }
        if previous.is_some_and(|p| p >= part.period) {
            return Err(ClosureError::Unordered { part: part.period });
        }
        if part.grand_total_before != grand_total {
            return Err(ClosureError::Unchained {
                part: part.period,
                expected: grand_total,
                found: part.grand_total_before,
            });
        }
        sales.add(&part.sales)?;
        training.add(&part.training)?;
        grand_total = part.grand_total;
        previous = Some(part.period);
    }
    let expected = grand_total_before.checked_add(sales.ttc()?)?;
    if expected != grand_total {
        // A part whose own grand total does not match its figures.
        return Err(ClosureError::Unchained {
            part: previous.unwrap_or(period),
            expected,
            found: grand_total,
        });
    }
    Ok(Closure {
        period,
        sales,
        training,
        grand_total_before,
        grand_total,
    })
}
