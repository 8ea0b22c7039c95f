//! Who is asking central: every sync request is signed with the register's
//! own Ed25519 key, so no one can push under another register's name or read
//! a shop that is not theirs.
//!
//! The signature covers the method, the path and query, the register, the
//! time of signing and the body's SHA-256; central accepts it within
//! [`MAX_SKEW_MS`] of its own clock, which bounds how long a captured request
//! can be replayed (a replayed push adds nothing anyway: batches are
//! idempotent). A push is checked against the key it carries, which central
//! then holds to the key it enrolled for that register; a pull against the
//! enrolled key, and only for the register's own shop.
//!
//! ```
//! use rempart_events::signing::RegisterKey;
//! use rempart_events::sync::auth::{SignedRequest, check};
//!
//! let key = RegisterKey::generate("caisse-1").unwrap();
//! let at = 1_790_000_000_000;
//! let signed = SignedRequest::sign(&key, "GET", "/v1/stores/s1/events?after=0", at, b"");
//! let ok = check(&[key.public_key()], "GET", "/v1/stores/s1/events?after=0", &signed, b"", at + 1_000);
//! assert!(ok.is_ok());
//! let other_path = check(&[key.public_key()], "GET", "/v1/stores/s2/events?after=0", &signed, b"", at);
//! assert!(other_path.is_err());
//! ```

use sha2::{Digest, Sha256};

use crate::chain::{hex, unhex};
use crate::signing::{RegisterKey, signed_by_any};

/// The header naming the register that signed.
pub const REGISTER_HEADER: &str = "x-register-id";
/// The header carrying when it signed (Unix milliseconds).
pub const SIGNED_AT_HEADER: &str = "x-signed-at";
/// The header carrying the signature (hex, 128 digits).
pub const SIGNATURE_HEADER: &str = "x-signature";
/// How far a request's signing time may be from central's clock.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1_000;

/// A request's signature, as its three headers carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The register that signed.
    pub register_id: String,
    /// When (Unix milliseconds, the register's clock).
    pub signed_at_ms: u64,
    /// The Ed25519 signature.
    pub signature: Vec<u8>,
}

/// Why central refuses a request's signature (all answered 401, except a
/// shop that is not the register's, 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A header is missing.
    #[error(
        "unsigned request: the {0} header is missing (sync requests are signed with the register's key)"
    )]
    Missing(&'static str),
    /// A header cannot be read.
    #[error("the {header} header {value:?} cannot be read: {why}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What it held.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Signed too long ago, or in the future (a replay, or a register's clock off).
    #[error(
        "signed at {signed_at_ms} ms, {skew_ms} ms away from central's clock (at most {MAX_SKEW_MS}): check the register's clock"
    )]
    Skew {
        /// When the register says it signed.
        signed_at_ms: u64,
        /// How far that is from central's clock.
        skew_ms: u64,
    },
    /// The signature does not match the register's key and this request.
    #[error("the signature does not match register {0}'s key and this request")]
    BadSignature(String),
    /// Central has never enrolled this register (it must push first).
    #[error("register {0} is not enrolled at central: push its events first")]
    UnknownRegister(String),
    /// The register asked for a shop that is not its own.
    #[error("register {register} belongs to shop {own}, not {asked}")]
    OtherShop {
        /// The register.
        register: String,
        /// Its shop.
        own: String,
        /// The shop it asked for.
        asked: String,
    },
}

/// The bytes a request signature covers.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    register_id: &str,
    signed_at_ms: u64,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = Sha256::digest(body);
    let mut m = Vec::with_capacity(96 + path_and_query.len() + register_id.len());
    m.extend_from_slice(b"rempart/sync-request/v1\n");
    for part in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        register_id.as_bytes(),
    ] {
        // Lengths first: no two requests share the bytes signed.
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&signed_at_ms.to_be_bytes());
    m.extend_from_slice(&body_hash);
    m
}

impl SignedRequest {
    /// Signs a request with the register's key at `signed_at_ms`.
    pub fn sign(
        key: &RegisterKey,
        method: &str,
        path_and_query: &str,
        signed_at_ms: u64,
        body: &[u8],
    ) -> SignedRequest {
        let message = request_message(
            method,
            path_and_query,
            key.register_id(),
            signed_at_ms,
            body,
        );
        SignedRequest {
            register_id: key.register_id().to_owned(),
            signed_at_ms,
            signature: key.sign(&message).to_vec(),
        }
    }

