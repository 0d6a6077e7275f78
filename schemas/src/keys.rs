//! The pseudonymisation key file, its checks, and the subkeys derived from it.
//!
//! One master secret (≥ 256 bits) lives in a key file with mode 0600. Separate subkeys are
//! derived with HKDF-SHA256 for each use, so pseudonyms made for the index and for the audit
//! trail cannot be joined by value, and the quarantine's encryption key is independent of both.

use std::fmt;
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::pseudonym::Pseudonymiser;
use crate::sealed::Sealer;

/// Minimum secret length in bytes (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// What can go wrong loading or writing a key file. Messages say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No file at the path.
    #[error(
        "key file {path} does not exist; create one with `matchpoint keygen --out {path}` \
         (or point MATCHPOINT_KEY_FILE / `key_file` in the config at an existing key)"
    )]
    Missing { path: PathBuf },
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); \
         restrict it with `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    /// The file is not in the key file format.
    #[error(
        "key file {path} is not a Matchpoint key file ({reason}); \
         make a new one with `matchpoint keygen --out {path}`"
    )]
    Format { path: PathBuf, reason: String },
    /// The secret is shorter than 256 bits.
    #[error(
        "key file {path} holds a {bits}-bit secret; at least 256 bits are required \
         (make one with `matchpoint keygen --out {path}`)"
    )]
    Short { path: PathBuf, bits: usize },
    /// The file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Refusing to overwrite an existing key.
    #[error("key file {path} already exists; refusing to overwrite a key (move it away first)")]
    Exists { path: PathBuf },
}

/// A key's identifier, stored beside every pseudonym made with it (the key version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileFormat {
    key_id: String,
    secret_hex: Zeroizing<String>,
}

/// The master secret. Zeroised on drop; `Debug` shows only the key id.
pub struct MasterKey {
    id: KeyId,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Purposes for which subkeys are derived. Each has its own HKDF `info` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Person pseudonyms in the index.
    Index,
    /// Subject pseudonyms in the audit trail.
    Audit,
    /// Encryption of raw quarantined records.
    Quarantine,
    /// Signatures (HMAC tags) on audit-trail checkpoints and retention anchors.
    AuditCheckpoint,
}

impl KeyPurpose {
    fn info(self) -> &'static [u8] {
        match self {
            KeyPurpose::Index => b"matchpoint/v1/index-pseudonym",
            KeyPurpose::Audit => b"matchpoint/v1/audit-pseudonym",
            KeyPurpose::Quarantine => b"matchpoint/v1/quarantine-aead",
            KeyPurpose::AuditCheckpoint => b"matchpoint/v1/audit-checkpoint-mac",
        }
    }
}

impl MasterKey {
    /// Loads a key file: follows symlinks, refuses missing, short, malformed or
    /// group/world-readable files.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing { path: path.into() });
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.into(),
                    mode,
                });
            }
        }
        if meta.len() > 64 * 1024 {
            return Err(KeyError::Format {
                path: path.into(),
                reason: "file is larger than 64 KiB".into(),
            });
        }
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.into(),
                    source,
                })?,
            );
        let parsed: KeyFileFormat = toml::from_str(&text).map_err(|e| KeyError::Format {
            path: path.into(),
            // toml's message may quote the offending line, which could hold the secret.
            reason: format!(
                "expected `key_id` and `secret_hex` ({})",
                first_line(e.message())
            ),
        })?;
        if parsed.key_id.is_empty()
            || parsed.key_id.len() > 64
            || !parsed
                .key_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(KeyError::Format {
                path: path.into(),
                reason: "key_id must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            });
        }
        let secret = Zeroizing::new(hex::decode(parsed.secret_hex.trim()).map_err(|_| {
            KeyError::Format {
                path: path.into(),
                reason: "secret_hex is not hexadecimal".into(),
            }
        })?);
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Short {
                path: path.into(),
                bits: secret.len() * 8,
            });
        }
        Ok(MasterKey {
            id: KeyId(parsed.key_id),
            secret,
        })
    }

    /// Makes a key from raw bytes (tests and benchmarks). Fails on short secrets.
    pub fn from_secret(id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Short {
                path: PathBuf::from("<memory>"),
                bits: secret.len() * 8,
            });
        }
        Ok(MasterKey {
            id: KeyId(id.to_owned()),
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    /// Writes a new random 256-bit key file with mode 0600; never overwrites.
    pub fn generate_file(path: &Path, key_id: &str) -> Result<KeyId, KeyError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(secret.as_mut());
        let mut hexed = Zeroizing::new(hex::encode(secret.as_ref()));
        let body = Zeroizing::new(format!(
            "# Matchpoint pseudonymisation key. Secret: keep mode 0600, never commit it,\n\
             # back it up offline. Losing it makes existing pseudonyms unreachable.\n\
             key_id = \"{key_id}\"\nsecret_hex = \"{}\"\n",
            hexed.as_str()
        ));
        hexed.zeroize();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| KeyError::Write {
                path: path.into(),
                source,
            })?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists { path: path.into() }
            } else {
                KeyError::Write {
                    path: path.into(),
                    source,
                }
            }
        })?;
        use std::io::Write;
        file.write_all(body.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Write {
                path: path.into(),
                source,
            })?;
        Ok(KeyId(key_id.to_owned()))
    }

    /// The key's identifier (version).
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Derives the 256-bit subkey for one purpose with HKDF-SHA256.
    fn subkey(&self, purpose: KeyPurpose) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(b"matchpoint-hkdf-salt-v1"), &self.secret);
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        if hk.expand(purpose.info(), okm.as_mut()).is_err() {
            unreachable!("HKDF expand of 32 bytes");
        }
        okm
    }

    /// A pseudonymiser for one purpose (index or audit).
    pub fn pseudonymiser(&self, purpose: KeyPurpose) -> Pseudonymiser {
        Pseudonymiser::new(self.id.clone(), purpose, &self.subkey(purpose))
    }

    /// HMAC-SHA256 tag of `message` under the subkey for `purpose` (audit checkpoints and
    /// retention anchors use [`KeyPurpose::AuditCheckpoint`]).
    pub fn mac(&self, purpose: KeyPurpose, message: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let subkey = self.subkey(purpose);
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(subkey.as_ref()) else {
            unreachable!("HMAC accepts any key length")
        };
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Checks an HMAC tag made by [`MasterKey::mac`], in constant time.
    pub fn verify_mac(&self, purpose: KeyPurpose, message: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let subkey = self.subkey(purpose);
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(subkey.as_ref()) else {
            unreachable!("HMAC accepts any key length")
        };
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }

    /// The authenticated-encryption key for quarantined raw records.
    pub fn sealer(&self) -> Sealer {
        Sealer::new(self.id.clone(), &self.subkey(KeyPurpose::Quarantine))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_0600_file_that_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k/key.toml");
        MasterKey::generate_file(&path, "k1").expect("keygen");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let key = MasterKey::load(&path).expect("load");
        assert_eq!(key.id().as_str(), "k1");
        assert!(matches!(
            MasterKey::generate_file(&path, "k2"),
            Err(KeyError::Exists { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_short_and_missing_keys_are_refused_with_a_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        MasterKey::generate_file(&path, "k1").expect("keygen");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = MasterKey::load(&path).expect_err("must refuse");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let short = dir.path().join("short.toml");
        std::fs::write(&short, "key_id = \"k\"\nsecret_hex = \"00112233\"\n").expect("write");
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = MasterKey::load(&short).expect_err("must refuse");
        assert!(matches!(err, KeyError::Short { bits: 32, .. }), "{err}");

        let err = MasterKey::load(&dir.path().join("nope")).expect_err("must refuse");
        assert!(err.to_string().contains("matchpoint keygen"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_to_a_key_file_are_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        MasterKey::generate_file(&path, "k1").expect("keygen");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert_eq!(MasterKey::load(&link).expect("load").id().as_str(), "k1");
    }

    #[test]
    fn macs_are_per_purpose_and_checked_exactly() {
        let key = MasterKey::from_secret("k1", &[0x11; 32]).expect("key");
        let other = MasterKey::from_secret("k1", &[0x12; 32]).expect("key");
        let tag = key.mac(KeyPurpose::AuditCheckpoint, b"message");
        assert!(key.verify_mac(KeyPurpose::AuditCheckpoint, b"message", &tag));
        assert!(!key.verify_mac(KeyPurpose::AuditCheckpoint, b"messagf", &tag));
        assert!(!key.verify_mac(KeyPurpose::Audit, b"message", &tag));
        assert!(!other.verify_mac(KeyPurpose::AuditCheckpoint, b"message", &tag));
        assert!(!key.verify_mac(KeyPurpose::AuditCheckpoint, b"message", &tag[..31]));
    }

    #[test]
    fn debug_of_a_key_shows_no_secret() {
        let key = MasterKey::from_secret("k1", &[0xAB; 32]).expect("key");
        let dbg = format!(
            "{key:?} {:?} {:?}",
            key.pseudonymiser(KeyPurpose::Index),
            key.sealer()
        );
        assert!(!dbg.to_lowercase().contains("abab"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }
}
