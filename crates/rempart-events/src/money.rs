//! Money in integer cents, French VAT rates, and the one rounding rule.
//!
//! Decisions (the seed used floats and `total * valeur / 100`):
//! - An amount is an `i64` count of cents ([`Cents`]). Every operation is
//!   checked: an overflow is a [`MoneyError`], never a wrap or a panic.
//! - A VAT rate is an integer number of basis points ([`VatRate`]: 20 % is
//!   2000), so every computation is exact integer arithmetic (`i128` inside).
//! - Prices are VAT-inclusive (TTC): French retail shows TTC prices, so a
//!   register sums TTC and extracts the VAT from it.
//! - **Rounding rule**: half away from zero, to the cent, applied once per
//!   VAT rate on a ticket's TTC total for that rate, never per line:
//!   `TVA = round(TTC × t / (1 + t))`, `HT = TTC − TVA`. A receipt states,
//!   per rate, the HT total and its tax, so rounding there gives per-rate
//!   figures that add up exactly (HT + TVA = TTC) and line-level rounding
//!   errors do not pile up on a long ticket. Half away from zero (rather
//!   than half-even) is the usual commercial rounding, and it makes a
//!   refund the exact mirror of its sale.
//! - Closures add up the tickets' per-rate figures; they never round again,
//!   so a day's totals equal the sum of its tickets to the cent.
//! - A percentage discount is in basis points and rounded with the same rule;
//!   a ticket-level discount is shared across VAT rates pro rata of each
//!   rate's TTC, by largest remainder, so the shares add up to the discount.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in euro cents (may be negative: a refund).
///
/// ```
/// use rempart_events::money::Cents;
/// let price = Cents::new(1_99);
/// assert_eq!(price.checked_mul(3).unwrap(), Cents::new(5_97));
/// assert_eq!(price.to_string(), "1.99");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(i64);

/// Why a money computation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The result does not fit in an `i64` number of cents.
    #[error(
        "amount overflow while computing {what}: the figures exceed ±92 233 720 368 547 758.07 €"
    )]
    Overflow {
        /// The computation that overflowed.
        what: &'static str,
    },
    /// A VAT rate above 100 % (10 000 basis points).
    #[error(
        "VAT rate of {basis_points} basis points is above 100 %: give it in basis points (20 % is 2000)"
    )]
    RateOutOfRange {
        /// The rate given.
        basis_points: u32,
    },
    /// A percentage discount above 100 %.
    #[error(
        "discount of {basis_points} basis points is above 100 %: give it in basis points (10 % is 1000)"
    )]
    PercentOutOfRange {
        /// The percentage given.
        basis_points: u32,
    },
    /// The same VAT rate twice, or rates out of order, in a breakdown.
    #[error(
        "VAT breakdown is not canonical: rates must be unique and ascending (rate {basis_points} bp out of place)"
    )]
    UnsortedBreakdown {
        /// The rate out of place.
        basis_points: u32,
    },
    /// A breakdown line whose HT + TVA is not its TTC.
    #[error(
        "VAT breakdown line at {basis_points} bp does not add up: HT {ht} + TVA {tva} ≠ TTC {ttc}"
    )]
    Unbalanced {
        /// The rate of the line.
        basis_points: u32,
        /// Its HT.
        ht: Cents,
        /// Its TVA.
        tva: Cents,
        /// Its TTC.
        ttc: Cents,
    },
}

fn overflow(what: &'static str) -> MoneyError {
    MoneyError::Overflow { what }
}

impl Cents {
    /// Zero euro.
    pub const ZERO: Cents = Cents(0);

    /// `cents` cents.
    pub const fn new(cents: i64) -> Self {
        Cents(cents)
    }

    /// The number of cents.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, or an overflow error.
    pub fn checked_add(self, other: Cents) -> Result<Cents, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Cents)
            .ok_or_else(|| overflow("a sum"))
    }

    /// `self − other`, or an overflow error.
    pub fn checked_sub(self, other: Cents) -> Result<Cents, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Cents)
            .ok_or_else(|| overflow("a difference"))
    }

    /// `self × quantity`, or an overflow error.
    pub fn checked_mul(self, quantity: i64) -> Result<Cents, MoneyError> {
        self.0
            .checked_mul(quantity)
            .map(Cents)
            .ok_or_else(|| overflow("a line amount (quantity × unit price)"))
    }

    /// `self × basis_points / 10 000`, rounded half away from zero: a
    /// percentage of an amount.
    ///
    /// ```
    /// use rempart_events::money::Cents;
    /// // 12.5 % of 0.99 € is 12.375 cents: 12 cents.
    /// assert_eq!(Cents::new(99).percent(1250).unwrap(), Cents::new(12));
    /// // 10 % of 0.05 € is half a cent: rounded away from zero.
    /// assert_eq!(Cents::new(5).percent(1000).unwrap(), Cents::new(1));
    /// assert_eq!(Cents::new(-5).percent(1000).unwrap(), Cents::new(-1));
    /// ```
    pub fn percent(self, basis_points: u32) -> Result<Cents, MoneyError> {
        let n = i128::from(self.0) * i128::from(basis_points);
        narrow(div_round_half_away(n, 10_000), "a percentage")
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

fn narrow(n: i128, what: &'static str) -> Result<Cents, MoneyError> {
    i64::try_from(n).map(Cents).map_err(|_| overflow(what))
}

/// `n / d` rounded to the nearest integer, a half going away from zero.
/// `d` must be positive.
pub(crate) fn div_round_half_away(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0);
    let q = n / d;
    let r = n % d;
    // |r| ≥ d/2, computed without overflow for the i128 ranges we use.
    if r.abs() * 2 >= d { q + n.signum() } else { q }
}