    /// The three header values, in the order of
    /// ([`REGISTER_HEADER`], [`SIGNED_AT_HEADER`], [`SIGNATURE_HEADER`]).
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            (REGISTER_HEADER, self.register_id.clone()),
            (SIGNED_AT_HEADER, self.signed_at_ms.to_string()),
            (SIGNATURE_HEADER, hex(&self.signature)),
        ]
    }

    /// Reads the three headers through `get` (a header map's lookup).
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<SignedRequest, AuthError> {
        let register_id = get(REGISTER_HEADER).ok_or(AuthError::Missing(REGISTER_HEADER))?;
        let at = get(SIGNED_AT_HEADER).ok_or(AuthError::Missing(SIGNED_AT_HEADER))?;
        let sig = get(SIGNATURE_HEADER).ok_or(AuthError::Missing(SIGNATURE_HEADER))?;
        let signed_at_ms = at.parse().map_err(|_| AuthError::Malformed {
            header: SIGNED_AT_HEADER,
            value: at.to_owned(),
            why: "not Unix milliseconds",
        })?;
        let signature = unhex(sig)
            .filter(|s| s.len() == 64)
            .ok_or(AuthError::Malformed {
                header: SIGNATURE_HEADER,
                value: sig.chars().take(140).collect(),
                why: "not 128 hexadecimal digits",
            })?;
        if register_id.is_empty() {
            return Err(AuthError::Missing(REGISTER_HEADER));
        }
        Ok(SignedRequest {
            register_id: register_id.to_owned(),
            signed_at_ms,
            signature,
        })
    }
}

/// Checks `signed` against the register's public keys (one, or more after a
/// key rotation) for this request at central's time `now_ms`.
pub fn check(
    public_keys: &[[u8; 32]],
    method: &str,
    path_and_query: &str,
    signed: &SignedRequest,
    body: &[u8],
    now_ms: u64,
) -> Result<(), AuthError> {
    let skew_ms = now_ms.abs_diff(signed.signed_at_ms);
    if skew_ms > MAX_SKEW_MS {
        return Err(AuthError::Skew {
            signed_at_ms: signed.signed_at_ms,
            skew_ms,
        });
    }
    let message = request_message(
        method,
        path_and_query,
        &signed.register_id,
        signed.signed_at_ms,
        body,
    );
    if signed_by_any(public_keys, &message, &signed.signature) {
        Ok(())
    } else {
        Err(AuthError::BadSignature(signed.register_id.clone()))
    }
}

/// Whether `signed` may push `body`, a batch from `register` carrying
/// `public_key_hex`: signed by that register with that key. Central then holds
/// the key to the one it enrolled for the register (a 409 otherwise).
pub fn authorize_push(
    register: &str,
    public_key_hex: &str,
    signed: &SignedRequest,
    body: &[u8],
    now_ms: u64,
) -> Result<(), AuthError> {
    if signed.register_id != register {
        return Err(AuthError::BadSignature(format!(
            "{} (signed) for a batch of {register}",
            signed.register_id
        )));
    }
    let key = unhex(public_key_hex)
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| AuthError::BadSignature(register.to_owned()))?;
    check(&[key], "POST", PUSH_PATH, signed, body, now_ms)
}

/// The path pushes are signed for.
pub const PUSH_PATH: &str = "/v1/batches";

