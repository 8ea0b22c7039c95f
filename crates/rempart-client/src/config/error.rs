//! How a refused client configuration is reported: every [`Problem`] with
//! its line, column and key, so one run of `rempart request` shows them all.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong in a client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Where in the document, e.g. `retry.circuit_breaker.timeout`.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// Why a client configuration was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text was read but is not a valid configuration.
    Invalid {
        /// The file (or `(string)` for [`from_toml_str`](crate::ResilientClient::from_toml_str)).
        file: PathBuf,
        /// Every problem found, in document order.
        problems: Vec<Problem>,
    },
    /// The configuration is valid but reqwest could not build a client from it.
    Client(reqwest::Error),
}

impl ConfigError {
    /// Every problem found (empty unless [`ConfigError::Invalid`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "cannot read client config {}: {source}", file.display())
            }
            ConfigError::Client(e) => write!(f, "cannot build the HTTP client: {e}"),
            ConfigError::Invalid { file, problems } => {
                let file = file.display();
                let plural = if problems.len() == 1 { "" } else { "s" };
                write!(f, "{file} has {} problem{plural}:", problems.len())?;
                for p in problems {
                    write!(
                        f,
                        "\n  {file}:{}:{}: `{}`: {}",
                        p.line, p.column, p.key, p.message
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Client(e) => Some(e),
            ConfigError::Invalid { .. } => None,
        }
    }
}
