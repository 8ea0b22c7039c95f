//! A deferred request as it travels through the broker: versioned, and
//! decoded strictly, so a message the worker cannot read is dead-lettered as
//! poison instead of being replayed half-understood.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::{Deserialize, Serialize};

/// The encoding version this gateway writes and reads.
pub const JOB_VERSION: u32 = 1;

/// A job's id: a UUIDv7, so the time it was accepted can be read back from
/// it (a poll can tell an expired job, 410, from one never seen, 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A new id for a job accepted at `now`.
    pub fn new(now: SystemTime) -> JobId {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
        JobId(uuid::Uuid::new_v7(ts))
    }

    /// When the job was accepted (millisecond precision).
    pub fn accepted_at(&self) -> SystemTime {
        let (secs, nanos) = self
            .0
            .get_timestamp()
            .map(|t| t.to_unix())
            .unwrap_or((0, 0));
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = String;

    /// Only the UUIDv7 form the gateway hands out: anything else is no job.
    fn from_str(s: &str) -> Result<JobId, String> {
        let id = uuid::Uuid::try_parse(s).map_err(|e| format!("job id {s:?}: {e}"))?;
        if id.get_version_num() != 7 {
            return Err(format!(
                "job id {s:?} is not one this gateway issues (a UUIDv7)"
            ));
        }
        Ok(JobId(id))
    }
}

/// A request the gateway deferred, to be replayed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id, also the AMQP `message_id`.
    pub id: JobId,
    /// The HTTP method.
    pub method: String,
    /// The path, starting with `/`.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// End-to-end headers in order (hop-by-hop ones are dropped on capture).
    pub headers: Vec<(String, String)>,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// The JSON head of an encoded job; the body follows it raw after a newline,
/// so binary bodies are not inflated by a text encoding.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    v: u32,
    id: String,
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
}

impl Job {
    /// Captures a request: drops the hop-by-hop headers and takes the
    /// `Idempotency-Key`. A header value that is not text is refused rather
    /// than replayed altered.
    pub fn capture(
        id: JobId,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<Job, String> {
        let mut headers = headers.clone();
        crate::headers::strip_hop_by_hop(&mut headers);
        let mut kept = Vec::with_capacity(headers.len());
        for (name, value) in &headers {
            let value = value.to_str().map_err(|_| {
                format!("header {name} is not text; it cannot be queued for a replay")
            })?;
            kept.push((name.as_str().to_owned(), value.to_owned()));
        }
        let idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Job {
            id,
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: kept,
            idempotency_key,
            body,
        })
    }

    /// The message payload.
    pub fn encode(&self) -> Vec<u8> {
        let head = Head {
            v: JOB_VERSION,
            id: self.id.to_string(),
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            idempotency_key: self.idempotency_key.clone(),
        };
        // Compact JSON never holds a raw newline: it ends the head unambiguously.
        let mut out = serde_json::to_vec(&head).expect("a job head always serializes");
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads a payload back; any deviation is an error saying what is wrong
    /// (the worker dead-letters the message as poison with it).
    pub fn decode(payload: &[u8]) -> Result<Job, String> {
        let split = payload
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no job head: the payload has no newline after a JSON head")?;
        let head: Head = serde_json::from_slice(&payload[..split])
            .map_err(|e| format!("unreadable job head: {e}"))?;
        if head.v != JOB_VERSION {
            return Err(format!(
                "job encoding version {} is not the {JOB_VERSION} this worker reads",
                head.v
            ));
        }
        let id: JobId = head.id.parse()?;
        http::Method::from_bytes(head.method.as_bytes())
            .map_err(|_| format!("job {id}: {:?} is not an HTTP method", head.method))?;
        if !head.path.starts_with('/') {
            return Err(format!(
                "job {id}: path {:?} does not start with /",
                head.path
            ));
        }
        for (name, value) in &head.headers {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("job {id}: {name:?} is not a header name"))?;
            http::HeaderValue::from_str(value)
                .map_err(|_| format!("job {id}: header {name} has an invalid value"))?;
        }
        Ok(Job {
            id,
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            idempotency_key: head.idempotency_key,
            body: payload[split + 1..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123)
    }

    fn job(body: &[u8]) -> Job {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "image/png".parse().unwrap());
        headers.insert("idempotency-key", "k-1".parse().unwrap());
        headers.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        Job::capture(
            JobId::new(t0()),
            &http::Method::POST,
            &"/optimize/img?size=2".parse().unwrap(),
            &headers,
            body.to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn capture_keeps_end_to_end_headers_and_the_idempotency_key() {
        let j = job(b"png");
        let names: Vec<&str> = j.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "idempotency-key"]);
        assert_eq!(j.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(j.path, "/optimize/img");
        assert_eq!(j.query.as_deref(), Some("size=2"));
    }

    #[test]
    fn a_job_round_trips_with_a_binary_body() {
        let j = job(b"\x89PNG\r\n\x1a\n\0\xff");
        assert_eq!(Job::decode(&j.encode()).unwrap(), j);
    }

    #[test]
    fn the_id_tells_when_the_job_was_accepted() {
        let id = JobId::new(t0());
        assert_eq!(id.accepted_at(), t0());
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        let v4 = "7d444840-9dc0-41b2-9f8c-5a2a5e3c7e44".parse::<JobId>();
        assert!(v4.unwrap_err().contains("UUIDv7"));
    }

    #[test]
    fn bad_payloads_are_refused_with_what_is_wrong() {
        let good = String::from_utf8(job(b"").encode()).unwrap();
        let cases = [
            ("no newline".to_owned(), "no job head"),
            ("{not json}\nbody".to_owned(), "unreadable job head"),
            (good.replace("\"v\":1", "\"v\":2"), "version 2"),
            (
                good.replace("\"path\":\"/", "\"path\":\""),
                "does not start with /",
            ),
            (
                good.replace("\"method\":\"POST\"", "\"method\":\"P OST\""),
                "not an HTTP method",
            ),
            (
                good.replace("\"v\":1", "\"v\":1,\"extra\":true"),
                "unknown field",
            ),
            (good.replace("\"id\":\"", "\"id\":\"x"), "job id"),
        ];
        for (payload, expected) in cases {
            let e = Job::decode(payload.as_bytes()).unwrap_err();
            assert!(e.contains(expected), "{payload}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_body_and_query_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            query in proptest::option::of("[a-z0-9=&%\n\"]{0,20}"),
            value in "[ -~]{0,30}",
        ) {
            let mut j = job(&body);
            j.query = query;
            j.headers.push(("x-note".into(), value));
            prop_assert_eq!(Job::decode(&j.encode()).unwrap(), j);
        }

        #[test]
        fn garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Job::decode(&payload);
        }
    }
}