/// A VAT rate in basis points (hundredths of a percent): 20 % is 2000.
///
/// ```
/// use rempart_events::money::VatRate;
/// assert_eq!(VatRate::REDUCED.basis_points(), 550);
/// assert_eq!(VatRate::from_basis_points(850).unwrap().to_string(), "8.50 %");
/// assert!(VatRate::from_basis_points(10_001).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct VatRate(u32);

impl VatRate {
    /// 20 %, the normal rate.
    pub const NORMAL: VatRate = VatRate(2000);
    /// 10 %, the intermediate rate (restaurant, some services).
    pub const INTERMEDIATE: VatRate = VatRate(1000);
    /// 5.5 %, the reduced rate (most food).
    pub const REDUCED: VatRate = VatRate(550);
    /// 2.1 %, the particular rate (medicines, press).
    pub const SUPER_REDUCED: VatRate = VatRate(210);
    /// The four rates of metropolitan France.
    pub const FRENCH: [VatRate; 4] = [
        VatRate::SUPER_REDUCED,
        VatRate::REDUCED,
        VatRate::INTERMEDIATE,
        VatRate::NORMAL,
    ];

    /// A rate of `basis_points` (0 to 10 000). Other rates than the four
    /// metropolitan ones exist (Corsica, overseas departments), so any is
    /// accepted in that range.
    pub fn from_basis_points(basis_points: u32) -> Result<Self, MoneyError> {
        if basis_points > 10_000 {
            return Err(MoneyError::RateOutOfRange { basis_points });
        }
        Ok(VatRate(basis_points))
    }

    /// The rate in basis points.
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// The VAT contained in a TTC amount at this rate, rounded half away
    /// from zero: `ttc × t / (1 + t)`.
    ///
    /// ```
    /// use rempart_events::money::{Cents, VatRate};
    /// // 1.00 € TTC at 5.5 %: 5.2132… cents of VAT.
    /// assert_eq!(VatRate::REDUCED.vat_in(Cents::new(100)).unwrap(), Cents::new(5));
    /// ```
    pub fn vat_in(self, ttc: Cents) -> Result<Cents, MoneyError> {
        let rate = i128::from(self.0);
        narrow(
            div_round_half_away(i128::from(ttc.get()) * rate, 10_000 + rate),
            "a VAT amount",
        )
    }
}

impl TryFrom<u32> for VatRate {
    type Error = MoneyError;
    fn try_from(basis_points: u32) -> Result<Self, MoneyError> {
        VatRate::from_basis_points(basis_points)
    }
}

impl From<VatRate> for u32 {
    fn from(rate: VatRate) -> u32 {
        rate.0
    }
}

impl fmt::Display for VatRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02} %", self.0 / 100, self.0 % 100)
    }
}

/// One VAT rate's figures: HT + TVA = TTC, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateTotal {
    /// The rate.
    #[serde(rename = "taux")]
    pub rate: VatRate,
    /// Before tax.
    pub ht: Cents,
    /// The tax.
    pub tva: Cents,
    /// Tax included.
    pub ttc: Cents,
}

impl RateTotal {
    /// Split a TTC amount at `rate` with the rounding rule.
    pub fn from_ttc(rate: VatRate, ttc: Cents) -> Result<Self, MoneyError> {
        let tva = rate.vat_in(ttc)?;
        Ok(RateTotal {
            rate,
            ht: ttc.checked_sub(tva)?,
            tva,
            ttc,
        })
    }

    fn check(&self) -> Result<(), MoneyError> {
        if self.ht.checked_add(self.tva)? != self.ttc {
            return Err(MoneyError::Unbalanced {
                basis_points: self.rate.0,
                ht: self.ht,
                tva: self.tva,
                ttc: self.ttc,
            });
        }
        Ok(())
    }
}

