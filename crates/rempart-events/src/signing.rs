//! Each register's Ed25519 key, and what it signs.
//!
//! A register signs the head of its hash chain at each checkpoint (a closed
//! ticket, a closure, an archive's manifest). The message is explicit and
//! versioned, like the chain's canonical bytes:
//!
//! ```text
//! "rempart/checkpoint" ‖ 0x01 ‖ u32 BE len ‖ register_id ‖ chain_seq (i64 BE) ‖ chain hash (32 bytes)
//! ```
//!
//! An archive's manifest signs `"rempart/manifest" ‖ 0x01` followed by its
//! fields the same way (see [`crate::archive`]).
//!
//! The secret key lives in a file (64 hex characters, mode 0600 on Unix)
//! beside the register's database, never in the database: whoever copies the
//! store must not get the means to re-sign it. Its public key goes into the
//! store's `register_keys` table and to central, which is the trust anchor
//! ([`crate::verify::VerifyOptions::trusted_keys`]).

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::chain::{Hash, hex, unhex};

/// A register's signing key.
#[derive(Clone)]
pub struct RegisterKey {
    register_id: String,
    key: SigningKey,
}

impl std::fmt::Debug for RegisterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterKey")
            .field("register_id", &self.register_id)
            .field("public_key", &hex(self.key.verifying_key().as_bytes()))
            .finish()
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("register key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold 64 hex characters.
    #[error(
        "register key file {path} does not hold a key (64 hex characters); restore it from backup, or move it away to create a new key"
    )]
    Malformed {
        /// The file.
        path: String,
    },
    /// The OS gave no randomness.
    #[error("no randomness from the OS to create a key: {0}")]
    Random(String),
}

impl RegisterKey {
    /// A fresh key from the OS's randomness.
    pub fn generate(register_id: &str) -> Result<RegisterKey, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(RegisterKey::from_secret(register_id, secret))
    }

    /// A key from its 32 secret bytes (tests, imports).
    pub fn from_secret(register_id: &str, secret: [u8; 32]) -> RegisterKey {
        RegisterKey {
            register_id: register_id.to_owned(),
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// Reads the key in `path`, or creates it (mode 0600) if the file is missing.
    pub fn load_or_create(path: &Path, register_id: &str) -> Result<RegisterKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = unhex(text.trim())
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| KeyError::Malformed {
                        path: path.display().to_string(),
                    })?;
                let mut secret = [0u8; 32];
                secret.copy_from_slice(&bytes);
                Ok(RegisterKey::from_secret(register_id, secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RegisterKey::generate(register_id)?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(path).map_err(io)?;
                std::io::Write::write_all(&mut f, hex(&key.key.to_bytes()).as_bytes())
                    .map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The register this key belongs to.
    pub fn register_id(&self) -> &str {
        &self.register_id
    }

    /// The public half, for central and for `register_keys`.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs the chain head `(seq, hash)` of this register.
    pub fn sign_checkpoint(&self, seq: i64, hash: &Hash) -> [u8; 64] {
        self.sign(&checkpoint_message(&self.register_id, seq, hash))
    }

    /// Signs arbitrary bytes (an archive's manifest message).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(register_id: &str, seq: i64, hash: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + register_id.len());
    m.extend_from_slice(b"rempart/checkpoint");
    m.push(crate::chain::CANONICAL_VERSION);
    m.extend_from_slice(&(register_id.len() as u32).to_be_bytes());
    m.extend_from_slice(register_id.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Does `signature` sign `message` under one of `public_keys`?
pub fn signed_by_any(public_keys: &[[u8; 32]], message: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    public_keys
        .iter()
        .any(|pk| VerifyingKey::from_bytes(pk).is_ok_and(|vk| vk.verify(message, &sig).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_only_for_its_head_and_key() {
        let k = RegisterKey::from_secret("r1", [1; 32]);
        let other = RegisterKey::from_secret("r1", [2; 32]);
        let sig = k.sign_checkpoint(3, &[9; 32]);
        let pk = [k.public_key()];
        assert!(signed_by_any(
            &pk,
            &checkpoint_message("r1", 3, &[9; 32]),
            &sig
        ));
        assert!(!signed_by_any(
            &pk,
            &checkpoint_message("r1", 4, &[9; 32]),
            &sig
        ));
        assert!(!signed_by_any(
            &pk,
            &checkpoint_message("r2", 3, &[9; 32]),
            &sig
        ));
        assert!(!signed_by_any(
            &[other.public_key()],
            &checkpoint_message("r1", 3, &[9; 32]),
            &sig
        ));
        assert!(!signed_by_any(
            &pk,
            &checkpoint_message("r1", 3, &[9; 32]),
            &sig[..63]
        ));
    }

    #[test]
    fn a_key_file_is_created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r1.key");
        let a = RegisterKey::load_or_create(&path, "r1").unwrap();
        let b = RegisterKey::load_or_create(&path, "r1").unwrap();
        assert_eq!(a.public_key(), b.public_key());
        std::fs::write(&path, "not a key").unwrap();
        let e = RegisterKey::load_or_create(&path, "r1").unwrap_err();
        assert!(e.to_string().contains("64 hex characters"), "{e}");
    }
}
