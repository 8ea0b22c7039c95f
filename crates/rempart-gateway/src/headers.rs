//! Header hygiene on the way through: who the client is, hop-by-hop headers,
//! `X-Forwarded-For` / `Forwarded`, and the request id.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use rempart::rng::{Rng, SplitMix64};

/// The request id header, propagated when the client sends a sane one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `X-Forwarded-For`. Named once: a header looked up by `&str` is parsed
/// into a name on every call.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Who sent a request: the connection's peer, whether that peer is a
/// trusted proxy, and the client it speaks for. Worked out once per request,
/// and read by everything that needs an address (rate limit, forwarding
/// headers), so they all agree, IPv4-mapped peers included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The connection's peer, IPv4-mapped IPv6 as IPv4.
    pub peer: IpAddr,
    /// Whether `peer` is in the trusted proxies.
    pub peer_trusted: bool,
    /// The client, as [`client_ip`] finds it.
    pub client: IpAddr,
}

impl ClientAddr {
    /// The addresses for a request from `peer` carrying `headers`.
    pub fn of(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        let peer = canonical(peer.ip());
        let peer_trusted = is_trusted(&peer);
        let mut client = peer;
        if peer_trusted {
            // Every X-Forwarded-For line in order (RFC 9110 5.3: one list),
            // walked right to left.
            let lines: Vec<&HeaderValue> = headers.get_all(X_FORWARDED_FOR).iter().collect();
            let hops = lines.into_iter().rev().flat_map(|v| {
                v.to_str()
                    .unwrap_or("")
                    .rsplit(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
            });
            for hop in hops {
                match hop.parse::<IpAddr>().map(canonical) {
                    Ok(ip) => {
                        client = ip;
                        if !is_trusted(&ip) {
                            break;
                        }
                    }
                    // Garbage: the hop that wrote it is the last one we can vouch for.
                    Err(_) => break,
                }
            }
        }
        ClientAddr {
            peer,
            peer_trusted,
            client,
        }
    }

    /// The key the per-client rate limit counts under: the client's IPv4
    /// address, or its IPv6 network of `ipv6_prefix` bits (one host usually
    /// holds a whole /64, and could otherwise rotate past the limit).
    ///
    /// ```
    /// use rempart_gateway::headers::ClientAddr;
    ///
    /// let a = ClientAddr::of("[2001:db8::1]:1".parse().unwrap(), &Default::default(), &[]);
    /// let b = ClientAddr::of("[2001:db8::ffff]:1".parse().unwrap(), &Default::default(), &[]);
    /// assert_eq!(a.rate_key(64), b.rate_key(64));
    /// assert_ne!(a.rate_key(128), b.rate_key(128));
    /// ```
    pub fn rate_key(&self, ipv6_prefix: u8) -> IpAddr {
        match self.client {
            IpAddr::V6(v6) => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }
}

/// The client's address.
///
/// From a peer outside `trusted`, the peer itself, whatever `X-Forwarded-For`
/// says (so a forged header gains nothing). From a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy:
/// entries to its left were written by the client and can be anything.
///
/// ```
/// use http::HeaderMap;
/// use rempart_gateway::headers::client_ip;
///
/// let trusted = ["10.0.0.0/8".parse().unwrap()];
/// let mut h = HeaderMap::new();
/// h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
/// // Through the trusted load balancer 10.0.0.2: the client is 203.0.113.7.
/// assert_eq!(client_ip("10.0.0.2:5000".parse().unwrap(), &h, &trusted).to_string(), "203.0.113.7");
/// // Straight from the internet: the header is ignored.
/// assert_eq!(client_ip("198.51.100.1:5000".parse().unwrap(), &h, &trusted).to_string(), "198.51.100.1");
/// ```
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    ClientAddr::of(peer, headers, trusted).client
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Headers meaningful only on one connection, never forwarded (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// [`HOP_BY_HOP`] as text, for comparing tokens without building names.
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Whether a raw field name is a hop-by-hop header (RFC 9110 7.6.1: `Connection`,
/// `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Upgrade`), in any case.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Lengths first: most names are ruled out without a comparison.
    matches!(name.len(), 2 | 7 | 10 | 16 | 18 | 19)
        && HOP_BY_HOP_NAMES
            .iter()
            .any(|h| h.len() == name.len() && name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Transfer-Encoding` is left to hyper, which re-frames the body itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present: removing an absent
    // name still costs a hash, and most messages carry at most `Connection`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in `Connection` other than the usual tokens.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP_NAMES
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_bytes()))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
}

/// Appends the hop to `X-Forwarded-For` and `Forwarded` (RFC 7239), keeping
/// what a trusted proxy wrote (every line of it, in order) and dropping what
/// an untrusted client forged.
pub fn append_forwarded(headers: &mut HeaderMap, from: &ClientAddr, host: Option<&HeaderValue>) {
    let peer = from.peer;
    if !from.peer_trusted {
        headers.remove(X_FORWARDED_FOR);
        headers.remove(header::FORWARDED);
    }
    let mut node = String::with_capacity(48);
    write_ip(&mut node, peer);
    let mut xff = Vec::with_capacity(64);
    prior_list(headers, &X_FORWARDED_FOR, &mut xff);
    xff.extend_from_slice(node.as_bytes());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let mut fwd = Vec::with_capacity(96);
    prior_list(headers, &header::FORWARDED, &mut fwd);
    fwd.extend_from_slice(b"for=");
    if peer.is_ipv6() {
        // RFC 7239: an IPv6 node is bracketed and quoted.
        fwd.extend_from_slice(b"\"[");
        fwd.extend_from_slice(node.as_bytes());
        fwd.extend_from_slice(b"]\"");
    } else {
        fwd.extend_from_slice(node.as_bytes());
    }
    fwd.extend_from_slice(b";proto=http");
    if let Some(host) = host
        && host
            .as_bytes()
            .iter()
            .all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
    {
        fwd.extend_from_slice(b";host=\"");
        fwd.extend_from_slice(host.as_bytes());
        fwd.push(b'"');
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(fwd)) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Every line of the list header `name`, joined in order, then `", "`:
/// the value the next hop appends to (nothing when absent).
fn prior_list(headers: &HeaderMap, name: &HeaderName, out: &mut Vec<u8>) {
    for line in headers.get_all(name) {
        let v = line.as_bytes().trim_ascii();
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

/// `ip` in its usual text form; IPv4 without the formatting machinery, which
/// costs more than the rest of this module per request.
fn write_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The request's id: the client's `X-Request-Id` when it is 1 to 128 visible
/// ASCII characters, otherwise a new random one; written back into `headers`.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID, id.clone());
    id
}

fn new_request_id() -> HeaderValue {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| SplitMix64::from_entropy().next_u64());
    let mut rng = SplitMix64::seeded(seed ^ COUNTER.fetch_add(1, Ordering::Relaxed));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (half, word) in [rng.next_u64(), rng.next_u64()].into_iter().enumerate() {
        for i in 0..16 {
            id[half * 16 + i] = HEX[(word >> (60 - 4 * i)) as usize & 0xf];
        }
    }
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn a_forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let headers = h(&[("x-forwarded-for", "1.2.3.4")]);
        let ip = client_ip("192.0.2.9:1".parse().unwrap(), &headers, &trusted);
        assert_eq!(ip.to_string(), "192.0.2.9");
    }

    #[test]
    fn chains_of_trusted_proxies_are_walked_right_to_left() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let headers = h(&[
            ("x-forwarded-for", "spoof, 203.0.113.7"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        let ip = client_ip("10.0.0.1:1".parse().unwrap(), &headers, &trusted);
        assert_eq!(ip.to_string(), "203.0.113.7");
    }

    #[test]
    fn garbage_in_the_header_stops_at_the_last_trusted_hop() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let headers = h(&[("x-forwarded-for", "203.0.113.7, nonsense")]);
        let ip = client_ip("10.0.0.1:1".parse().unwrap(), &headers, &trusted);
        assert_eq!(ip.to_string(), "10.0.0.1");
    }

    #[test]
    fn hop_by_hop_names_are_known_in_any_case_and_no_others() {
        for name in HOP_BY_HOP_NAMES {
            assert!(is_hop_by_hop(name.as_bytes()));
            assert!(is_hop_by_hop(name.to_ascii_uppercase().as_bytes()));
        }
        for name in [
            "content-length",
            "host",
            "tE ",
            "connectionx",
            "x-upgrade",
            "",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = h(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["accept"]);
    }

    fn from(peer: &str, headers: &HeaderMap, trusted: &[&str]) -> ClientAddr {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        ClientAddr::of(peer.parse().unwrap(), headers, &trusted)
    }

    #[test]
    fn an_ipv4_mapped_peer_is_trusted_and_forwarded_as_ipv4() {
        let mut headers = h(&[("x-forwarded-for", "203.0.113.7")]);
        let addr = from("[::ffff:10.0.0.1]:1", &headers, &["10.0.0.0/8"]);
        assert!(addr.peer_trusted);
        assert_eq!(addr.client.to_string(), "203.0.113.7");
        append_forwarded(&mut headers, &addr, None);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(headers["forwarded"], "for=10.0.0.1;proto=http");
    }

    #[test]
    fn every_forwarded_for_line_from_a_trusted_proxy_is_forwarded_in_order() {
        let mut headers = h(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.7, 10.0.0.9"),
            ("forwarded", "for=198.51.100.1"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        let addr = from("10.0.0.1:1", &headers, &["10.0.0.0/8"]);
        assert_eq!(addr.client.to_string(), "203.0.113.7");
        append_forwarded(&mut headers, &addr, None);
        let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["198.51.100.1, 203.0.113.7, 10.0.0.9, 10.0.0.1"]);
        assert_eq!(
            headers["forwarded"],
            "for=198.51.100.1, for=203.0.113.7, for=10.0.0.1;proto=http"
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_network_and_ipv4_per_address() {
        let none = HeaderMap::new();
        let a = from("[2001:db8:1:2::1]:1", &none, &[]);
        let b = from("[2001:db8:1:2:ffff::9]:1", &none, &[]);
        let other = from("[2001:db8:1:3::1]:1", &none, &[]);
        assert_eq!(a.rate_key(64), b.rate_key(64));
        assert_eq!(a.rate_key(64).to_string(), "2001:db8:1:2::");
        assert_ne!(a.rate_key(64), other.rate_key(64));
        assert_ne!(a.rate_key(128), b.rate_key(128));
        assert_eq!(a.rate_key(1).to_string(), "::");
        let v4 = from("192.0.2.7:1", &none, &[]);
        assert_eq!(v4.rate_key(64).to_string(), "192.0.2.7");
    }

    #[test]
    fn forwarded_headers_are_appended_from_trusted_peers_and_reset_from_others() {
        let mut trusted = h(&[("x-forwarded-for", "203.0.113.7")]);
        let addr = from("10.0.0.1:1", &trusted, &["10.0.0.0/8"]);
        append_forwarded(&mut trusted, &addr, None);
        assert_eq!(trusted["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(trusted["forwarded"], "for=10.0.0.1;proto=http");

        let mut forged = h(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=1.1.1.1")]);
        let host = HeaderValue::from_static("shop.example");
        let addr = from("192.0.2.9:1", &forged, &["10.0.0.0/8"]);
        append_forwarded(&mut forged, &addr, Some(&host));
        assert_eq!(forged["x-forwarded-for"], "192.0.2.9");
        assert_eq!(
            forged["forwarded"],
            "for=192.0.2.9;proto=http;host=\"shop.example\""
        );
    }

    #[test]
    fn a_sane_request_id_is_kept_and_a_bad_one_replaced() {
        let mut kept = h(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&mut kept), "abc-123");
        let mut bad = h(&[("x-request-id", "has space")]);
        let id = request_id(&mut bad);
        assert_eq!(id.len(), 32);
        assert_eq!(bad["x-request-id"], id);
        assert_ne!(request_id(&mut HeaderMap::new()), id);
    }
}