/// Figures per VAT rate: one [`RateTotal`] per rate, ascending by rate.
///
/// The order is canonical (and checked when read back), so the same totals
/// always serialize to the same bytes: they are hash-chained and signed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<RateTotal>", into = "Vec<RateTotal>")]
pub struct VatBreakdown {
    lines: Vec<RateTotal>,
}

impl VatBreakdown {
    /// No figures.
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-rate lines, ascending by rate.
    pub fn lines(&self) -> &[RateTotal] {
        &self.lines
    }

    /// The line of `rate`, if any.
    pub fn get(&self, rate: VatRate) -> Option<&RateTotal> {
        self.lines.iter().find(|line| line.rate == rate)
    }

    /// Add a line's figures to its rate (a sum of already-rounded figures:
    /// nothing is rounded again).
    pub fn add(&mut self, line: &RateTotal) -> Result<(), MoneyError> {
        match self.lines.binary_search_by_key(&line.rate, |l| l.rate) {
            Ok(i) => {
                let l = &mut self.lines[i];
                let sum = RateTotal {
                    rate: l.rate,
                    ht: l.ht.checked_add(line.ht)?,
                    tva: l.tva.checked_add(line.tva)?,
                    ttc: l.ttc.checked_add(line.ttc)?,
                };
                *l = sum;
            }
            Err(i) => self.lines.insert(i, *line),
        }
        Ok(())
    }

    /// Add every line of `other`.
    pub fn add_all(&mut self, other: &VatBreakdown) -> Result<(), MoneyError> {
        other.lines.iter().try_for_each(|line| self.add(line))
    }

    /// The total over all rates.
    pub fn total(&self) -> Result<RateTotalSum, MoneyError> {
        let mut sum = RateTotalSum::default();
        for line in &self.lines {
            sum.ht = sum.ht.checked_add(line.ht)?;
            sum.tva = sum.tva.checked_add(line.tva)?;
            sum.ttc = sum.ttc.checked_add(line.ttc)?;
        }
        Ok(sum)
    }
}

impl TryFrom<Vec<RateTotal>> for VatBreakdown {
    type Error = MoneyError;
    fn try_from(lines: Vec<RateTotal>) -> Result<Self, MoneyError> {
        for (i, line) in lines.iter().enumerate() {
            line.check()?;
            if i > 0 && lines[i - 1].rate >= line.rate {
                return Err(MoneyError::UnsortedBreakdown {
                    basis_points: line.rate.0,
                });
            }
        }
        Ok(VatBreakdown { lines })
    }
}

impl From<VatBreakdown> for Vec<RateTotal> {
    fn from(b: VatBreakdown) -> Self {
        b.lines
    }
}

/// HT, TVA and TTC over all rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateTotalSum {
    /// Before tax.
    pub ht: Cents,
    /// The tax.
    pub tva: Cents,
    /// Tax included.
    pub ttc: Cents,
}

/// A ticket-level discount, as the cashier grants it.
///
/// On the wire the seed's ambiguous `valeur` is gone: a percentage is in
/// basis points (`pointsDeBase`, 10 % is 1000), an amount in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Discount {
    /// A percentage of what is due when it is applied.
    #[serde(rename = "POURCENTAGE")]
    Percent {
        /// The percentage, in basis points (0 to 10 000).
        #[serde(rename = "pointsDeBase")]
        basis_points: u32,
    },
    /// A fixed amount off.
    #[serde(rename = "MONTANT")]
    Amount {
        /// The amount, in cents.
        #[serde(rename = "centimes")]
        cents: Cents,
    },
}

impl Discount {
    /// What this discount takes off `due` (the running total after the
    /// earlier discounts). A fixed amount never takes the total below zero:
    /// if articles were removed since, it shrinks to what is left.
    pub fn amount_on(&self, due: Cents) -> Result<Cents, MoneyError> {
        match *self {
            Discount::Percent { basis_points } => {
                if basis_points > 10_000 {
                    return Err(MoneyError::PercentOutOfRange { basis_points });
                }
                due.max(Cents::ZERO).percent(basis_points)
            }
            Discount::Amount { cents } => Ok(cents.max(Cents::ZERO).min(due.max(Cents::ZERO))),
        }
    }
}

/// A ticket's totals, computed from its lines and discounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TicketTotals {
    /// The sum of the lines, before discounts (TTC).
    pub gross: Cents,
    /// The sum of the discounts (TTC).
    pub discount: Cents,
    /// What is due, per rate, after discounts.
    pub breakdown: VatBreakdown,
}

impl TicketTotals {
    /// What is due, TTC (`gross − discount`).
    pub fn ttc(&self) -> Cents {
        // gross ≥ discount ≥ 0 when built by `ticket_totals`; saturating
        // keeps hand-built figures from panicking.
        Cents(self.gross.0.saturating_sub(self.discount.0))
    }

