//! Who and when: the identifiers and the business date an event carries in
//! its metadata.
//!
//! The store id is a field of its own: the seed parsed it out of the
//! register id (`split('_')[0]`), which breaks with the first register
//! named otherwise.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A store (magasin).
    StoreId
);
id_type!(
    /// A cash register (caisse).
    RegisterId
);
id_type!(
    /// A ticket: the id of its stream.
    TicketId
);
id_type!(
    /// A cashier (caissier).
    CashierId
);

/// The metadata the domain reads from an event's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMeta {
    /// The store the register belongs to.
    #[serde(rename = "magasinId")]
    pub store_id: StoreId,
    /// The register that recorded the event.
    #[serde(rename = "caisseId")]
    pub register_id: RegisterId,
    /// The business day the event counts for (passed in, never read from a
    /// clock here).
    #[serde(rename = "dateCommerciale")]
    pub business_date: BusinessDate,
}

/// Why a date was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid business date {given:?}: expected a real calendar day as YYYY-MM-DD (e.g. 2026-11-29)"
)]
pub struct DateError {
    /// The text or figures given.
    pub given: String,
}

/// A calendar day (the business day a sale counts for), proleptic
/// Gregorian, years 1 to 9999. Written `YYYY-MM-DD`.
///
/// ```
/// use rempart_events::ticket::BusinessDate;
/// let d: BusinessDate = "2028-02-29".parse().unwrap();
/// assert_eq!(d.to_string(), "2028-02-29");
/// assert!("2026-02-29".parse::<BusinessDate>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BusinessDate {
    year: u16,
    month: u8,
    day: u8,
}

impl BusinessDate {
    /// The day `year-month-day`, if it exists.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, DateError> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month);
        if !valid {
            return Err(DateError {
                given: format!("{year:04}-{month:02}-{day:02}"),
            });
        }
        Ok(BusinessDate { year, month, day })
    }

    /// The year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The day of the month.
    pub fn day(self) -> u8 {
        self.day
    }
}

/// The number of days in `month` of `year`.
fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

impl std::str::FromStr for BusinessDate {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Self, DateError> {
        let err = || DateError {
            given: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u16, DateError> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        BusinessDate::new(year, month as u8, day as u8).map_err(|_| err())
    }
}

impl TryFrom<String> for BusinessDate {
    type Error = DateError;
    fn try_from(s: String) -> Result<Self, DateError> {
        s.parse()
    }
}

impl From<BusinessDate> for String {
    fn from(d: BusinessDate) -> String {
        d.to_string()
    }
}

impl fmt::Display for BusinessDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}
