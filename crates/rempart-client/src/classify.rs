//! Seed 003's classification: which failures an HTTP call is retried on, what
//! reqwest's errors are in the seed's words, and what the breaker counts.
//!
//! The decisions are pure functions over plain values; only [`kind_of`]
//! looks inside a reqwest error, to name its kind.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use rempart::circuit_breaker::Outcome;
use rempart::retry::{Decision, HttpOutcome};

use crate::config::RetryRules;
use crate::resolve::DnsFailure;

/// A failure that is not an answer, in the seed's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `connection_timeout`: no connection within the connect timeout (not sent).
    ConnectTimeout,
    /// `dns_resolution`: the host name did not resolve (not sent).
    Dns,
    /// `connection_refused`: nothing listens there (not sent).
    ConnectionRefused,
    /// `connection_reset`: the connection broke mid-call (may have been processed).
    ConnectionReset,
    /// `timeout`: no answer within the attempt's time (may have been processed).
    Timeout,
}

impl ErrorKind {
    /// Every kind, in the order of [`ErrorKind::NAMES`].
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::ConnectTimeout,
        ErrorKind::Dns,
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionReset,
        ErrorKind::Timeout,
    ];

    /// The names `retryable_errors` takes.
    pub const NAMES: [&'static str; 5] = [
        "connection_timeout",
        "dns_resolution",
        "connection_refused",
        "connection_reset",
        "timeout",
    ];

    /// Its name in the config file.
    pub fn name(self) -> &'static str {
        ErrorKind::NAMES[self as usize]
    }

    /// The kind a config name stands for.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        let i = ErrorKind::NAMES.iter().position(|n| *n == name)?;
        Some(ErrorKind::ALL[i])
    }

    /// The same failure as rempart's retry module names it.
    pub fn as_outcome(self) -> HttpOutcome {
        match self {
            ErrorKind::ConnectTimeout => HttpOutcome::ConnectTimeout,
            ErrorKind::Dns => HttpOutcome::Dns,
            ErrorKind::ConnectionRefused => HttpOutcome::ConnectionRefused,
            ErrorKind::ConnectionReset => HttpOutcome::ConnectionReset,
            ErrorKind::Timeout => HttpOutcome::Timeout,
        }
    }

    /// Whether the request surely never reached the server.
    pub fn not_sent(self) -> bool {
        rempart::retry::http_not_sent(&self.as_outcome())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a reqwest error, or `None` for one that is no transport
/// failure (a bad URL, a redirect loop, a body that is not JSON).
pub fn kind_of(err: &reqwest::Error) -> Option<ErrorKind> {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = source {
        if e.is::<DnsFailure>() {
            return Some(ErrorKind::Dns);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return Some(ErrorKind::ConnectionRefused),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return Some(ErrorKind::ConnectionReset),
                io::ErrorKind::TimedOut if err.is_connect() => {
                    return Some(ErrorKind::ConnectTimeout);
                }
                io::ErrorKind::TimedOut => return Some(ErrorKind::Timeout),
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            return Some(ErrorKind::ConnectionReset);
        }
        // hyper-util's resolver names its failures in words only; a client built
        // by `ResilientClient` uses our resolver and is caught above.
        if e.to_string() == "dns error" {
            return Some(ErrorKind::Dns);
        }
        source = e.source();
    }
    match (err.is_connect(), err.is_timeout()) {
        (true, true) => Some(ErrorKind::ConnectTimeout),
        (true, false) => Some(ErrorKind::ConnectionRefused),
        (false, true) => Some(ErrorKind::Timeout),
        (false, false) if err.is_body() || err.is_request() => Some(ErrorKind::ConnectionReset),
        _ => None,
    }
}

/// Whether `method` may be sent twice with the effect of once (RFC 9110).
pub(crate) fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    // Compared one by one: a list of methods would be built and dropped per call.
    *method == Method::GET
        || *method == Method::HEAD
        || *method == Method::PUT
        || *method == Method::DELETE
        || *method == Method::OPTIONS
        || *method == Method::TRACE
}

/// The retry rules as each call reads them: the retried statuses as a bit
/// set, made once when the middleware is built (a list would be scanned
/// several times per call).
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Bit `code` set for each retried status below 640 (HTTP's codes are
    /// 100..=599).
    statuses: [u64; 10],
    /// Any listed code past those (a `RetryRules` built by hand may hold one).
    beyond: Vec<u16>,
    errors: Vec<ErrorKind>,
    non_idempotent: bool,
}

impl From<&RetryRules> for Rules {
    fn from(rules: &RetryRules) -> Self {
        let mut statuses = [0u64; 10];
        let mut beyond = Vec::new();
        for &code in &rules.statuses {
            match statuses.get_mut(usize::from(code / 64)) {
                Some(word) => *word |= 1 << (code % 64),
                None => beyond.push(code),
            }
        }
        Rules {
            statuses,
            beyond,
            errors: rules.errors.clone(),
            non_idempotent: rules.non_idempotent,
        }
    }
}

impl Rules {
    /// Whether `code` is a retried status.
    pub(crate) fn retries_status(&self, code: u16) -> bool {
        match self.statuses.get(usize::from(code / 64)) {
            Some(word) => word >> (code % 64) & 1 == 1,
            None => self.beyond.contains(&code),
        }
    }
}

