//! How a refused configuration is reported: each [`Problem`] with its line,
//! column and key, and the [`ConfigError`] that lists them all (or says the
//! file could not be read).

use std::fmt;
use std::path::PathBuf;

/// One thing wrong in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Where in the document, e.g. `services[0].bulkhead.max_concurrent`.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, in document order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "cannot read config file {}: {source}", file.display())
            }
            ConfigError::Invalid { file, problems } => {
                let n = problems.len();
                write!(
                    f,
                    "{} has {n} problem{}:",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    write!(
                        f,
                        "\n  {}:{}:{}: `{}`: {}",
                        file.display(),
                        p.line,
                        p.column,
                        p.key,
                        p.message
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
            ConfigError::Invalid { .. } => None,
        }
    }
}
