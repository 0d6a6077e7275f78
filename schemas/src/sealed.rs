//! Authenticated encryption (AES-256-GCM) of raw quarantined records.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::keys::KeyId;

/// Why a sealed record could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Sealed under a key this process does not hold.
    #[error("sealed record was encrypted under key {found}, but the loaded key is {loaded}")]
    WrongKey { found: String, loaded: String },
    /// Ciphertext or its context was altered, or the key is wrong.
    #[error("sealed record failed authentication (altered, or encrypted under another key)")]
    Authentication,
}

/// Encrypts and decrypts raw records; output is nonce ‖ ciphertext ‖ tag.
pub struct Sealer {
    key_id: KeyId,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Sealer {
    pub(crate) fn new(key_id: KeyId, subkey: &[u8; 32]) -> Self {
        Sealer {
            key_id,
            cipher: Aes256Gcm::new(subkey.into()),
        }
    }

    /// The key version to store beside each sealed record.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Encrypts `plain`, binding it to `context` (e.g. source and record id).
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encryption only fails for inputs beyond 64 GiB, which records never reach.
        match self.cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: context,
            },
        ) {
            Ok(ct) => out.extend_from_slice(&ct),
            Err(_) => unreachable!("AES-GCM encryption of a bounded record"),
        }
        out
    }

    /// Decrypts what [`Sealer::seal`] produced under the same key and context.
    pub fn open(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        if key_id != self.key_id.as_str() {
            return Err(SealError::WrongKey {
                found: key_id.to_owned(),
                loaded: self.key_id.to_string(),
            });
        }
        if sealed.len() < 12 + 16 {
            return Err(SealError::Authentication);
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| SealError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use crate::keys::MasterKey;

    #[test]
    fn sealed_records_open_only_with_the_same_key_and_context() {
        let key = MasterKey::from_secret("k1", &[3u8; 32]).expect("key");
        let s = key.sealer();
        let sealed = s.seal(b"raw record", b"okc-2/R1");
        assert!(!sealed.windows(10).any(|w| w == b"raw record"));
        assert_eq!(
            s.open("k1", &sealed, b"okc-2/R1").expect("open"),
            b"raw record"
        );
        assert!(s.open("k1", &sealed, b"okc-2/R2").is_err());
        let other = MasterKey::from_secret("k1", &[4u8; 32])
            .expect("key")
            .sealer();
        assert!(other.open("k1", &sealed, b"okc-2/R1").is_err());
    }
}
