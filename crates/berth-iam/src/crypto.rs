//! Secrets at rest and new credentials.
//!
//! Everything secret that berth stores (access key secrets, session secrets, Secrets
//! Manager values, SSM parameter values) is sealed with AES-256-GCM under one master key.
//! The key lives in a file of the data directory (mode 0600), never in the store, so a copy
//! of the store alone reveals no secret. Each sealed value is bound to the store key it is
//! kept under (the GCM associated data), so a sealed value moved elsewhere does not open.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::IamError;

const SEALED_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;

/// A sealed value as stored: `v1.` + base64(nonce ‖ ciphertext ‖ tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

/// Seals and opens values with the master key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// A sealer with a fresh random key (tests).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self::from_key(&key)
    }

    /// Opens the key file at `path` (64 hex digits), creating it with a new random key and
    /// mode 0600 if it does not exist. A key file that others can read is refused.
    pub fn open_or_create(path: &Path) -> io::Result<Self> {
        match OpenOptions::new().read(true).open(path) {
            Ok(mut file) => {
                let mode = file.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{} is readable by others (mode {:o}); run chmod 600 on it",
                            path.display(),
                            mode & 0o777
                        ),
                    ));
                }
                let mut text = String::new();
                file.read_to_string(&mut text)?;
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a hex key: {e}", path.display()),
                    )
                })?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: the key must be 32 bytes", path.display()),
                    )
                })?;
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                OsRng.fill_bytes(&mut key);
                write_private(path, format!("{}\n", hex::encode(key)).as_bytes())?;
                Ok(Self::from_key(&key))
            }
            Err(e) => Err(e),
        }
    }

    /// Seals `plaintext`, bound to `context` (the store key it will live under).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Sealed(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, IamError> {
        let bad = || {
            IamError::internal(format!(
                "a sealed value under {context} does not open with this server's master key"
            ))
        };
        let encoded = sealed.0.strip_prefix(SEALED_PREFIX).ok_or_else(bad)?;
        let bytes = B64.decode(encoded).map_err(|_| bad())?;
        if bytes.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| bad())
    }

    pub fn open_string(&self, context: &str, sealed: &Sealed) -> Result<String, IamError> {
        String::from_utf8(self.open(context, sealed)?)
            .map_err(|_| IamError::internal(format!("sealed value under {context} is not UTF-8")))
    }
}

/// Writes a new file readable by its owner only (0600), failing if it exists.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    // Refuse to replace an existing file (two servers racing on one data dir).
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            std::fs::remove_file(&tmp)?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_from(alphabet: &[u8], len: usize) -> String {
    // Rejection-free: both alphabets have a power-of-two size.
    debug_assert!(alphabet.len().is_power_of_two());
    let mask = alphabet.len() - 1;
    let mut bytes = vec![0u8; len];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) & mask] as char)
        .collect()
}

/// An AWS-style unique id: a four-letter prefix (`AIDA`, `AROA`, `ANPA`, `AKIA`, `ASIA`)
/// and upper-case base32 characters, `len` in all.
pub fn random_id(prefix: &str, len: usize) -> String {
    format!(
        "{prefix}{}",
        random_from(BASE32, len.saturating_sub(prefix.len()))
    )
}

/// A new secret access key: 40 characters, as AWS's.
pub fn random_secret() -> String {
    random_from(SECRET_ALPHABET, 40)
}

/// A new session token (opaque, long).
pub fn random_token() -> String {
    let mut bytes = [0u8; 96];
    OsRng.fill_bytes(&mut bytes);
    format!("BERTH{}", B64.encode(bytes))
}

/// SHA-256 of a token, hex: what the store keeps of session tokens.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let s = Sealer::random();
        let sealed = s.seal("sm/a", b"hunter2");
        assert!(!sealed.0.contains("hunter2"));
        assert_eq!(s.open("sm/a", &sealed).unwrap(), b"hunter2");
        // Bound to its context, and to its key.
        assert!(s.open("sm/b", &sealed).is_err());
        assert!(Sealer::random().open("sm/a", &sealed).is_err());
        // Two seals of one value differ (random nonce).
        assert_ne!(s.seal("sm/a", b"x"), s.seal("sm/a", b"x"));
    }

    #[test]
    fn key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = Sealer::open_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = a.seal("k", b"v");
        let b = Sealer::open_or_create(&path).unwrap();
        assert_eq!(b.open("k", &sealed).unwrap(), b"v");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Sealer::open_or_create(&path).is_err());
    }

    #[test]
    fn ids_look_like_aws_ids() {
        let id = random_id("AKIA", 20);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("AKIA"));
        assert!(id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        assert_eq!(random_secret().len(), 40);
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ab"));
    }
}