/// Whether `signed` may read shop `asked`: the register must be enrolled
/// (`enrolled`: its shop and keys at central), the signature its own, and
/// the shop its own.
pub fn authorize_pull(
    enrolled: Option<(&str, &[[u8; 32]])>,
    asked: &str,
    path_and_query: &str,
    signed: &SignedRequest,
    now_ms: u64,
) -> Result<(), AuthError> {
    let Some((own, keys)) = enrolled else {
        return Err(AuthError::UnknownRegister(signed.register_id.clone()));
    };
    check(keys, "GET", path_and_query, signed, b"", now_ms)?;
    if own != asked {
        return Err(AuthError::OtherShop {
            register: signed.register_id.clone(),
            own: own.to_owned(),
            asked: asked.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u64 = 1_790_000_000_000;
    const PATH: &str = PUSH_PATH;

    fn key(id: &str) -> RegisterKey {
        RegisterKey::from_secret(id, [7; 32])
    }

    #[test]
    fn a_request_signed_by_the_register_passes_within_the_skew() {
        let k = key("caisse-1");
        let s = SignedRequest::sign(&k, "POST", PATH, AT, b"{}");
        assert_eq!(
            check(&[k.public_key()], "POST", PATH, &s, b"{}", AT + MAX_SKEW_MS),
            Ok(())
        );
        assert_eq!(
            check(&[k.public_key()], "POST", PATH, &s, b"{}", AT - MAX_SKEW_MS),
            Ok(())
        );
    }

    #[test]
    fn any_change_to_the_request_or_another_key_fails() {
        let k = key("caisse-1");
        let s = SignedRequest::sign(&k, "POST", PATH, AT, b"{}");
        let pk = [k.public_key()];
        let bad = |r: Result<(), AuthError>| {
            assert!(matches!(r, Err(AuthError::BadSignature(_))), "{r:?}")
        };
        bad(check(&pk, "POST", PATH, &s, b"{ }", AT));
        bad(check(&pk, "GET", PATH, &s, b"{}", AT));
        bad(check(&pk, "POST", "/v1/batches?x", &s, b"{}", AT));
        let mut renamed = s.clone();
        renamed.register_id = "caisse-2".into();
        bad(check(&pk, "POST", PATH, &renamed, b"{}", AT));
        let mut later = s.clone();
        later.signed_at_ms += 1;
        bad(check(&pk, "POST", PATH, &later, b"{}", AT));
        let other = RegisterKey::from_secret("caisse-1", [8; 32]);
        bad(check(&[other.public_key()], "POST", PATH, &s, b"{}", AT));
    }

    #[test]
    fn an_old_or_future_signature_is_refused() {
        let k = key("caisse-1");
        let s = SignedRequest::sign(&k, "POST", PATH, AT, b"");
        let late = check(
            &[k.public_key()],
            "POST",
            PATH,
            &s,
            b"",
            AT + MAX_SKEW_MS + 1,
        );
        assert!(matches!(late, Err(AuthError::Skew { .. })), "{late:?}");
        let early = check(
            &[k.public_key()],
            "POST",
            PATH,
            &s,
            b"",
            AT - MAX_SKEW_MS - 1,
        );
        assert!(matches!(early, Err(AuthError::Skew { .. })), "{early:?}");
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        let k = key("caisse-1");
        let s = SignedRequest::sign(&k, "GET", PATH, AT, b"");
        let h = s.headers();
        let get = |name: &'static str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(SignedRequest::from_headers(get), Ok(s));
        let none = SignedRequest::from_headers(|_| None);
        assert_eq!(none, Err(AuthError::Missing(REGISTER_HEADER)));
        let short = SignedRequest::from_headers(|n| match n {
            SIGNATURE_HEADER => Some("abcd"),
            SIGNED_AT_HEADER => Some("1"),
            _ => Some("caisse-1"),
        });
        assert!(matches!(
            short,
            Err(AuthError::Malformed {
                header: SIGNATURE_HEADER,
                ..
            })
        ));
    }

    #[test]
    fn a_push_is_signed_by_the_key_it_carries_and_for_its_own_register() {
        let k = key("caisse-1");
        let s = SignedRequest::sign(&k, "POST", PUSH_PATH, AT, b"batch");
        let pk = hex(&k.public_key());
        assert_eq!(authorize_push("caisse-1", &pk, &s, b"batch", AT), Ok(()));
        let thief = RegisterKey::from_secret("caisse-1", [9; 32]);
        let forged = SignedRequest::sign(&thief, "POST", PUSH_PATH, AT, b"batch");
        assert!(authorize_push("caisse-1", &pk, &forged, b"batch", AT).is_err());
        assert!(authorize_push("caisse-2", &pk, &s, b"batch", AT).is_err());
        assert!(authorize_push("caisse-1", "not hex", &s, b"batch", AT).is_err());
    }

    #[test]
    fn a_register_reads_only_its_own_shop_and_only_once_enrolled() {
        let k = key("caisse-1");
        let q = "/v1/stores/s1/events?after=0";
        let s = SignedRequest::sign(&k, "GET", q, AT, b"");
        let keys = [k.public_key()];
        assert_eq!(authorize_pull(Some(("s1", &keys)), "s1", q, &s, AT), Ok(()));
        let q2 = "/v1/stores/s2/events?after=0";
        let s2 = SignedRequest::sign(&k, "GET", q2, AT, b"");
        assert!(matches!(
            authorize_pull(Some(("s1", &keys)), "s2", q2, &s2, AT),
            Err(AuthError::OtherShop { .. })
        ));
        assert!(matches!(
            authorize_pull(None, "s1", q, &s, AT),
            Err(AuthError::UnknownRegister(_))
        ));
        let stranger = [RegisterKey::from_secret("caisse-1", [9; 32]).public_key()];
        assert!(matches!(
            authorize_pull(Some(("s1", &stranger)), "s1", q, &s, AT),
            Err(AuthError::BadSignature(_))
        ));
    }
}
