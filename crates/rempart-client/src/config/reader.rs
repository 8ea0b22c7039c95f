//! TOML with positions: each value's line and column, typed reads that say
//! "expected X, got Y" where the value is, and unknown keys with the nearest
//! known one. It knows no section of the client's file; `sections.rs` does.

use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::Problem;

/// A table being read, where it starts, and its dotted path for messages.
#[derive(Clone, Copy)]
pub(super) struct Table<'a> {
    pub(super) entries: &'a dyn TableLike,
    pub(super) offset: usize,
    pub(super) path: &'a str,
}

/// The text, and every problem found in it so far.
pub(super) struct Reader<'t> {
    text: &'t str,
    pub(super) problems: Vec<Problem>,
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        1 + before.bytes().filter(|b| *b == b'\n').count(),
        1 + before[line_start..].chars().count(),
    )
}

/// The known name closest to `word`, if a plausible typo of it (≤ 3 edits);
/// on a tie, the one sharing the longest start (`max_retry` → `max_retries`,
/// not `max_delay`).
pub(super) fn did_you_mean<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let shared_start = |k: &str| {
        word.chars()
            .zip(k.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let (distance, _, best) = known
        .iter()
        .map(|k| {
            let d = strsim::damerau_levenshtein(word, k);
            (d, std::cmp::Reverse(shared_start(k)), *k)
        })
        .min()?;
    (distance <= 3).then_some(best)
}

fn dotted(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// How a value looks, for "got ...": its type and, when short, itself.
fn shown(item: &Item) -> String {
    match item.as_value() {
        Some(v) => {
            let text = v.to_string();
            let text = text.trim();
            if text.len() <= 40 {
                format!("{} {text}", v.type_name())
            } else {
                v.type_name().to_owned()
            }
        }
        None => item.type_name().to_owned(),
    }
}

impl<'t> Reader<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Reader {
            text,
            problems: Vec::new(),
        }
    }

    pub(super) fn report(&mut self, offset: usize, key: String, message: String) {
        let (line, column) = line_column(self.text, offset);
        self.problems.push(Problem {
            line,
            column,
            key,
            message,
        });
    }

    /// Reports every key of `t` that is not in `known`, with a did-you-mean.
    pub(super) fn only_keys(&mut self, t: Table<'_>, known: &[&str]) {
        for (key, _) in t.entries.iter() {
            if known.contains(&key) {
                continue;
            }
            let offset = t
                .entries
                .get_key_value(key)
                .and_then(|(k, _)| k.span())
                .map_or(t.offset, |s| s.start);
            let message = match did_you_mean(key, known) {
                Some(k) => format!("unknown key; did you mean `{k}`?"),
                None => format!("unknown key; this table takes: {}", known.join(", ")),
            };
            self.report(offset, dotted(t.path, key), message);
        }
    }

    /// The item at `key`, its offset and its dotted path.
    fn item<'a>(&self, t: Table<'a>, key: &str) -> Option<(&'a Item, usize, String)> {
        let item = t.entries.get(key)?;
        let offset = item.span().map_or(t.offset, |s| s.start);
        Some((item, offset, dotted(t.path, key)))
    }

    /// Reads `key` with `parse` (which may add a reason after "got ..."); a bad
    /// value is reported and read as `None`, as is an absent one.
    pub(super) fn read<T>(
        &mut self,
        t: Table<'_>,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&Item) -> Result<T, String>,
    ) -> Option<T> {
        let (item, offset, path) = self.item(t, key)?;
        parse(item)
            .map_err(|why| {
                let got = shown(item);
                self.report(offset, path, format!("expected {expected}, got {got}{why}"));
            })
            .ok()
    }

    pub(super) fn bool(&mut self, t: Table<'_>, key: &str, default: bool) -> bool {
        self.read(t, key, "true or false", |i| {
            i.as_bool().ok_or_else(String::new)
        })
        .unwrap_or(default)
    }

    /// A whole number in `min..=max`.
    pub(super) fn whole(&mut self, t: Table<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
        let expected = format!("a whole number from {min} to {max}");
        self.read(t, key, &expected, |i| {
            i.as_integer()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(String::new)
        })
    }

    /// A finite number of at least `min` (a whole number is taken too).
    pub(super) fn number(&mut self, t: Table<'_>, key: &str, min: f64) -> Option<f64> {
        let expected = format!("a number of at least {min:.1}");
        self.read(t, key, &expected, |i| {
            i.as_float()
                .or_else(|| i.as_integer().map(|n| n as f64))
                .filter(|x| x.is_finite() && *x >= min)
                .ok_or_else(String::new)
        })
    }

    /// A duration string such as `"250ms"` or `"1h"`; zero refused unless `zero_ok`.
    pub(super) fn duration(&mut self, t: Table<'_>, key: &str, zero_ok: bool) -> Option<Duration> {
        let expected = if zero_ok {
            "a duration such as \"250ms\", \"1s\" or \"1h\""
        } else {
            "a duration above zero such as \"250ms\", \"1s\" or \"1h\""
        };
        self.read(t, key, expected, |i| {
            let text = i.as_str().ok_or_else(String::new)?;
            let d = humantime::parse_duration(text).map_err(|e| format!(" ({e})"))?;
            if d.is_zero() && !zero_ok {
                return Err(" (zero leaves no time at all)".into());
            }
            Ok(d)
        })
    }

    pub(super) fn string(&mut self, t: Table<'_>, key: &str) -> Option<String> {
        self.read(t, key, "a string", |i| {
            i.as_str().map(str::to_owned).ok_or_else(String::new)
        })
    }

    /// Each element of the array at `key`, with its offset and path; an
    /// absent key is `None`, a non-array is reported.
    pub(super) fn array<'a>(
        &mut self,
        t: Table<'a>,
        key: &str,
        expected: &str,
    ) -> Option<Vec<(&'a Value, usize, String)>> {
        let (item, offset, path) = self.item(t, key)?;
        let Some(array) = item.as_array() else {
            let got = shown(item);
            self.report(offset, path, format!("expected {expected}, got {got}"));
            return None;
        };
        Some(
            array
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        v,
                        v.span().map_or(offset, |s| s.start),
                        format!("{path}[{i}]"),
                    )
                })
                .collect(),
        )
    }

    /// The sub-table at `key` (a `[section]` or an inline `{ ... }`).
    pub(super) fn table<'a>(
        &mut self,
        t: Table<'a>,
        key: &str,
    ) -> Option<(&'a dyn TableLike, usize, String)> {
        let (item, offset, path) = self.item(t, key)?;
        match item.as_table_like() {
            Some(entries) => Some((entries, offset, path)),
            None => {
                let got = shown(item);
                self.report(offset, path, format!("expected a table, got {got}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_from_one_in_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 6 + "bé ".len()), (2, 4));
    }

    #[test]
    fn a_typo_suggests_the_nearest_key_and_nonsense_suggests_none() {
        let known = ["max_retries", "max_delay", "multiplier"];
        assert_eq!(did_you_mean("max_retry", &known), Some("max_retries"));
        assert_eq!(did_you_mean("mutliplier", &known), Some("multiplier"));
        assert_eq!(did_you_mean("colour", &known), None);
    }
}