    /// The VAT over all rates.
    pub fn tva(&self) -> Result<Cents, MoneyError> {
        Ok(self.breakdown.total()?.tva)
    }
}

/// The totals of a ticket whose lines are `(rate, line TTC)` and whose
/// discounts apply in order, each on what is due after the previous ones.
///
/// ```
/// use rempart_events::money::{ticket_totals, Cents, Discount, VatRate};
/// let lines = [(VatRate::NORMAL, Cents::new(10_00)), (VatRate::REDUCED, Cents::new(3_00))];
/// let t = ticket_totals(&lines, &[Discount::Percent { basis_points: 1000 }]).unwrap();
/// assert_eq!(t.discount, Cents::new(1_30));
/// assert_eq!(t.ttc(), Cents::new(11_70));
/// // The 1.30 € is shared 1.00 € / 0.30 €: 9.00 € at 20 %, 2.70 € at 5.5 %.
/// assert_eq!(t.breakdown.get(VatRate::NORMAL).unwrap().ttc, Cents::new(9_00));
/// assert_eq!(t.breakdown.get(VatRate::NORMAL).unwrap().tva, Cents::new(1_50));
/// ```
pub fn ticket_totals(
    lines: &[(VatRate, Cents)],
    discounts: &[Discount],
) -> Result<TicketTotals, MoneyError> {
    let mut per_rate: Vec<(VatRate, Cents)> = Vec::new();
    for &(rate, amount) in lines {
        match per_rate.binary_search_by_key(&rate, |(r, _)| *r) {
            Ok(i) => per_rate[i].1 = per_rate[i].1.checked_add(amount)?,
            Err(i) => per_rate.insert(i, (rate, amount)),
        }
    }
    let mut gross = Cents::ZERO;
    for (_, amount) in &per_rate {
        gross = gross.checked_add(*amount)?;
    }
    let mut discount = Cents::ZERO;
    for d in discounts {
        discount = discount.checked_add(d.amount_on(gross.checked_sub(discount)?)?)?;
    }
    // A discount is at most the positive gross, so `apportion` can always
    // place it on the rates with a positive total.
    let shares = apportion(discount, &per_rate);
    let mut breakdown = VatBreakdown::new();
    for ((rate, amount), share) in per_rate.iter().zip(shares) {
        breakdown.add(&RateTotal::from_ttc(*rate, amount.checked_sub(share)?)?)?;
    }
    Ok(TicketTotals {
        gross,
        discount,
        breakdown,
    })
}

/// Share `total` across `parts` pro rata of their amounts (a negative
/// part, a rate with more taken back than sold, gets no share): each part
/// gets the floor of its exact share, then the cents left over go one each
/// to the largest remainders (ties: the higher rate first, since parts are
/// ascending by rate). The shares add up to `total` exactly as long as
/// `total` is at most the sum of the positive parts, which
/// [`Discount::amount_on`] guarantees.
fn apportion(total: Cents, parts: &[(VatRate, Cents)]) -> Vec<Cents> {
    let weight = |a: &Cents| i128::from(a.get().max(0));
    let whole: i128 = parts.iter().map(|(_, a)| weight(a)).sum();
    if total.get() <= 0 || whole == 0 {
        return vec![Cents::ZERO; parts.len()];
    }
    let total = i128::from(total.get()).min(whole);
    let mut shares: Vec<(i128, i128)> = parts
        .iter()
        .map(|(_, a)| {
            let exact = total * weight(a);
            (exact / whole, exact % whole)
        })
        .collect();
    let given: i128 = shares.iter().map(|(q, _)| q).sum();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1).then(b.cmp(&a)));
    for &i in order
        .iter()
        .take(usize::try_from(total - given).unwrap_or(0))
    {
        shares[i].0 += 1;
    }
    // Each share is at most its part (total ≤ whole), so it fits in an i64.
    shares
        .into_iter()
        .map(|(q, _)| Cents(i64::try_from(q).unwrap_or(i64::MAX)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(div_round_half_away(5, 10), 1);
        assert_eq!(div_round_half_away(-5, 10), -1);
        assert_eq!(div_round_half_away(4, 10), 0);
        assert_eq!(div_round_half_away(-4, 10), 0);
        assert_eq!(div_round_half_away(15, 10), 2);
        assert_eq!(div_round_half_away(25, 10), 3);
    }

    #[test]
    fn apportion_gives_leftover_cents_to_largest_remainders() {
        let parts = [
            (VatRate::REDUCED, Cents(1)),
            (VatRate::INTERMEDIATE, Cents(1)),
            (VatRate::NORMAL, Cents(1)),
        ];
        // 2 cents over three equal parts: the two higher rates get one.
        assert_eq!(
            apportion(Cents(2), &parts),
            vec![Cents(0), Cents(1), Cents(1)]
        );
    }
}
