//! What the client reads: the `202 Accepted` for a deferred request and the
//! answers to `GET /jobs/{id}`, as plain responses built from the pure
//! [`Poll`] (the HTTP plumbing stays in the proxy).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::decision::{JobState, Poll};
use super::job::JobId;

/// The header a replay carries with its job id, the same on every attempt
/// and redelivery, so an upstream can deduplicate (with `Idempotency-Key`).
pub const JOB_ID_HEADER: &str = "x-job-id";

/// The header telling a poll's answer is the stored result of a done job.
pub const JOB_STATUS_HEADER: &str = "x-job-status";

fn json(status: StatusCode, value: serde_json::Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `202 Accepted`, `Location: /jobs/{id}`, `{"job_id": …, "status": "queued"}`:
/// sent only once the broker has confirmed the job.
pub fn accepted(id: JobId) -> Response<Bytes> {
    let mut r = json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "job_id": id.to_string(), "status": "queued" }),
    );
    let location =
        HeaderValue::try_from(format!("/jobs/{id}")).expect("a UUID path is a valid header value");
    r.headers_mut().insert(header::LOCATION, location);
    r
}

/// The answer to `GET /jobs/{id}`: the upstream's stored answer once done
/// (its status, content type and body, with `X-Job-Status: done`), the
/// job's state while it waits or once dead, 404 unknown, 410 expired.
pub fn poll_answer(poll: Poll) -> Response<Bytes> {
    match poll {
        Poll::Found(JobState::Done(stored)) => {
            let mut r = Response::new(Bytes::from(stored.body));
            *r.status_mut() =
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(ct) = stored
                .content_type
                .and_then(|c| HeaderValue::try_from(c).ok())
            {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r.headers_mut()
                .insert(JOB_STATUS_HEADER, HeaderValue::from_static("done"));
            r
        }
        // `attempt` is the attempt the job is waiting for.
        Poll::Found(JobState::Queued) => json(
            StatusCode::OK,
            serde_json::json!({ "status": "queued", "attempt": 1 }),
        ),
        Poll::Found(JobState::Retrying { attempt, error }) => json(
            StatusCode::OK,
            serde_json::json!({ "status": "retrying", "attempt": attempt, "last_error": error }),
        ),
        Poll::Found(JobState::Dead { error }) => json(
            StatusCode::OK,
            serde_json::json!({ "status": "dead", "error": error }),
        ),
        Poll::Gone => json(
            StatusCode::GONE,
            serde_json::json!({ "error": "job_expired", "message": "this job's result is no longer kept (result_ttl)" }),
        ),
        Poll::Unknown => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "unknown_job", "message": "no job with this id" }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::queue::decision::StoredAnswer;

    fn body(r: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(r.body()).unwrap()
    }

    #[test]
    fn accepted_points_at_the_job() {
        let id = JobId::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000));
        let r = accepted(id);
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(
            r.headers()[header::LOCATION],
            format!("/jobs/{id}").as_str()
        );
        assert_eq!(
            body(&r),
            serde_json::json!({ "job_id": id.to_string(), "status": "queued" })
        );
    }

    #[test]
    fn a_done_job_answers_with_the_stored_answer_byte_for_byte() {
        let r = poll_answer(Poll::Found(JobState::Done(StoredAnswer {
            status: 201,
            content_type: Some("image/webp".into()),
            body: b"RIFF\0\xffWEBP".to_vec(),
        })));
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "image/webp");
        assert_eq!(r.headers()[JOB_STATUS_HEADER], "done");
        assert_eq!(&r.body()[..], b"RIFF\0\xffWEBP");
    }

    #[test]
    fn waiting_dead_unknown_and_expired_jobs_say_so() {
        let q = poll_answer(Poll::Found(JobState::Queued));
        assert_eq!(
            (q.status(), body(&q)),
            (
                StatusCode::OK,
                serde_json::json!({"status": "queued", "attempt": 1})
            )
        );
        let r = poll_answer(Poll::Found(JobState::Retrying {
            attempt: 3,
            error: "503".into(),
        }));
        assert_eq!(body(&r)["status"], "retrying");
        assert_eq!(body(&r)["attempt"], 3);
        let d = poll_answer(Poll::Found(JobState::Dead {
            error: "gave up after 5 attempts".into(),
        }));
        assert_eq!(
            body(&d),
            serde_json::json!({"status": "dead", "error": "gave up after 5 attempts"})
        );
        assert_eq!(poll_answer(Poll::Unknown).status(), StatusCode::NOT_FOUND);
        assert_eq!(poll_answer(Poll::Gone).status(), StatusCode::GONE);
    }
}
