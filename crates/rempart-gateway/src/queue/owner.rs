//! Who a job belongs to, so no client can claim or read another's.
//!
//! An `Idempotency-Key` is chosen by the client: global per service, client
//! B sending client A's key would get A's job and could poll A's result. So
//! every job has an owner, a SHA-256 fingerprint of the client's credentials
//! (`Authorization` and `Cookie`, never kept in clear) or, when it sends
//! none, of its address. Keys are scoped per (service, owner, key), and a
//! poll from anyone but the owner answers as if the job did not exist.

use std::fmt;
use std::net::IpAddr;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::decision::JobState;

/// The headers that identify a client; hashed, in this order.
const CREDENTIALS: [&str; 2] = ["authorization", "cookie"];

/// A job owner's fingerprint: 32 bytes of SHA-256, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner([u8; 32]);

impl Owner {
    /// The owner of a request carrying `headers` from client address `client`
    /// (the address the gateway resolved through its trusted proxies): its
    /// credentials when it sends any, else its address. Clients behind one
    /// address without credentials are one owner.
    ///
    /// ```
    /// use rempart_gateway::queue::owner::Owner;
    /// let mut h = http::HeaderMap::new();
    /// h.insert("authorization", "Bearer alice".parse().unwrap());
    /// assert_eq!(Owner::of(&h, [10, 0, 0, 1].into()), Owner::of(&h, [10, 0, 0, 2].into()));
    /// ```
    pub fn of(headers: &HeaderMap, client: IpAddr) -> Owner {
        Owner::identified_by(headers, client, &[])
    }

    /// As [`Owner::of`], with only the cookies named in `cookies` (a
    /// service's `owner_cookies`) counted among the credentials, so that
    /// other cookies changing between requests do not change the owner.
    /// An empty `cookies` counts the whole `Cookie` header.
    ///
    /// ```
    /// use rempart_gateway::queue::owner::Owner;
    /// let with = |cookie: &str| {
    ///     let mut h = http::HeaderMap::new();
    ///     h.insert("cookie", cookie.parse().unwrap());
    ///     Owner::identified_by(&h, [10, 0, 0, 1].into(), &["session".to_owned()])
    /// };
    /// assert_eq!(with("session=abc; _ga=1"), with("_ga=2; session=abc"));
    /// assert_ne!(with("session=abc"), with("session=xyz"));
    /// ```
    pub fn identified_by(headers: &HeaderMap, client: IpAddr, cookies: &[String]) -> Owner {
        let mut h = Sha256::new();
        let mut any = false;
        let mut credential = |h: &mut Sha256, name: &[u8], value: &[u8]| {
            any = true;
            // Lengths first, so no two header sets hash the same input.
            h.update(name);
            h.update((value.len() as u64).to_be_bytes());
            h.update(value);
        };
        for name in CREDENTIALS {
            if name == "cookie" && !cookies.is_empty() {
                // Only the named cookies, in the configured order, whatever
                // order the client sent them in.
                for wanted in cookies {
                    for value in headers.get_all(name) {
                        for (n, v) in cookie_pairs(value.as_bytes()) {
                            if n == wanted.as_bytes() {
                                credential(&mut h, b"cookie-pair", n);
                                credential(&mut h, b"cookie-value", v);
                            }
                        }
                    }
                }
                continue;
            }
            for value in headers.get_all(name) {
                credential(&mut h, name.as_bytes(), value.as_bytes());
            }
        }
        if !any {
            let mut h = Sha256::new();
            h.update(b"ip\0");
            h.update(client.to_string().as_bytes());
            return Owner(h.finalize().into());
        }
        let mut outer = Sha256::new();
        outer.update(b"credentials\0");
        outer.update(h.finalize());
        Owner(outer.finalize().into())
    }

    /// The store key for this owner's `Idempotency-Key`: the same key from
    /// two owners names two jobs.
    pub fn scope(&self, idempotency_key: &str) -> String {
        format!("{self}:{idempotency_key}")
    }

    /// Reads back the hex form [`Display`](fmt::Display) writes.
    pub fn from_hex(s: &str) -> Option<Owner> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Owner(out))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({self})")
    }
}

