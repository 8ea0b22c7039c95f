//! Calendar arithmetic for closures and archives: period labels, their
//! bounds in ms since the Unix epoch (UTC), and today's date from a time.
//! Pure: the time is always passed in.

use crate::closure::Period;
use crate::ticket::BusinessDate;

/// Why a period label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid period {given:?}: expected a day YYYY-MM-DD, a month YYYY-MM or a year YYYY (e.g. 2026-11)"
)]
pub struct PeriodError {
    /// What was given.
    pub given: String,
}

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian; negative before).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Years start in March, so the leap day ends the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

const DAY_MS: i64 = 86_400_000;

/// The UTC date at `ms` since the Unix epoch (clamped to years 1..=9999).
pub fn date_at(ms: i64) -> BusinessDate {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    BusinessDate::new(y.clamp(1, 9999) as u16, m as u8, d as u8)
        .unwrap_or_else(|_| BusinessDate::new(1970, 1, 1).unwrap_or_else(|_| unreachable!()))
}

fn day_number(date: BusinessDate) -> i64 {
    days_from_civil(
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    )
}

/// The first and the last day of `period`.
pub fn days_of(period: Period) -> (BusinessDate, BusinessDate) {
    let first = |y: u16, m: u8| days_from_civil(i64::from(y), i64::from(m), 1);
    let (from, to) = match period {
        Period::Day { date } => return (date, date),
        Period::Month { year, month } => {
            let next = if month == 12 {
                first(year + 1, 1)
            } else {
                first(year, month + 1)
            };
            (first(year, month), next - 1)
        }
        Period::Year { year } => (first(year, 1), first(year + 1, 1) - 1),
    };
    (date_at(from * DAY_MS), date_at(to * DAY_MS))
}

/// `[from, to)` in ms since the Unix epoch, UTC, of `period`.
pub fn bounds_ms(period: Period) -> (i64, i64) {
    let (first, last) = days_of(period);
    (day_number(first) * DAY_MS, (day_number(last) + 1) * DAY_MS)
}

/// Is `date` inside `period`?
pub fn contains(period: Period, date: BusinessDate) -> bool {
    let (first, last) = days_of(period);
    first <= date && date <= last
}

/// Parses `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
pub fn parse_period(s: &str) -> Result<Period, PeriodError> {
    let err = || PeriodError {
        given: s.to_owned(),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [y] if y.len() == 4 && digits(y) => {
            let year: u16 = y.parse().map_err(|_| err())?;
            (1..=9998)
                .contains(&year)
                .then_some(Period::Year { year })
                .ok_or_else(err)
        }
        [y, m] if y.len() == 4 && m.len() == 2 && digits(y) && digits(m) => {
            let year: u16 = y.parse().map_err(|_| err())?;
            let month: u8 = m.parse().map_err(|_| err())?;
            ((1..=9998).contains(&year) && (1..=12).contains(&month))
                .then_some(Period::Month { year, month })
                .ok_or_else(err)
        }
        [_, _, _] => s
            .parse::<BusinessDate>()
            .ok()
            .filter(|d| d.year() < 9999)
            .map(|date| Period::Day { date })
            .ok_or_else(err),
        _ => Err(err()),
    }
}

/// The period's label: `2026-11-29`, `2026-11`, `2026`.
pub fn label(period: Period) -> String {
    match period {
        Period::Day { date } => date.to_string(),
        Period::Month { year, month } => format!("{year:04}-{month:02}"),
        Period::Year { year } => format!("{year:04}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> BusinessDate {
        s.parse().unwrap()
    }

    #[test]
    fn days_and_dates_agree_across_leap_years_and_the_epoch() {
        for (s, days) in [
            ("1970-01-01", 0),
            ("2000-02-29", 11_016),
            ("2026-11-29", 20_786),
            ("1969-12-31", -1),
        ] {
            assert_eq!(day_number(d(s)), days, "{s}");
            assert_eq!(date_at(days * DAY_MS + 5), d(s), "{s}");
        }
        assert_eq!(date_at(-1), d("1969-12-31"));
    }

    #[test]
    fn periods_parse_and_bound() {
        let nov = parse_period("2026-11").unwrap();
        assert_eq!(days_of(nov), (d("2026-11-01"), d("2026-11-30")));
        assert_eq!(days_of(parse_period("2028-02").unwrap()).1, d("2028-02-29"));
        assert_eq!(days_of(parse_period("2026-12").unwrap()).1, d("2026-12-31"));
        let (from, to) = bounds_ms(nov);
        assert_eq!((to - from) / DAY_MS, 30);
        assert_eq!(bounds_ms(parse_period("1970").unwrap()).0, 0);
        assert_eq!(label(parse_period("2026-11-29").unwrap()), "2026-11-29");
        assert!(contains(nov, d("2026-11-30")) && !contains(nov, d("2026-12-01")));
        for bad in [
            "2026-13",
            "26-11",
            "2026-1",
            "2026-02-30",
            "",
            "abcd",
            "2026-11-29-1",
            "0000",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }
}
