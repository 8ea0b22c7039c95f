//! The copy of a request kept for its next attempt.
//!
//! `Request::try_clone` (reqwest 0.12) sets the copy's timeout through
//! `timeout_mut`, which makes the copy a fresh extension map and a boxed
//! entry even when there is no timeout, then throws them away when it
//! copies the extensions over: about 1.7 k of the 2 k instructions of every
//! copy, paid on every call whether or not it is retried.

use reqwest::Request;

/// A copy of `req` for another attempt: method, URL, headers, version,
/// timeout and body, which is all reqwest reads of a request when it sends
/// one (its own extensions hold only the timeout). A request with a body is
/// copied by reqwest itself, so a reusable body is shared, not duplicated;
/// `None` for a streamed body, which cannot be sent twice.
pub(crate) fn copy_for_retry(req: &Request) -> Option<Request> {
    if req.body().is_some() {
        return req.try_clone();
    }
    let mut copy = Request::new(req.method().clone(), req.url().clone());
    // `Request::new` made an empty map already: cloning an empty one would
    // only copy its empty tables over it.
    if !req.headers().is_empty() {
        *copy.headers_mut() = req.headers().clone();
    }
    *copy.version_mut() = req.version();
    if let Some(t) = req.timeout() {
        *copy.timeout_mut() = Some(*t);
    }
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::copy_for_retry;
    use http::{HeaderValue, Method, Version};
    use reqwest::{Request, Url};
    use std::time::Duration;

    fn request(method: Method) -> Request {
        let mut req = Request::new(
            method,
            Url::parse("http://api.example.com:8080/movies?page=2").unwrap(),
        );
        req.headers_mut()
            .insert("x-trace", HeaderValue::from_static("abc"));
        req.headers_mut()
            .append("accept", HeaderValue::from_static("text/plain"));
        req.headers_mut()
            .append("accept", HeaderValue::from_static("application/json"));
        *req.version_mut() = Version::HTTP_2;
        req
    }

    /// Everything reqwest exposes of the two copies, side by side.
    fn same(a: &Request, b: &Request) {
        assert_eq!(a.method(), b.method());
        assert_eq!(a.url(), b.url());
        assert_eq!(a.headers(), b.headers());
        assert_eq!(a.version(), b.version());
        assert_eq!(a.timeout(), b.timeout());
        assert_eq!(
            a.body().map(|b| b.as_bytes()),
            b.body().map(|b| b.as_bytes())
        );
    }

    #[test]
    fn a_copy_without_a_body_is_what_reqwest_would_copy() {
        for method in [
            Method::GET,
            Method::DELETE,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            let mut req = request(method);
            same(&copy_for_retry(&req).unwrap(), &req.try_clone().unwrap());
            *req.timeout_mut() = Some(Duration::from_millis(1500));
            let copy = copy_for_retry(&req).unwrap();
            assert_eq!(copy.timeout(), Some(&Duration::from_millis(1500)));
            same(&copy, &req.try_clone().unwrap());
        }
    }

    #[test]
    fn a_copy_with_a_body_carries_the_same_bytes() {
        let mut req = request(Method::POST);
        *req.body_mut() = Some(reqwest::Body::from("{\"title\":\"Alien\"}"));
        let copy = copy_for_retry(&req).unwrap();
        assert_eq!(
            copy.body().and_then(|b| b.as_bytes()),
            Some(&b"{\"title\":\"Alien\"}"[..])
        );
        same(&copy, &req.try_clone().unwrap());
    }
}