/// The `name=value` pairs of one `Cookie` header, trimmed (RFC 6265's
/// `; `-separated list; a pair without `=` is skipped).
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|b| *b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// What `asker` may see of a job whose store holds `stored`, owned by
/// `owner`: all of it when it is the owner, nothing otherwise. A job with no
/// owner on record is hidden too: a poll fails closed.
pub fn visible_to(
    stored: Option<JobState>,
    owner: Option<Owner>,
    asker: &Owner,
) -> Option<JobState> {
    match owner {
        Some(o) if o == *asker => stored,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn credentials_decide_the_owner_wherever_the_client_connects_from() {
        let alice = headers(&[("authorization", "Bearer alice")]);
        let bob = headers(&[("authorization", "Bearer bob")]);
        assert_eq!(Owner::of(&alice, A), Owner::of(&alice, B));
        assert_ne!(Owner::of(&alice, A), Owner::of(&bob, A));
        let cookie = headers(&[("cookie", "session=alice")]);
        assert_ne!(Owner::of(&cookie, A), Owner::of(&alice, A));
        let both = headers(&[("authorization", "Bearer alice"), ("cookie", "s=1")]);
        assert_ne!(Owner::of(&both, A), Owner::of(&alice, A));
        // Unrelated headers do not change who the client is.
        let traced = headers(&[("authorization", "Bearer alice"), ("x-trace", "1")]);
        assert_eq!(Owner::of(&traced, A), Owner::of(&alice, A));
    }

    #[test]
    fn with_owner_cookies_only_the_session_cookies_say_who_the_client_is() {
        let session = ["session".to_owned()];
        let of = |cookie: &str| Owner::identified_by(&headers(&[("cookie", cookie)]), A, &session);
        // Other cookies, their order and spacing change nothing.
        assert_eq!(of("session=alice; _ga=1"), of("_ga=2;session=alice"));
        assert_eq!(of("session=alice"), of("theme=dark; session=alice"));
        // The session cookie does; a cookie whose name merely contains it does not count.
        assert_ne!(of("session=alice"), of("session=bob"));
        assert_ne!(of("session=alice"), of("xsession=alice"));
        // Without the session cookie (or any credential) the address is the owner.
        assert_eq!(of("_ga=1"), Owner::of(&HeaderMap::new(), A));
        // Authorization still counts beside it.
        let both = headers(&[("cookie", "session=alice"), ("authorization", "Bearer a")]);
        assert_ne!(
            Owner::identified_by(&both, A, &session),
            of("session=alice")
        );
        // Without owner_cookies, every cookie counts, as before.
        let all = |cookie: &str| Owner::of(&headers(&[("cookie", cookie)]), A);
        assert_ne!(all("session=alice; _ga=1"), all("session=alice; _ga=2"));
    }

    #[test]
    fn without_credentials_the_address_is_the_owner() {
        let none = HeaderMap::new();
        assert_eq!(Owner::of(&none, A), Owner::of(&none, A));
        assert_ne!(Owner::of(&none, A), Owner::of(&none, B));
        // An address is not a credential that happens to spell the same.
        let spelled = headers(&[("authorization", "10.0.0.1")]);
        assert_ne!(Owner::of(&spelled, A), Owner::of(&none, A));
    }

    #[test]
    fn the_fingerprint_never_shows_the_credentials() {
        let secret = headers(&[("authorization", "Bearer s3cr3t-token")]);
        let o = Owner::of(&secret, A);
        let shown = format!("{o} {o:?} {}", o.scope("k"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(Owner::from_hex(&o.to_string()), Some(o));
        assert_eq!(Owner::from_hex("zz"), None);
    }

    #[test]
    fn the_same_key_from_two_owners_is_two_scoped_keys() {
        let (a, b) = (
            Owner::of(&HeaderMap::new(), A),
            Owner::of(&HeaderMap::new(), B),
        );
        assert_ne!(a.scope("k-1"), b.scope("k-1"));
        assert_eq!(a.scope("k-1"), a.scope("k-1"));
    }

    #[test]
    fn only_the_owner_sees_a_job() {
        let (a, b) = (
            Owner::of(&HeaderMap::new(), A),
            Owner::of(&HeaderMap::new(), B),
        );
        let q = Some(JobState::Queued);
        assert_eq!(visible_to(q.clone(), Some(a), &a), q);
        assert_eq!(visible_to(q.clone(), Some(a), &b), None);
        assert_eq!(visible_to(q, None, &a), None, "no owner on record: hidden");
    }
}
