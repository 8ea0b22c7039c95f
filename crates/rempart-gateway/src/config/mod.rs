//! The gateway's configuration, parsed once into plain structs.
//!
//! [`GatewayConfig::parse`] reads TOML text (testable from a string, with no
//! file), checks every key and every value, and either returns the whole
//! configuration or *every* problem it found, each with its line, column and
//! key path and what would be valid. A typo in a key is reported with the
//! closest known key, so `timout = "3s"` does not silently fall back to the
//! default timeout. The keys are documented in `docs/gateway-config.md`.
//!
//! ```
//! use rempart_gateway::config::GatewayConfig;
//!
//! let config = GatewayConfig::parse(r#"
//! [[services]]
//! name = "reporting"
//! upstreams = [ { url = "http://127.0.0.1:7003" } ]
//! timeout = "15s"
//!
//! [[routes]]
//! path_prefix = "/reports"
//! service = "reporting"
//! "#, "gateway.toml").unwrap();
//! assert_eq!(config.services[0].timeout, std::time::Duration::from_secs(15));
//!
//! let err = GatewayConfig::parse("[server]\nlisten = 8080\n", "bad.toml").unwrap_err();
//! assert!(err.to_string().contains("bad.toml:2:10: `server.listen`"));
//! ```
//!
//! Where each part lives: `model.rs`, the plain types the gateway reads;
//! `reader.rs`, TOML with positions and typed getters; `validate/`, which
//! keys each section takes and what values are valid (one file per section);
//! `error.rs`, how a refused file is reported.

mod error;
mod model;
mod reader;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use model::{
    BackoffKind, BreakerConfig, BulkheadConfig, CacheBackend, CacheConfig, FallbackConfig,
    GatewayConfig, HealthCheckConfig, JitterKind, RateLimitConfig, RetryConfig, RetryOn,
    RouteConfig, ServerConfig, ServiceConfig, UpstreamConfig,
};
pub use model::{QueueConfig, ResultsBackend};

use reader::{Reader, position};

impl GatewayConfig {
    /// Reads and checks the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<GatewayConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        GatewayConfig::parse(&text, path)
    }

    /// Checks `text`; `file` only names it in errors.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<GatewayConfig, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: file.as_ref().to_owned(),
            problems,
        };
        let doc = toml_edit::Document::parse(text).map_err(|e| {
            let (line, column) = position(text, e.span().map_or(0, |s| s.start));
            invalid(vec![Problem {
                line,
                column,
                key: "(syntax)".into(),
                message: format!("not valid TOML: {}", e.message()),
            }])
        })?;
        let mut r = Reader {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let mut config = r.document(doc.as_table());
        if r.problems.is_empty() {
            let file = file.as_ref().display();
            config.warnings = r
                .warnings
                .iter()
                .map(|p| format!("{file}:{}:{}: `{}`: {}", p.line, p.column, p.key, p.message))
                .collect();
            Ok(config)
        } else {
            r.problems.sort_by_key(|p| (p.line, p.column));
            Err(invalid(r.problems))
        }
    }

    /// The service a route names.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}
