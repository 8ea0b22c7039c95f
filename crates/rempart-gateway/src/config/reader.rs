//! Reading TOML with positions: where a value is (byte span → line and
//! column), typed getters that report a bad value as "expected X, got Y" at
//! its position, unknown keys with the closest known one, and the list of
//! problems and warnings collected along the way. It knows no section of the
//! gateway's file; `super::validate` says which keys each section takes.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use ipnet::IpNet;
use toml_edit::{Item, TableLike};

use super::Problem;

/// A table being read: its entries, where it is, and its path for messages.
#[derive(Clone, Copy)]
pub(super) struct Section<'a> {
    pub(super) table: &'a dyn TableLike,
    pub(super) at: usize,
    pub(super) path: &'a str,
}

/// The text being read, and what was found wrong in it so far.
pub(super) struct Reader<'t> {
    pub(super) text: &'t str,
    pub(super) problems: Vec<Problem>,
    /// Accepted but deprecated, in document order.
    pub(super) warnings: Vec<Problem>,
}

/// Byte offset → 1-based (line, column in chars).
pub(super) fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

pub(super) fn start(span: Option<Range<usize>>) -> Option<usize> {
    span.map(|s| s.start)
}

/// The known word nearest `word` (at most 3 edits away), for "did you mean".
pub(super) fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'t> Reader<'t> {
    pub(super) fn problem(
        &mut self,
        at: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = position(self.text, at);
        self.problems.push(Problem {
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Flags keys of `s` not in `known`, suggesting the closest known one.
    pub(super) fn known_keys(&mut self, s: Section<'_>, known: &[&str]) {
        for (key, _) in s.table.iter() {
            if known.contains(&key) {
                continue;
            }
            let at = s
                .table
                .get_key_value(key)
                .and_then(|(k, _)| start(k.span()))
                .unwrap_or(s.at);
            let message = match closest(key, known) {
                Some(k) => format!("unknown key; did you mean `{k}`?"),
                None => format!("unknown key; expected one of: {}", known.join(", ")),
            };
            self.problem(at, join(s.path, key), message);
        }
    }

    /// The value at `key`, its offset and its full path; `None` if absent.
    pub(super) fn entry<'a>(&self, s: Section<'a>, key: &str) -> Option<(&'a Item, usize, String)> {
        let item = s.table.get(key)?;
        let at = start(item.span()).unwrap_or(s.at);
        Some((item, at, join(s.path, key)))
    }

    /// The array at `key`, its offset and its full path; `None` if absent,
    /// or if it is not an array (reported, with `example` to follow).
    pub(super) fn array<'a>(
        &mut self,
        s: Section<'a>,
        key: &str,
        example: &str,
    ) -> Option<(&'a toml_edit::Array, usize, String)> {
        let (item, at, path) = self.entry(s, key)?;
        match item.as_array() {
            Some(array) => Some((array, at, path)),
            None => {
                let got = describe(item);
                self.problem(
                    at,
                    path,
                    format!("expected an array such as {example}, got {got}"),
                );
                None
            }
        }
    }

    pub(super) fn missing(&mut self, s: Section<'_>, key: &str, what: &str) {
        let where_ = if s.path.is_empty() {
            "the top level".to_owned()
        } else {
            format!("`{}`", s.path)
        };
        self.problem(
            s.at,
            join(s.path, key),
            format!("missing: {where_} needs `{key}` ({what})"),
        );
    }

    /// Reads `key` with `parse`; reports and returns `None` on absence (when
    /// `required`) or on a bad value.
    pub(super) fn value<T>(
        &mut self,
        s: Section<'_>,
        key: &str,
        expected: &str,
        required: bool,
        parse: impl FnOnce(&Item) -> Result<T, String>,
    ) -> Option<T> {
        let Some((item, at, path)) = self.entry(s, key) else {
            if required {
                self.missing(s, key, expected);
            }
            return None;
        };
        match parse(item) {
            Ok(v) => Some(v),
            Err(why) => {
                let got = describe(item);
                self.problem(at, path, format!("expected {expected}, got {got}{why}"));
                None
            }
        }
    }

    pub(super) fn string(
        &mut self,
        s: Section<'_>,
        key: &str,
        expected: &str,
        required: bool,
    ) -> Option<String> {
        self.value(s, key, expected, required, |i| {
            i.as_str().map(str::to_owned).ok_or_default()
        })
    }

    pub(super) fn bool(&mut self, s: Section<'_>, key: &str, default: bool) -> bool {
        self.value(s, key, "true or false", false, |i| {
            i.as_bool().ok_or_default()
        })
        .unwrap_or(default)
    }

    /// An integer in `min..=max`.
    pub(super) fn int(
        &mut self,
        s: Section<'_>,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        let expected = format!("a whole number from {min} to {max}");
        self.value(s, key, &expected, false, |i| match i.as_integer() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(_) => Err(String::new()),
            None => Err(String::new()),
        })
        .unwrap_or(default)
    }

    pub(super) fn duration(&mut self, s: Section<'_>, key: &str, default: Duration) -> Duration {
        self.duration_opt(s, key).unwrap_or(default)
    }

    pub(super) fn duration_opt(&mut self, s: Section<'_>, key: &str) -> Option<Duration> {
        self.value(
            s,
            key,
            "a duration string such as \"250ms\", \"15s\" or \"5m\"",
            false,
            |i| {
                let text = i.as_str().ok_or_default()?;
                humantime::parse_duration(text).map_err(|e| format!(" ({e})"))
            },
        )
    }

    pub(super) fn bytes(&mut self, s: Section<'_>, key: &str, default: u64) -> u64 {
        self.value(
            s,
            key,
            "a size: a number of bytes or a string such as \"16KiB\" or \"10MiB\"",
            false,
            |i| match (i.as_integer(), i.as_str()) {
                (Some(n), _) if n > 0 => Ok(n as u64),
                (_, Some(t)) => parse_size(t),
                _ => Err(String::new()),
            },
        )
        .unwrap_or(default)
    }

    pub(super) fn socket(&mut self, s: Section<'_>, key: &str, default: SocketAddr) -> SocketAddr {
        self.value(
            s,
            key,
            "an address such as \"127.0.0.1:8080\"",
            false,
            |i| {
                let text = i.as_str().ok_or_default()?;
                text.parse::<SocketAddr>().map_err(|e| format!(" ({e})"))
            },
        )
        .unwrap_or(default)
    }

    /// The sub-table at `key` (a `[section]` or an inline `{ ... }`), with its path.
    pub(super) fn table<'a>(
        &mut self,
        s: Section<'a>,
        key: &str,
    ) -> Option<(&'a dyn TableLike, usize, String)> {
        let (item, at, path) = self.entry(s, key)?;
        match item.as_table_like() {
            Some(t) => Some((t, at, path)),
            None => {
                let got = describe(item);
                self.problem(at, path, format!("expected a table, got {got}"));
                None
            }
        }
    }

    /// `[[key]]` entries, or an array of inline tables.
    pub(super) fn tables<'a>(
        &mut self,
        s: Section<'a>,
        key: &str,
    ) -> Vec<(&'a dyn TableLike, usize)> {
        let Some((item, at, path)) = self.entry(s, key) else {
            return Vec::new();
        };
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .map(|t| (t as &dyn TableLike, start(t.span()).unwrap_or(at)))
                .collect();
        }
        if let Some(array) = item.as_array() {
            let mut out = Vec::new();
            for (i, v) in array.iter().enumerate() {
                let vat = start(v.span()).unwrap_or(at);
                match v.as_inline_table() {
                    Some(t) => out.push((t as &dyn TableLike, vat)),
                    None => self.problem(
                        vat,
                        format!("{path}[{i}]"),
                        format!("expected a table, got {}", v.type_name()),
                    ),
                }
            }
            return out;
        }
        let got = describe(item);
        self.problem(
            at,
            path,
            format!("expected an array of tables (`[[{key}]]`), got {got}"),
        );
        Vec::new()
    }

    /// A list of networks or addresses at `key`, and where it is; `None` if absent.
    pub(super) fn nets(&mut self, s: Section<'_>, key: &str) -> Option<(Vec<IpNet>, usize)> {
        let (item, iat, ipath) = self.entry(s, key)?;
        let mut nets = Vec::new();
        match item.as_array() {
            Some(array) => {
                for (i, v) in array.iter().enumerate() {
                    let vat = start(v.span()).unwrap_or(iat);
                    match v.as_str().map(parse_net) {
                        Some(Ok(net)) => nets.push(net),
                        Some(Err(e)) => self.problem(
                            vat,
                            format!("{ipath}[{i}]"),
                            format!("expected a network such as \"10.0.0.0/8\" or an address such as \"127.0.0.1\" ({e})"),
                        ),
                        None => self.problem(
                            vat,
                            format!("{ipath}[{i}]"),
                            format!("expected a string such as \"10.0.0.0/8\", got {}", v.type_name()),
                        ),
                    }
                }
            }
            None => {
                let got = describe(item);
                self.problem(
                    iat,
                    ipath,
                    format!("expected an array such as [\"127.0.0.1/32\"], got {got}"),
                );
            }
        }
        Some((nets, iat))
    }

    /// An optional inline sub-table, as a section.
    pub(super) fn sub<'a>(
        &mut self,
        s: Section<'a>,
        key: &str,
        path: &'a mut String,
    ) -> Option<Section<'a>> {
        let (table, at, p) = self.table(s, key)?;
        *path = p;
        Some(Section { table, at, path })
    }
}

/// What an item is, for "expected X, got Y".
pub(super) fn describe(item: &Item) -> String {
    match item.as_value() {
        Some(v) => {
            let shown = v.to_string();
            let shown = shown.trim();
            if shown.len() <= 40 {
                format!("{} {shown}", v.type_name())
            } else {
                v.type_name().to_owned()
            }
        }
        None => item.type_name().to_owned(),
    }
}

pub(super) trait OkOrDefault<T> {
    /// `None` → `Err(String::new())`: the caller's "expected ..., got ..." says it all.
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!(" ({text:?} does not start with a number)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                " (unknown unit {other:?}: use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    match n.checked_mul(scale) {
        Some(0) | None => Err(" (it must be above zero and below 16 EiB)".into()),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        assert_eq!(position(text, text.find('=').unwrap()), (1, 3));
        // 'é' is two bytes but one column.
        assert_eq!(position(text, 6 + "bé ".len()), (2, 4));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("0B").is_err());
    }

    #[test]
    fn a_bare_address_is_a_single_host_network() {
        assert_eq!(parse_net("127.0.0.1"), Ok("127.0.0.1/32".parse().unwrap()));
        assert_eq!(parse_net("10.1.2.3/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert!(parse_net("localhost").is_err());
    }
}
