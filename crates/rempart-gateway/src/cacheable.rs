//! Whether an answer may be kept for stale fallbacks, and under which key:
//! pure functions over a request's and a response's headers.
//!
//! The stale store serves one client what the upstream told another, so it
//! keeps only what a shared cache may keep (RFC 9111 §3): never an answer
//! marked `private` or `no-store`, one that sets a cookie, or one to a request
//! carrying credentials, unless the service opts in with
//! `fallback.stale_cache_private = true`; then the credentials become part of
//! the key, so each user only ever gets their own answer back.
//!
//! The key is needed before the answer is known (a failed request looks it
//! up), but `Vary` is only known from the answer. So lookups take two steps:
//! the request's *base key* ([`request_key`]) holds either the answer or the
//! list of header names it varies on; with those names, [`variant_key`] gives
//! the key of the answer for this request's values of those headers.
//!
//! Credentials and varying values enter keys only as SHA-256 digests: keys
//! live in Redis, and a bearer token must not be readable there.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Uri};
use sha2::{Digest, Sha256};

/// The response headers kept with a stale answer: what a client needs to
/// read the body (its type, encoding and language) and to revalidate it.
pub const KEPT_HEADERS: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::VARY,
];

/// Request headers the gateway rewrites before forwarding: an answer that
/// varies on one of them is not kept, since the value the upstream saw is
/// not the one a later client sends.
const REWRITTEN: [&str; 5] = [
    "x-forwarded-for",
    "forwarded",
    "x-request-id",
    "connection",
    "te",
];

/// The key under which a request's stale answer is looked up or kept, or
/// `None` when it may have none: not a GET or HEAD (HEAD reads GET's answer),
/// a request marked `no-store`, or one carrying credentials (`Authorization`,
/// `Cookie`) when the service has not opted in with `private`.
pub fn request_key(
    service: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    private: bool,
) -> Option<String> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    if directives(headers).any(|(name, _)| name.eq_ignore_ascii_case("no-store")) {
        return None;
    }
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(24 + service.len() + pq.len());
    for part in ["rempart:stale:", service, ":GET:", pq] {
        key.push_str(part);
    }
    if has_credentials(headers) {
        if !private {
            return None;
        }
        let mut h = Sha256::new();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            h.update(name.as_str());
            for v in headers.get_all(&name) {
                h.update(b"\0");
                h.update(v.as_bytes());
            }
            h.update(b"\n");
        }
        key.push_str(":user:");
        push_hex(&mut key, &h.finalize());
    }
    Some(key)
}

/// Whether the request carries credentials a shared cache must not mix up.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

/// How an answer may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// The request headers it varies on (lowercase, in the answer's order).
    pub vary: Vec<HeaderName>,
    /// The oldest it may be served, from `stale-if-error` (RFC 5861): its
    /// freshness lifetime plus that many seconds. `None`: the cache's TTL.
    pub serve_for: Option<Duration>,
}

/// Whether the answer (`status`, `response` headers) to a request with
/// `request` headers may be kept for stale fallbacks, and how. `private`
/// is the service's `fallback.stale_cache_private`.
pub fn response_keep(
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    private: bool,
) -> Option<Keep> {
    if status != StatusCode::OK {
        return None;
    }
    // Per-user answers are kept only under a per-user key.
    let per_user = private && has_credentials(request);
    let mut max_age = None;
    let mut s_maxage = None;
    let mut stale_if_error = None;
    for (name, value) in directives(response) {
        match name.to_ascii_lowercase().as_str() {
            "no-store" => return None,
            "private" if !per_user => return None,
            "max-age" => max_age = value.and_then(seconds),
            "s-maxage" => s_maxage = value.and_then(seconds),
            // Malformed: the strictest reading, no stale answer at all.
            "stale-if-error" => stale_if_error = Some(value.and_then(seconds).unwrap_or(0)),
            _ => {}
        }
    }
    if response.contains_key(header::SET_COOKIE) && !per_user {
        return None;
    }
    let mut vary = Vec::new();
    for value in response.get_all(header::VARY) {
        let text = value.to_str().ok()?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if REWRITTEN.contains(&name.as_str()) {
                return None;
            }
            if !vary.contains(&name) {
                vary.push(name);
            }
        }
    }
    // A shared cache reads s-maxage before max-age (RFC 9111 §5.2.2.10).
    let fresh_for = s_maxage.or(max_age).unwrap_or(0);
    let serve_for = stale_if_error.map(|n| Duration::from_secs(fresh_for.saturating_add(n)));
    Some(Keep { vary, serve_for })
}

