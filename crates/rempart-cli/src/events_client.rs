//! A register's client for central's sync API, through rempart's policies
//! (crates/rempart-client over crates/rempart): each call has a deadline, is
//! retried with exponential backoff and jitter, and goes through a circuit
//! breaker, so a register cut off from central fails its sync fast and keeps
//! selling; its unsynced events are its chain after the last ack, sent on the
//! next sync.
//!
//! A push is a POST, and is retried even after it may have reached central
//! (`retry_non_idempotent`): central ignores events it holds, so a batch
//! sent twice adds nothing.

use rempart::clock::{Clock, UnixClock};
use rempart_client::ResilientClient;
use rempart_events::sync::auth::PUSH_PATH;
use rempart_events::sync::wire::{Ack, PullPage, PushBatch};
use rempart_events::sync::{RegisterSync, SyncError};

/// The client's policies unless the caller gives its own (same TOML as
/// `rempart request`, docs/client-config.md): short pauses, a whole call
/// bounded at 20 s, a breaker opening after 5 failed attempts.
pub const DEFAULT_SYNC_CLIENT_TOML: &str = r#"
[retry]
max_retries = 3
initial_delay = "200ms"
max_delay = "5s"
multiplier = 2.0
jitter = true
attempt_timeout = "5s"
timeout = "20s"
connect_timeout = "2s"

[retry.circuit_breaker]
failure_threshold = 5
success_threshold = 1
timeout = "10s"

[retry.policy]
retry_non_idempotent = true
"#;

/// Why a sync with central did not complete.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncClientError {
    /// Central could not be reached (or kept failing) within the policies:
    /// nothing is lost, sync again later.
    Unreachable(String),
    /// Central refused the request (a 4xx): retrying will not help.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Central's message.
        message: String,
    },
    /// The register's own store failed.
    Local(SyncError),
}

impl std::fmt::Display for SyncClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncClientError::Unreachable(m) => write!(f, "central is unreachable: {m}"),
            SyncClientError::Refused { status, message } => {
                write!(f, "central refused the request ({status}): {message}")
            }
            SyncClientError::Local(e) => write!(f, "the register's store: {e}"),
        }
    }
}

impl std::error::Error for SyncClientError {}

/// The register's wall clock in Unix milliseconds, for signing times.
fn now_ms() -> u64 {
    UnixClock::new().now().as_nanos() / 1_000_000
}

/// Central's sync API, seen from a register.
#[derive(Debug, Clone)]
pub struct CentralClient {
    http: ResilientClient,
    base: String,
}

/// What one [`CentralClient::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Events central appended from this register's pushes.
    pub pushed: u64,
    /// Events central already held (sent again).
    pub duplicates: u64,
    /// Shop-mates' events taken in.
    pub pulled: u64,
    /// Central's ack of this register's chain afterwards.
    pub acked_seq: u64,
}

impl CentralClient {
    /// A client of central at `base` (`http://host:port`), with the policies
    /// in `policies_toml` ([`DEFAULT_SYNC_CLIENT_TOML`] if unsure).
    pub fn new(base: &str, policies_toml: &str) -> Result<CentralClient, String> {
        let http = ResilientClient::from_toml_str(policies_toml).map_err(|e| e.to_string())?;
        let base = base.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).map_err(|e| format!("central's URL {base:?}: {e}"))?;
        Ok(CentralClient { http, base })
    }

    async fn answer<T: serde::de::DeserializeOwned, E: std::error::Error + 'static>(
        sent: Result<reqwest::Response, E>,
    ) -> Result<T, SyncClientError> {
        let response =
            sent.map_err(|e| SyncClientError::Unreachable(rempart_client::error_chain(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| SyncClientError::Unreachable(format!("reading the answer: {e}")))?;
        if status.is_client_error() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(SyncClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        if !status.is_success() {
            return Err(SyncClientError::Unreachable(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| {
            SyncClientError::Unreachable(format!("central's answer is not what was expected: {e}"))
        })
    }

    /// Pushes one batch of `register`'s, signed with its key; returns
    /// central's ack.
    pub async fn push(
        &self,
        register: &RegisterSync,
        batch: &PushBatch,
    ) -> Result<Ack, SyncClientError> {
        let body = serde_json::to_vec(batch)
            .map_err(|e| SyncClientError::Local(SyncError::Rejected(e.to_string())))?;
        let signed = register
            .sign_request("POST", PUSH_PATH, now_ms(), &body)
            .map_err(|e| SyncClientError::Local(e.into()))?;
        let mut request = self
            .http
            .post(format!("{}{PUSH_PATH}", self.base))
            .header("content-type", "application/json");
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        Self::answer(request.body(body).send().await).await
    }

    /// Pulls shop `store`'s events after central position `after`, signed
    /// with `register`'s key (central answers only a register of that shop).
    pub async fn pull(
        &self,
        register: &RegisterSync,
        store: &str,
        after: u64,
        limit: u32,
    ) -> Result<PullPage, SyncClientError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| SyncClientError::Unreachable(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| {
                SyncClientError::Unreachable(format!("{} cannot take a path", self.base))
            })?
            .extend(["v1", "stores", store, "events"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string());
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let signed = register
            .sign_request("GET", &path_and_query, now_ms(), b"")
            .map_err(|e| SyncClientError::Local(e.into()))?;
        let mut request = self.http.get(url);
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        Self::answer(request.send().await).await
    }

    /// Syncs `register` both ways: pushes its chain after central's ack
    /// (batches of `batch` events) and pulls its shop's events, until both
    /// are caught up or `rounds` requests each were made.
    pub async fn sync(
        &self,
        register: &RegisterSync,
        batch: usize,
        rounds: usize,
    ) -> Result<SyncReport, SyncClientError> {
        let mut report = SyncReport::default();
        for _ in 0..rounds {
            let Some(next) = register
                .outbox(batch)
                .await
                .map_err(|e| SyncClientError::Local(e.into()))?
            else {
                break;
            };
            let ack = self.push(register, &next).await?;
            report.pushed += ack.appended;
            report.duplicates += ack.duplicates;
            report.acked_seq = register
                .record_ack(&ack)
                .await
                .map_err(|e| SyncClientError::Local(e.into()))?;
        }
        if report.acked_seq == 0 {
            // Nothing acknowledged yet: central may not know this register,
            // and answers pulls only from registers it enrolled.
            let (acked, _) = register
                .progress()
                .await
                .map_err(|e| SyncClientError::Local(e.into()))?;
            if acked == 0 {
                self.push(register, &register.enrolment_batch()).await?;
            }
        }
        for _ in 0..rounds {
            let (_, from) = register
                .progress()
                .await
                .map_err(|e| SyncClientError::Local(e.into()))?;
            let page = self
                .pull(register, register.store_id(), from, 1_000)
                .await?;
            let done = page.next_position == from;
            report.pulled += register
                .apply_pull(&page)
                .await
                .map_err(SyncClientError::Local)?;
            if done {
                break;
            }
        }
        report.acked_seq = report.acked_seq.max(
            register
                .progress()
                .await
                .map_err(|e| SyncClientError::Local(e.into()))?
                .0,
        );
        Ok(report)
    }
}
