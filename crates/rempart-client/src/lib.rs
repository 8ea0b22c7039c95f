//! # rempart-client
//!
//! Seed 003's resilient API client: call an HTTP API through rempart's
//! circuit breaker, retry (exponential backoff, ±10 % jitter, `Retry-After`,
//! a retry budget), timeouts and fallback chain, configured by the seed's
//! TOML file. It is a [reqwest-middleware](reqwest_middleware) middleware
//! ([`Resilience`]), so it composes with the rest of that ecosystem; users of
//! hyper or tower keep rempart's own tower layers.
//!
//! Each request goes: deadline (`timeout`) → retry → breaker (one per host,
//! or per [`BreakerKey`]) → attempt (`attempt_timeout`, with the time it has
//! left sent as `x-request-timeout-ms`). When the call still fails, the
//! fallback chain answers in the order of `strategy`: the last good answer to
//! the same GET, a default answer, a degraded answer; each marked
//! `X-Degraded-Mode: true`, and carrying a [`FallbackAnswer`] extension.
//!
//! ```no_run
//! use rempart_client::ResilientClient;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = ResilientClient::from_toml_file("client.toml")?;
//! let movies = client.get("http://127.0.0.1:8080/movies").send().await?;
//! println!("{}", movies.text().await?);
//! # Ok(()) }
//! ```
//!
//! Metrics (read at scrape time, labelled `service` = the breaker key):
//! `retry_attempts_total`, `retry_calls_total{outcome}` (the success rate is
//! derived from it, see `docs/client-config.md`), `retry_delay_seconds`,
//! `circuit_breaker_state`, `fallback_activations_total{kind}`; see
//! [`ResilientClient::register`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod answer;
mod classify;
pub mod config;
mod host;
mod middleware;
mod observe;
mod replay;
mod resolve;

use std::path::Path;
use std::sync::Arc;

pub use answer::FallbackAnswer;
pub use classify::{ErrorKind, kind_of};
pub use config::{ClientConfig, ConfigError};
pub use middleware::{BreakerKey, ClientError, Resilience, error_chain};
pub use observe::{AttemptOutcome, AttemptReport, CallObserver};
pub use resolve::{DnsFailure, SystemResolver};

use prometheus_client::registry::Registry;
use reqwest_middleware::{ClientWithMiddleware, RequestBuilder};

/// A reqwest client with the [`Resilience`] middleware, from a config file.
#[derive(Debug, Clone)]
pub struct ResilientClient {
    http: ClientWithMiddleware,
    resilience: Resilience,
}

impl ResilientClient {
    /// Reads and checks the TOML file at `path` (seed 003's format), and
    /// builds the client.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        ResilientClient::new(ClientConfig::from_file(path)?)
    }

    /// Checks TOML `text` and builds the client; errors name the text `(string)`.
    ///
    /// ```
    /// use rempart_client::ResilientClient;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = ResilientClient::from_toml_str("[retry]\nmax_retries = 2\n").unwrap();
    /// assert_eq!(client.resilience().config().retry.max_retries, 2);
    ///
    /// let err = ResilientClient::from_toml_str("[retry]\nmultiplier = 0.5\n").unwrap_err();
    /// assert_eq!(err.problems()[0].line, 2);
    /// # });
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        ResilientClient::new(ClientConfig::parse(text, "(string)")?)
    }

    /// The client for `config`.
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        ResilientClient::with_middleware(Resilience::new(config))
    }

    /// The client for a middleware built elsewhere (with an observer, say).
    /// Its reqwest client connects within `connect_timeout` and resolves
    /// names with [`SystemResolver`].
    pub fn with_middleware(resilience: Resilience) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .connect_timeout(resilience.config().connect_timeout)
            .dns_resolver(Arc::new(SystemResolver))
            .build()
            .map_err(ConfigError::Client)?;
        let http = reqwest_middleware::ClientBuilder::new(client)
            .with(resilience.clone())
            .build();
        Ok(ResilientClient { http, resilience })
    }

    /// A GET to `url`.
    pub fn get(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.http.get(url)
    }

    /// A POST to `url`.
    pub fn post(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.http.post(url)
    }

    /// A request with any method.
    pub fn request(&self, method: reqwest::Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// The reqwest-middleware client underneath.
    pub fn http(&self) -> &ClientWithMiddleware {
        &self.http
    }

    /// The middleware: its config, breaker states, metrics.
    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// Exposes the client's metrics in `registry` (see [`Resilience::register`]).
    pub fn register(&self, registry: &mut Registry) {
        self.resilience.register(registry);
    }
}