/// What one attempt came to, as the rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempted {
    /// An answer with this status, and its `Retry-After`, if any.
    Status(u16, Option<std::time::Duration>),
    /// A transport failure of this kind.
    Failed(ErrorKind),
    /// A failure of no known kind (never retried).
    Other,
    /// The breaker refused the attempt (the loop stops).
    Refused,
}

/// The retry decision on one attempt: the seed's rules as `rules` set them.
/// A `Retry-After` on a retried status sets the pause. A request that is not
/// idempotent is retried only when it surely was not sent, unless
/// `rules.non_idempotent`.
pub(crate) fn decide(rules: &Rules, idempotent: bool, attempted: Attempted) -> Decision {
    match attempted {
        Attempted::Status(code, retry_after) if rules.retries_status(code) => {
            if !idempotent && !rules.non_idempotent {
                return Decision::Accept;
            }
            retry_after.map_or(Decision::Retry, Decision::RetryAfter)
        }
        Attempted::Status(..) | Attempted::Other => Decision::Accept,
        Attempted::Failed(kind) if rules.errors.contains(&kind) => {
            if idempotent || rules.non_idempotent || kind.not_sent() {
                Decision::Retry
            } else {
                Decision::Accept
            }
        }
        Attempted::Failed(_) => Decision::Accept,
        Attempted::Refused => Decision::Stop,
    }
}

/// Whether a final answer with `code` is a failure the fallback may answer
/// for: a status the rules retry, or any 5xx. A 4xx is the server's answer.
pub(crate) fn failed_status(rules: &Rules, code: u16) -> bool {
    code >= 500 || rules.retries_status(code)
}

/// What the breaker learns from one attempt: transport failures and failed
/// statuses count against the host, 2xx–4xx answers for it.
pub(crate) fn breaker_outcome(rules: &Rules, attempted: Attempted) -> Outcome {
    match attempted {
        Attempted::Status(code, _) if failed_status(rules, code) => Outcome::Failure,
        Attempted::Status(..) => Outcome::Success,
        Attempted::Failed(_) => Outcome::Failure,
        Attempted::Other | Attempted::Refused => Outcome::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rempart::retry::http_decision;
    use std::time::Duration;

    fn to_outcome(a: Attempted) -> HttpOutcome {
        match a {
            Attempted::Status(code, retry_after) => HttpOutcome::Status { code, retry_after },
            Attempted::Failed(k) => k.as_outcome(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_status_set_holds_exactly_the_listed_codes() {
        let rules = Rules::from(&RetryRules {
            statuses: vec![100, 127, 128, 429, 599, 639, 640, 999, u16::MAX],
            ..RetryRules::default()
        });
        for code in 0..=u16::MAX {
            let listed = matches!(
                code,
                100 | 127 | 128 | 429 | 599 | 639 | 640 | 999 | u16::MAX
            );
            assert_eq!(rules.retries_status(code), listed, "{code}");
        }
    }

    #[test]
    fn the_seeds_lists_retry_its_kinds_and_nothing_else() {
        let rules = Rules::from(&RetryRules::default());
        for code in [429, 500, 502, 503, 504] {
            assert_eq!(
                decide(&rules, true, Attempted::Status(code, None)),
                Decision::Retry
            );
        }
        for code in [200, 400, 401, 403, 404, 422] {
            assert_eq!(
                decide(&rules, true, Attempted::Status(code, None)),
                Decision::Accept
            );
        }
        for kind in ErrorKind::ALL {
            assert_eq!(
                decide(&rules, true, Attempted::Failed(kind)),
                Decision::Retry
            );
        }
        assert_eq!(decide(&rules, true, Attempted::Other), Decision::Accept);
        assert_eq!(decide(&rules, true, Attempted::Refused), Decision::Stop);
    }

    #[test]
    fn a_post_is_retried_only_when_it_was_surely_not_sent() {
        let rules = Rules::from(&RetryRules::default());
        assert_eq!(
            decide(&rules, false, Attempted::Status(503, None)),
            Decision::Accept
        );
        assert_eq!(
            decide(&rules, false, Attempted::Failed(ErrorKind::ConnectionReset)),
            Decision::Accept
        );
        assert_eq!(
            decide(&rules, false, Attempted::Failed(ErrorKind::Dns)),
            Decision::Retry
        );
        let brave = Rules::from(&RetryRules {
            non_idempotent: true,
            ..RetryRules::default()
        });
        assert_eq!(
            decide(&brave, false, Attempted::Status(503, None)),
            Decision::Retry
        );
    }

    #[test]
    fn every_kind_has_a_name_that_reads_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("dns"), None);
    }

    proptest! {
        /// With the default rules, the client decides as rempart's
        /// `http_decision` (seed 003's classification in the core), except
        /// that a `Retry-After` is honoured on every retried status.
        #[test]
        fn default_rules_agree_with_the_cores_http_decision(
            code in 100u16..600,
            retry_after in proptest::option::of(0u64..100),
            kind in 0usize..5,
            transport in any::<bool>(),
        ) {
            let rules = Rules::from(&RetryRules::default());
            let ra = retry_after.map(Duration::from_secs);
            let attempted = if transport {
                Attempted::Failed(ErrorKind::ALL[kind])
            } else {
                Attempted::Status(code, ra.filter(|_| matches!(code, 429 | 503)))
            };
            prop_assert_eq!(decide(&rules, true, attempted), http_decision(&to_outcome(attempted)));
        }
    }
}