/// The key of the answer kept under `base` for a request whose values of the
/// `vary` headers are those in `request`. `base` itself when `vary` is empty.
pub fn variant_key(base: &str, vary: &[HeaderName], request: &HeaderMap) -> String {
    if vary.is_empty() {
        return base.to_owned();
    }
    let mut h = Sha256::new();
    for name in vary {
        h.update(name.as_str());
        for v in request.get_all(name) {
            h.update(b"\0");
            h.update(v.as_bytes());
        }
        h.update(b"\n");
    }
    let mut key = String::with_capacity(base.len() + 70);
    key.push_str(base);
    key.push_str(":vary:");
    push_hex(&mut key, &h.finalize());
    key
}

/// The `Cache-Control` directives of `headers`, as (name, value) pairs;
/// a quoted value is returned without its quotes.
pub fn directives(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_outside_quotes)
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            })
        })
}

/// `text` cut at the commas that are not inside a quoted string
/// (`private="set-cookie, x"` is one directive).
fn split_outside_quotes(text: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter()
}

/// A delta-seconds value (RFC 9111 §1.2.2); an overflow saturates.
fn seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse().unwrap_or(u64::MAX))
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn key(headers: &[(&str, &str)], private: bool) -> Option<String> {
        request_key(
            "s",
            &Method::GET,
            &"/r?x=1".parse().unwrap(),
            &h(headers),
            private,
        )
    }

    fn keep(req: &[(&str, &str)], resp: &[(&str, &str)], private: bool) -> Option<Keep> {
        response_keep(&h(req), StatusCode::OK, &h(resp), private)
    }

    #[test]
    fn requests_with_credentials_have_no_key_unless_the_service_opts_in() {
        assert_eq!(
            key(&[], false).as_deref(),
            Some("rempart:stale:s:GET:/r?x=1")
        );
        assert_eq!(key(&[("authorization", "Bearer alice")], false), None);
        assert_eq!(key(&[("cookie", "sid=1")], false), None);
        let alice = key(&[("authorization", "Bearer alice")], true).unwrap();
        let bob = key(&[("authorization", "Bearer bob")], true).unwrap();
        assert_ne!(alice, bob);
        assert_ne!(Some(alice.clone()), key(&[], true));
        assert!(
            !alice.contains("alice"),
            "a token must not be readable in a key: {alice}"
        );
    }

    #[test]
    fn only_gets_and_heads_without_no_store_have_a_key() {
        let uri: Uri = "/r".parse().unwrap();
        let none = HeaderMap::new();
        assert!(request_key("s", &Method::POST, &uri, &none, false).is_none());
        assert_eq!(
            request_key("s", &Method::HEAD, &uri, &none, false),
            request_key("s", &Method::GET, &uri, &none, false)
        );
        assert_eq!(key(&[("cache-control", "No-Store")], false), None);
    }

    #[test]
    fn private_no_store_and_set_cookie_answers_are_not_kept() {
        assert!(keep(&[], &[], false).is_some());
        assert_eq!(keep(&[], &[("cache-control", "private")], false), None);
        assert_eq!(
            keep(
                &[],
                &[("cache-control", "max-age=5, private=\"x, y\"")],
                false
            ),
            None
        );
        assert_eq!(keep(&[], &[("cache-control", "no-store")], true), None);
        assert_eq!(keep(&[], &[("set-cookie", "sid=2")], false), None);
        // Opted in, they are kept, but only for a request keyed per user.
        assert_eq!(keep(&[], &[("cache-control", "private")], true), None);
        let alice = [("authorization", "Bearer alice")];
        assert!(keep(&alice, &[("cache-control", "private")], true).is_some());
        assert!(keep(&alice, &[("set-cookie", "sid=2")], true).is_some());
        assert_eq!(
            response_keep(&h(&[]), StatusCode::CREATED, &h(&[]), false),
            None
        );
    }

    #[test]
    fn vary_names_are_kept_and_vary_star_is_never_stored() {
        let k = keep(
            &[],
            &[
                ("vary", "Accept-Language, accept-encoding"),
                ("vary", "Accept-Language"),
            ],
            false,
        );
        assert_eq!(
            k.unwrap().vary,
            vec![header::ACCEPT_LANGUAGE, header::ACCEPT_ENCODING]
        );
        assert_eq!(keep(&[], &[("vary", "accept, *")], false), None);
        assert_eq!(keep(&[], &[("vary", "X-Forwarded-For")], false), None);
    }

    #[test]
    fn stale_if_error_adds_to_the_freshness_lifetime() {
        let bound = |cc: &str| {
            keep(&[], &[("cache-control", cc)], false)
                .unwrap()
                .serve_for
        };
        assert_eq!(bound("max-age=60"), None);
        assert_eq!(bound("stale-if-error=30"), Some(Duration::from_secs(30)));
        assert_eq!(
            bound("max-age=60, stale-if-error=30"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            bound("max-age=60, s-maxage=10, stale-if-error=\"5\""),
            Some(Duration::from_secs(15))
        );
        assert_eq!(bound("stale-if-error=soon"), Some(Duration::ZERO));
    }

    #[test]
    fn variant_keys_follow_the_varied_values_only() {
        let vary = [header::ACCEPT_LANGUAGE];
        let fr = h(&[("accept-language", "fr"), ("user-agent", "a")]);
        let fr2 = h(&[("accept-language", "fr"), ("user-agent", "b")]);
        let en = h(&[("accept-language", "en")]);
        assert_eq!(variant_key("b", &vary, &fr), variant_key("b", &vary, &fr2));
        assert_ne!(variant_key("b", &vary, &fr), variant_key("b", &vary, &en));
        assert_ne!(
            variant_key("b", &vary, &en),
            variant_key("b", &vary, &HeaderMap::new())
        );
        assert_eq!(variant_key("b", &[], &fr), "b");
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~+/=-]{1,24}"
    }

    proptest! {
        #[test]
        fn no_credentialed_request_is_keyed_without_the_opt_in(tok in token(), cookie in any::<bool>()) {
            let name = if cookie { "cookie" } else { "authorization" };
            prop_assert_eq!(key(&[(name, &tok)], false), None);
        }

        #[test]
        fn opted_in_keys_differ_per_credential(a in token(), b in token()) {
            prop_assume!(a != b);
            let ka = key(&[("authorization", &a)], true).unwrap();
            let kb = key(&[("authorization", &b)], true).unwrap();
            prop_assert_ne!(&ka, &kb);
            // The token is not in the key, only its digest.
            let digest = ka.strip_prefix("rempart:stale:s:GET:/r?x=1:user:").unwrap_or("");
            prop_assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
        }

        #[test]
        fn answers_varying_on_a_header_never_share_a_key_across_its_values(a in token(), b in token()) {
            prop_assume!(a != b);
            let vary = [header::ACCEPT_LANGUAGE];
            prop_assert_ne!(
                variant_key("k", &vary, &h(&[("accept-language", &a)])),
                variant_key("k", &vary, &h(&[("accept-language", &b)]))
            );
        }

        #[test]
        fn a_private_or_cookie_setting_answer_to_an_anonymous_request_is_never_kept(
            extra in "[a-z0-9=, -]{0,20}",
            set_cookie in any::<bool>(),
            opt_in in any::<bool>(),
        ) {
            let resp = if set_cookie {
                h(&[("set-cookie", "sid=1"), ("cache-control", &extra)])
            } else {
                h(&[("cache-control", &format!("{extra}, private"))])
            };
            prop_assert_eq!(response_keep(&HeaderMap::new(), StatusCode::OK, &resp, opt_in), None);
        }

        #[test]
        fn any_cache_control_text_parses_without_panicking(cc in "\\PC{0,40}") {
            if let Ok(v) = HeaderValue::from_str(&cc) {
                let mut m = HeaderMap::new();
                m.insert(header::CACHE_CONTROL, v);
                let _ = response_keep(&HeaderMap::new(), StatusCode::OK, &m, true);
                let _ = request_key("s", &Method::GET, &Uri::from_static("/"), &m, true);
            }
        }
    }
}
