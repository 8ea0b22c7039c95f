//! The client's configuration: seed 003's TOML as written, plus new keys.
//!
//! [`ClientConfig::parse`] checks every key and value and returns either the
//! configuration or *every* problem, each with its line, column and key, and
//! the nearest known key for a typo. The keys are documented in
//! `docs/client-config.md`.
//!
//! ```
//! use rempart_client::config::ClientConfig;
//! use std::time::Duration;
//!
//! let config = ClientConfig::parse("[retry]\nmax_retries = 2\ninitial_delay = \"200ms\"\n", "client.toml").unwrap();
//! assert_eq!(config.retry.max_retries, 2);
//! assert_eq!(config.retry.initial_delay, Duration::from_millis(200));
//!
//! let err = ClientConfig::parse("[retry]\nmax_retry = 2\n", "bad.toml").unwrap_err();
//! assert!(err.to_string().contains("bad.toml:2:1: `retry.max_retry`: unknown key; did you mean `max_retries`?"));
//! ```

mod error;
mod model;
mod reader;
mod sections;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Problem};
pub use model::{
    BreakerSettings, BudgetSettings, Canned, ClientConfig, FallbackSettings, HostOverride,
    RetryRules, RetrySettings, Strategy,
};

use reader::{Reader, Table, line_column};

impl ClientConfig {
    /// Reads and checks the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClientConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        ClientConfig::parse(&text, path)
    }

    /// Checks `text`; `file` only names it in errors.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<ClientConfig, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: PathBuf::from(file.as_ref()),
            problems,
        };
        let doc = toml_edit::Document::parse(text).map_err(|e| {
            let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
            invalid(vec![Problem {
                line,
                column,
                key: "(syntax)".into(),
                message: format!("not valid TOML: {}", e.message()),
            }])
        })?;
        let mut r = Reader::new(text);
        let root = Table {
            entries: doc.as_table(),
            offset: 0,
            path: "",
        };
        let config = sections::document(&mut r, root);
        if r.problems.is_empty() {
            Ok(config)
        } else {
            r.problems.sort_by_key(|p| (p.line, p.column));
            Err(invalid(r.problems))
        }
    }
}
