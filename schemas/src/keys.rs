//! The pseudonymisation key file, its checks, and the subkeys derived from it.
//!
//! One master secret (≥ 256 bits) lives in a key file with mode 0600. Separate subkeys are
//! derived with HKDF-SHA256 for each use, so pseudonyms made for the index and for the audit
//! trail cannot be joined by value, and the quarantine's encryption key is independent of both.
//!
//! Key rotation (`matchpoint keys rotate|activate|status`): the file may hold further *index*
//! versions and further *audit* versions besides the base one; see [`MasterKey`] and
//! docs/operations.md, "Key rotation".

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
    /// A key version in the file is missing, invalid or duplicated.
    #[error(
        "key file {path} holds an unusable key version ({reason}); restore the file from its \
         backup — do not make a new key, existing pseudonyms depend on these versions"
    )]
    Version { path: PathBuf, reason: String },
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
    /// The index key version new rows use; the base `key_id` when absent.
    #[serde(default)]
    active_index: Option<String>,
    /// Further index key versions, added by `matchpoint keys rotate`.
    #[serde(default)]
    index_versions: Vec<VersionFormat>,
    /// The audit key version new audit entries, checkpoints and anchors use; the base
    /// `key_id` when absent.
    #[serde(default)]
    active_audit: Option<String>,
    /// Further audit key versions, added by `matchpoint keys rotate --audit`.
    #[serde(default)]
    audit_versions: Vec<VersionFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFormat {
    key_id: String,
    secret_hex: Zeroizing<String>,
}

/// One further index or audit key version (see [`MasterKey::index_versions`],
/// [`MasterKey::audit_versions`]).
struct Version {
    id: KeyId,
    secret: Zeroizing<Vec<u8>>,
}

/// The master secret. Zeroised on drop; `Debug` shows only the key ids.
///
/// A key file holds one *base* version (`key_id`, `secret_hex`: the only entry of a key file
/// made by `keygen`) and, after `matchpoint keys rotate`, further *index* versions
/// (`[[index_versions]]`) with `active_index` naming the one new index pseudonyms use; after
/// `matchpoint keys rotate --audit`, further *audit* versions (`[[audit_versions]]`) with
/// `active_audit` naming the one new audit subject pseudonyms, checkpoints and retention
/// anchors use. Index lookups consult every loaded index version
/// ([`MasterKey::index_pseudonymisers`]), subject-access searches every loaded audit version
/// ([`MasterKey::audit_pseudonymisers`]), and a checkpoint or anchor is verified with the
/// version that signed it ([`MasterKey::verify_mac_with`]). Sealed quarantine copies always
/// use the base version. Version ids are unique across the whole file.
pub struct MasterKey {
    id: KeyId,
    secret: Zeroizing<Vec<u8>>,
    versions: Vec<Version>,
    /// Index into `versions` of the active index version; `None`: the base version.
    active: Option<usize>,
    audit: Vec<Version>,
    /// Index into `audit` of the active audit version; `None`: the base version.
    active_audit: Option<usize>,
}

/// Makes `id` (the base id or one of `list`) the active version of a purpose.
fn activate_in(base: &KeyId, list: &[Version], active: &mut Option<usize>, id: &str) -> bool {
    if id == base.as_str() {
        *active = None;
        return true;
    }
    match list.iter().position(|v| v.id.as_str() == id) {
        Some(i) => {
            *active = Some(i);
            true
        }
        None => false,
    }
}

/// The active version's id of a purpose: one of `list`, or the base.
fn active_in<'a>(base: &'a KeyId, list: &'a [Version], active: Option<usize>) -> &'a KeyId {
    active.and_then(|i| list.get(i)).map_or(base, |v| &v.id)
}

/// The base id, then every id of `list`, in file order.
fn ids_in<'a>(base: &'a KeyId, list: &'a [Version]) -> Vec<&'a KeyId> {
    std::iter::once(base)
        .chain(list.iter().map(|v| &v.id))
        .collect()
}

/// A pseudonymiser of `purpose` under the base secret and under every version of `list`.
fn pseudonymisers_in(
    base: &KeyId,
    base_secret: &[u8],
    list: &[Version],
    purpose: KeyPurpose,
) -> Vec<Pseudonymiser> {
    std::iter::once((base, base_secret))
        .chain(list.iter().map(|v| (&v.id, v.secret.as_slice())))
        .map(|(id, secret)| Pseudonymiser::new(id.clone(), purpose, &derive(secret, purpose)))
        .collect()
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field(
                "index_versions",
                &self
                    .versions
                    .iter()
                    .map(|v| v.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("active_index", &self.active_index_id())
            .field(
                "audit_versions",
                &self.audit.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
            )
            .field("active_audit", &self.active_audit_id())
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
        Self::parse_text(path, &text)
    }

    /// Parses a key file's text (what [`MasterKey::load`] does after its file checks); errors
    /// name `<text>` as the file. Never quotes the text (it holds secrets).
    pub fn from_key_file_text(text: &str) -> Result<Self, KeyError> {
        Self::parse_text(Path::new("<text>"), text)
    }

    fn parse_text(path: &Path, text: &str) -> Result<Self, KeyError> {
        let parsed: KeyFileFormat = toml::from_str(text).map_err(|e| KeyError::Format {
            path: path.into(),
            // toml's message may quote the offending line, which could hold the secret.
            reason: format!(
                "expected `key_id` and `secret_hex` ({})",
                first_line(e.message())
            ),
        })?;
        Self::from_parsed(path, parsed)
    }

    fn from_parsed(path: &Path, parsed: KeyFileFormat) -> Result<Self, KeyError> {
        let fmt = |reason: String| KeyError::Format {
            path: path.into(),
            reason,
        };
        let version = |reason: String| KeyError::Version {
            path: path.into(),
            reason,
        };
        let check_id = |id: &str, what: &str| {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                Err(fmt(format!(
                    "{what} must be 1-64 characters of letters, digits, '-', '_' or '.'"
                )))
            } else {
                Ok(())
            }
        };
        let decode = |hexed: &str, what: &str| -> Result<Zeroizing<Vec<u8>>, KeyError> {
            let secret = Zeroizing::new(hex::decode(hexed.trim()).map_err(|_| {
                let reason = format!("secret_hex of {what} is not hexadecimal");
                if what.starts_with("index version") || what.starts_with("audit version") {
                    version(reason)
                } else {
                    fmt(reason)
                }
            })?);
            if secret.len() < MIN_SECRET_BYTES {
                return Err(KeyError::Short {
                    path: path.into(),
                    bits: secret.len() * 8,
                });
            }
            Ok(secret)
        };
        check_id(&parsed.key_id, "key_id")?;
        let secret = decode(&parsed.secret_hex, "the base key")?;
        let mut versions: Vec<Version> = Vec::new();
        for v in &parsed.index_versions {
            check_id(&v.key_id, "key_id of an [[index_versions]] entry")?;
            if v.key_id == parsed.key_id || versions.iter().any(|o| o.id.as_str() == v.key_id) {
                return Err(version(format!(
                    "key version `{}` appears twice; every version needs its own key_id",
                    v.key_id
                )));
            }
            versions.push(Version {
                id: KeyId(v.key_id.clone()),
                secret: decode(&v.secret_hex, &format!("index version `{}`", v.key_id))?,
            });
        }
        let mut audit: Vec<Version> = Vec::new();
        for v in &parsed.audit_versions {
            check_id(&v.key_id, "key_id of an [[audit_versions]] entry")?;
            if v.key_id == parsed.key_id
                || versions.iter().any(|o| o.id.as_str() == v.key_id)
                || audit.iter().any(|o| o.id.as_str() == v.key_id)
            {
                return Err(version(format!(
                    "key version `{}` appears twice; every version needs its own key_id",
                    v.key_id
                )));
            }
            audit.push(Version {
                id: KeyId(v.key_id.clone()),
                secret: decode(&v.secret_hex, &format!("audit version `{}`", v.key_id))?,
            });
        }
        let active_audit = match parsed.active_audit.as_deref() {
            None => None,
            Some(a) if a == parsed.key_id => None,
            Some(a) => Some(audit.iter().position(|v| v.id.as_str() == a).ok_or_else(|| {
                fmt(format!(
                    "active_audit names version `{a}`, which the file does not hold as an audit \
                     version; restore the key file from its backup"
                ))
            })?),
        };
        let active = match parsed.active_index.as_deref() {
            None => None,
            Some(a) if a == parsed.key_id => None,
            Some(a) => Some(
                versions
                    .iter()
                    .position(|v| v.id.as_str() == a)
                    .ok_or_else(|| {
                        fmt(format!(
                            "active_index names version `{a}`, which the file does not hold; \
                         restore the key file from its backup (or set active_index to one of \
                         its versions)"
                        ))
                    })?,
            ),
        };
        Ok(MasterKey {
            id: KeyId(parsed.key_id),
            secret,
            versions,
            active,
            audit,
            active_audit,
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
            versions: Vec::new(),
            active: None,
            audit: Vec::new(),
            active_audit: None,
        })
    }

    /// Adds an index key version from raw bytes (tests); not active until
    /// [`MasterKey::activate_index`].
    pub fn with_index_version(mut self, id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Short {
                path: PathBuf::from("<memory>"),
                bits: secret.len() * 8,
            });
        }
        self.versions.push(Version {
            id: KeyId(id.to_owned()),
            secret: Zeroizing::new(secret.to_vec()),
        });
        Ok(self)
    }

    /// Adds an audit key version from raw bytes (tests); not active until
    /// [`MasterKey::activate_audit`].
    pub fn with_audit_version(mut self, id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Short {
                path: PathBuf::from("<memory>"),
                bits: secret.len() * 8,
            });
        }
        self.audit.push(Version {
            id: KeyId(id.to_owned()),
            secret: Zeroizing::new(secret.to_vec()),
        });
        Ok(self)
    }

    /// Makes `id` the active audit version; `false` when no loaded audit version has that id.
    pub fn activate_audit(&mut self, id: &str) -> bool {
        activate_in(&self.id, &self.audit, &mut self.active_audit, id)
    }

    /// The id of the audit version new audit subject pseudonyms, checkpoints and retention
    /// anchors are made with.
    pub fn active_audit_id(&self) -> &KeyId {
        active_in(&self.id, &self.audit, self.active_audit)
    }

    /// Every loaded audit key version, base first, in file order.
    pub fn audit_versions(&self) -> Vec<&KeyId> {
        ids_in(&self.id, &self.audit)
    }

    /// Audit subject pseudonymisers for every loaded audit version (base first): a
    /// subject-access search pseudonymises the BSN under each, so entries written before an
    /// audit rotation are still found.
    pub fn audit_pseudonymisers(&self) -> Vec<Pseudonymiser> {
        pseudonymisers_in(&self.id, &self.secret, &self.audit, KeyPurpose::Audit)
    }

    /// Every version id in the file: base, index versions, audit versions.
    fn all_ids(&self) -> impl Iterator<Item = &KeyId> {
        std::iter::once(&self.id)
            .chain(self.versions.iter().map(|v| &v.id))
            .chain(self.audit.iter().map(|v| &v.id))
    }

    /// Makes `id` the active index version; `false` when no loaded version has that id.
    pub fn activate_index(&mut self, id: &str) -> bool {
        activate_in(&self.id, &self.versions, &mut self.active, id)
    }

    /// The id of the index version new index pseudonyms are made with.
    pub fn active_index_id(&self) -> &KeyId {
        active_in(&self.id, &self.versions, self.active)
    }

    /// Every loaded index key version, base first, in file order.
    pub fn index_versions(&self) -> Vec<&KeyId> {
        ids_in(&self.id, &self.versions)
    }

    /// Index pseudonymisers for every loaded version (base first): lookups pseudonymise a BSN
    /// under each, so rows of sources not yet re-keyed are still found.
    pub fn index_pseudonymisers(&self) -> Vec<Pseudonymiser> {
        pseudonymisers_in(&self.id, &self.secret, &self.versions, KeyPurpose::Index)
    }

    /// Adds a new random index version to the key file at `path` (not active) and returns
    /// its id. The file is replaced atomically (same directory, mode 0600).
    pub fn rotate_file(path: &Path, new_id: &str) -> Result<KeyId, KeyError> {
        let mut key = MasterKey::load(path)?;
        if key.all_ids().any(|v| v.as_str() == new_id) {
            return Err(KeyError::Format {
                path: path.into(),
                reason: format!("it already holds a version `{new_id}`; choose another id"),
            });
        }
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        rand::rng().fill_bytes(secret.as_mut());
        key.versions.push(Version {
            id: KeyId(new_id.to_owned()),
            secret,
        });
        // Validates the id the same way loading does.
        let text = key.file_text();
        let reparsed: KeyFileFormat = toml::from_str(&text).map_err(|e| KeyError::Format {
            path: path.into(),
            reason: first_line(e.message()),
        })?;
        Self::from_parsed(path, reparsed)?;
        write_replacing(path, &text)?;
        Ok(KeyId(new_id.to_owned()))
    }

    /// Adds a new random *audit* version to the key file at `path` (not active) and returns
    /// its id. Like [`MasterKey::rotate_file`]; every older audit version stays in the file
    /// (the trail written under it must stay searchable for the audit retention period).
    pub fn rotate_audit_file(path: &Path, new_id: &str) -> Result<KeyId, KeyError> {
        let mut key = MasterKey::load(path)?;
        if key.all_ids().any(|v| v.as_str() == new_id) {
            return Err(KeyError::Format {
                path: path.into(),
                reason: format!("it already holds a version `{new_id}`; choose another id"),
            });
        }
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        rand::rng().fill_bytes(secret.as_mut());
        key.audit.push(Version {
            id: KeyId(new_id.to_owned()),
            secret,
        });
        let text = key.file_text();
        let reparsed: KeyFileFormat = toml::from_str(&text).map_err(|e| KeyError::Format {
            path: path.into(),
            reason: first_line(e.message()),
        })?;
        Self::from_parsed(path, reparsed)?;
        write_replacing(path, &text)?;
        Ok(KeyId(new_id.to_owned()))
    }

    /// Makes version `id` the active audit version in the key file at `path`.
    pub fn activate_audit_file(path: &Path, id: &str) -> Result<(), KeyError> {
        let mut key = MasterKey::load(path)?;
        if !key.activate_audit(id) {
            return Err(KeyError::Format {
                path: path.into(),
                reason: format!(
                    "it holds no audit version `{id}` (audit versions: {}); add one with \
                     `matchpoint keys rotate --audit`",
                    key.audit_versions()
                        .iter()
                        .map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        write_replacing(path, &key.file_text())
    }

    /// Makes version `id` the active index version in the key file at `path`.
    pub fn activate_file(path: &Path, id: &str) -> Result<(), KeyError> {
        let mut key = MasterKey::load(path)?;
        if !key.activate_index(id) {
            return Err(KeyError::Format {
                path: path.into(),
                reason: format!(
                    "it holds no version `{id}` (versions: {}); add one with `matchpoint keys rotate`",
                    key.index_versions()
                        .iter()
                        .map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        write_replacing(path, &key.file_text())
    }

    /// The key file's text (secrets included; zeroised on drop).
    fn file_text(&self) -> Zeroizing<String> {
        let mut t = Zeroizing::new(String::new());
        t.push_str(
            "# Matchpoint pseudonymisation key. Secret: keep mode 0600, never commit it,\n\
             # back it up offline. Losing it makes existing pseudonyms unreachable.\n\
             # Index versions below were added by `matchpoint keys rotate`; keep every version\n\
             # until `matchpoint keys status` shows no row carries it. Audit versions were added\n\
             # by `keys rotate --audit`; keep each for the whole audit retention period.\n",
        );
        t.push_str(&format!("key_id = \"{}\"\n", self.id));
        t.push_str(&format!(
            "secret_hex = \"{}\"\n",
            Zeroizing::new(hex::encode(self.secret.as_slice())).as_str()
        ));
        t.push_str(&format!("active_index = \"{}\"\n", self.active_index_id()));
        // Written only once there are audit versions: a file without them stays readable by
        // builds that predate audit versions.
        if !self.audit.is_empty() {
            t.push_str(&format!("active_audit = \"{}\"\n", self.active_audit_id()));
        }
        for v in &self.versions {
            t.push_str(&format!(
                "\n[[index_versions]]\nkey_id = \"{}\"\nsecret_hex = \"{}\"\n",
                v.id,
                Zeroizing::new(hex::encode(v.secret.as_slice())).as_str()
            ));
        }
        for v in &self.audit {
            t.push_str(&format!(
                "\n[[audit_versions]]\nkey_id = \"{}\"\nsecret_hex = \"{}\"\n",
                v.id,
                Zeroizing::new(hex::encode(v.secret.as_slice())).as_str()
            ));
        }
        t
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

    /// The version (id and secret) new material of `purpose` is made with: the active index
    /// version for the index, the active audit version for audit pseudonyms and checkpoint
    /// tags, the base version for quarantine sealing.
    fn active_for(&self, purpose: KeyPurpose) -> (&KeyId, &[u8]) {
        let chosen = match purpose {
            KeyPurpose::Index => self.active.and_then(|i| self.versions.get(i)),
            KeyPurpose::Audit | KeyPurpose::AuditCheckpoint => {
                self.active_audit.and_then(|i| self.audit.get(i))
            }
            KeyPurpose::Quarantine => None,
        };
        match chosen {
            Some(v) => (&v.id, v.secret.as_slice()),
            None => (&self.id, self.secret.as_slice()),
        }
    }

    /// Derives the 256-bit subkey for one purpose with HKDF-SHA256, under the active version
    /// for that purpose.
    fn subkey(&self, purpose: KeyPurpose) -> Zeroizing<[u8; 32]> {
        derive(self.active_for(purpose).1, purpose)
    }

    /// A pseudonymiser for one purpose, under the version new material uses: for
    /// [`KeyPurpose::Index`] the active index version (what new rows carry), for
    /// [`KeyPurpose::Audit`] the active audit version.
    pub fn pseudonymiser(&self, purpose: KeyPurpose) -> Pseudonymiser {
        let (id, secret) = self.active_for(purpose);
        Pseudonymiser::new(id.clone(), purpose, &derive(secret, purpose))
    }

    /// The id of the version [`MasterKey::mac`] signs `purpose` with (the active audit
    /// version for [`KeyPurpose::AuditCheckpoint`]); store it beside the tag.
    pub fn mac_key_id(&self, purpose: KeyPurpose) -> &KeyId {
        self.active_for(purpose).0
    }

    /// HMAC-SHA256 tag of `message` under the subkey for `purpose` of the active version
    /// (audit checkpoints and retention anchors use [`KeyPurpose::AuditCheckpoint`]).
    pub fn mac(&self, purpose: KeyPurpose, message: &[u8]) -> [u8; 32] {
        hmac_tag(&self.subkey(purpose), message)
    }

    /// Checks an HMAC tag made by [`MasterKey::mac`] under the active version, in constant time.
    pub fn verify_mac(&self, purpose: KeyPurpose, message: &[u8], tag: &[u8]) -> bool {
        hmac_check(&self.subkey(purpose), message, tag)
    }

    /// Checks an HMAC tag made under version `key_id` (the one stored beside it), in constant
    /// time: `None` when the file holds no such version for `purpose` (audit purposes look at
    /// the base and the audit versions, the index purpose at the base and the index versions).
    pub fn verify_mac_with(
        &self,
        key_id: &str,
        purpose: KeyPurpose,
        message: &[u8],
        tag: &[u8],
    ) -> Option<bool> {
        let secret = if key_id == self.id.as_str() {
            self.secret.as_slice()
        } else {
            let pool = match purpose {
                KeyPurpose::Audit | KeyPurpose::AuditCheckpoint => &self.audit,
                KeyPurpose::Index => &self.versions,
                KeyPurpose::Quarantine => return None,
            };
            pool.iter()
                .find(|v| v.id.as_str() == key_id)?
                .secret
                .as_slice()
        };
        Some(hmac_check(&derive(secret, purpose), message, tag))
    }

    /// The authenticated-encryption key for quarantined raw records.
    pub fn sealer(&self) -> Sealer {
        Sealer::new(self.id.clone(), &self.subkey(KeyPurpose::Quarantine))
    }
}

fn hmac_tag(subkey: &[u8; 32], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(subkey) else {
        unreachable!("HMAC accepts any key length")
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn hmac_check(subkey: &[u8; 32], message: &[u8], tag: &[u8]) -> bool {
    use hmac::Mac;
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(subkey) else {
        unreachable!("HMAC accepts any key length")
    };
    mac.update(message);
    mac.verify_slice(tag).is_ok()
}

/// HKDF-SHA256 subkey of `secret` for one purpose.
fn derive(secret: &[u8], purpose: KeyPurpose) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(b"matchpoint-hkdf-salt-v1"), secret);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(purpose.info(), okm.as_mut()).is_err() {
        unreachable!("HKDF expand of 32 bytes");
    }
    okm
}

/// Replaces the file at `path` with `text`: a 0600 temporary file in the same directory,
/// synced, then renamed over it, so a crash leaves the old or the new file, never half of one.
fn write_replacing(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let werr = |source| KeyError::Write {
        path: path.into(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".rotating");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&tmp).map_err(werr)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(werr)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(())
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

    #[cfg(unix)]
    fn write_0600(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[cfg(unix)]
    #[test]
    fn rotate_adds_an_inactive_version_and_activate_switches_index_pseudonyms_only() {
        use crate::bsn::Bsn;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        MasterKey::generate_file(&path, "k1").expect("keygen");
        let before = MasterKey::load(&path).expect("load");
        let bsn = Bsn::parse("111222333").expect("bsn");
        let p1 = before.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn);

        MasterKey::rotate_file(&path, "k2").expect("rotate");
        let rotated = MasterKey::load(&path).expect("load rotated");
        assert_eq!(
            rotated.active_index_id().as_str(),
            "k1",
            "rotate must not activate"
        );
        assert_eq!(
            rotated.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn),
            p1
        );
        let ids: Vec<&str> = rotated
            .index_versions()
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(ids, ["k1", "k2"]);
        assert!(matches!(
            MasterKey::rotate_file(&path, "k2"),
            Err(KeyError::Format { .. })
        ));

        MasterKey::activate_file(&path, "k2").expect("activate");
        let active = MasterKey::load(&path).expect("load activated");
        let p2 = active.pseudonymiser(KeyPurpose::Index);
        assert_eq!(p2.key_id().as_str(), "k2");
        assert_ne!(p2.pseudonymise(&bsn), p1);
        let all: Vec<_> = active
            .index_pseudonymisers()
            .iter()
            .map(|p| p.pseudonymise(&bsn))
            .collect();
        assert!(all.contains(&p1) && all.contains(&p2.pseudonymise(&bsn)));
        // The base version still signs the audit trail and seals quarantine copies.
        assert_eq!(active.id().as_str(), "k1");
        assert_eq!(
            active.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn),
            before.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn)
        );
        let tag = before.mac(KeyPurpose::AuditCheckpoint, b"m");
        assert!(active.verify_mac(KeyPurpose::AuditCheckpoint, b"m", &tag));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(MasterKey::activate_file(&path, "k9").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_with_a_missing_or_invalid_version_fails_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        let good = "aa".repeat(32);
        write_0600(
            &path,
            &format!("key_id = \"k1\"\nsecret_hex = \"{good}\"\nactive_index = \"k2\"\n"),
        );
        let err = MasterKey::load(&path).expect_err("missing active version");
        assert!(err.to_string().contains("`k2`"), "{err}");
        assert!(err.to_string().contains("backup"), "{err}");

        write_0600(
            &path,
            &format!(
                "key_id = \"k1\"\nsecret_hex = \"{good}\"\n\n[[index_versions]]\n\
                 key_id = \"k2\"\nsecret_hex = \"zz{good}\"\n"
            ),
        );
        let err = MasterKey::load(&path).expect_err("invalid version");
        assert!(err.to_string().contains("index version `k2`"), "{err}");
        assert!(!err.to_string().contains(&good), "{err}");

        write_0600(
            &path,
            &format!(
                "key_id = \"k1\"\nsecret_hex = \"{good}\"\n\n[[index_versions]]\n\
                 key_id = \"k1\"\nsecret_hex = \"{good}\"\n"
            ),
        );
        let err = MasterKey::load(&path).expect_err("duplicate version");
        assert!(err.to_string().contains("twice"), "{err}");

        write_0600(
            &path,
            &format!(
                "key_id = \"k1\"\nsecret_hex = \"{good}\"\n\n[[index_versions]]\n\
                 key_id = \"k2\"\nsecret_hex = \"0011\"\n"
            ),
        );
        assert!(matches!(
            MasterKey::load(&path),
            Err(KeyError::Short { bits: 16, .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn audit_rotation_switches_audit_pseudonyms_and_tags_only_and_old_versions_still_verify() {
        use crate::bsn::Bsn;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        MasterKey::generate_file(&path, "k1").expect("keygen");
        let before = MasterKey::load(&path).expect("load");
        let bsn = Bsn::parse("111222333").expect("bsn");
        let a1 = before.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn);
        let i1 = before.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn);
        let tag1 = before.mac(KeyPurpose::AuditCheckpoint, b"m");
        assert_eq!(
            before.mac_key_id(KeyPurpose::AuditCheckpoint).as_str(),
            "k1"
        );

        MasterKey::rotate_audit_file(&path, "a2").expect("rotate --audit");
        let rotated = MasterKey::load(&path).expect("load");
        assert_eq!(
            rotated.active_audit_id().as_str(),
            "k1",
            "rotate must not activate"
        );
        // Ids are unique across the file: neither rotation may reuse one.
        assert!(MasterKey::rotate_audit_file(&path, "a2").is_err());
        assert!(MasterKey::rotate_file(&path, "a2").is_err());
        assert!(
            MasterKey::activate_file(&path, "a2").is_err(),
            "an audit version is no index version"
        );

        MasterKey::activate_audit_file(&path, "a2").expect("activate --audit");
        let after = MasterKey::load(&path).expect("load");
        assert_eq!(after.active_audit_id().as_str(), "a2");
        let a2 = after.pseudonymiser(KeyPurpose::Audit);
        assert_eq!(a2.key_id().as_str(), "a2");
        assert_ne!(
            a2.pseudonymise(&bsn),
            a1,
            "a new audit version makes new subjects"
        );
        // The index and the quarantine are unaffected.
        assert_eq!(
            after.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn),
            i1
        );
        assert_eq!(after.active_index_id().as_str(), "k1");
        assert_eq!(after.sealer().key_id().as_str(), "k1");
        // Every audit version is consulted; tags verify with the version that made them.
        let all: Vec<_> = after
            .audit_pseudonymisers()
            .iter()
            .map(|p| p.pseudonymise(&bsn))
            .collect();
        assert_eq!(all, [a1, a2.pseudonymise(&bsn)]);
        assert_eq!(after.mac_key_id(KeyPurpose::AuditCheckpoint).as_str(), "a2");
        let tag2 = after.mac(KeyPurpose::AuditCheckpoint, b"m");
        assert_ne!(tag1, tag2);
        assert_eq!(
            after.verify_mac_with("k1", KeyPurpose::AuditCheckpoint, b"m", &tag1),
            Some(true)
        );
        assert_eq!(
            after.verify_mac_with("a2", KeyPurpose::AuditCheckpoint, b"m", &tag2),
            Some(true)
        );
        assert_eq!(
            after.verify_mac_with("a2", KeyPurpose::AuditCheckpoint, b"m", &tag1),
            Some(false)
        );
        assert_eq!(
            after.verify_mac_with("a9", KeyPurpose::AuditCheckpoint, b"m", &tag1),
            None
        );
        assert!(MasterKey::activate_audit_file(&path, "a9").is_err());
        // Back to the base version is allowed (e.g. undoing an early activation).
        MasterKey::activate_audit_file(&path, "k1").expect("activate base");
        assert_eq!(
            MasterKey::load(&path)
                .expect("load")
                .active_audit_id()
                .as_str(),
            "k1"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_from_before_audit_versions_loads_unchanged() {
        use crate::bsn::Bsn;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        let good = "ab".repeat(32);
        let other = "cd".repeat(32);
        write_0600(
            &path,
            &format!(
                "key_id = \"k1\"\nsecret_hex = \"{good}\"\nactive_index = \"k2\"\n\n\
                 [[index_versions]]\nkey_id = \"k2\"\nsecret_hex = \"{other}\"\n"
            ),
        );
        let key = MasterKey::load(&path).expect("old format loads");
        let base = MasterKey::from_secret("k1", &[0xab; 32]).expect("key");
        let bsn = Bsn::parse("111222333").expect("bsn");
        assert_eq!(key.active_audit_id().as_str(), "k1");
        assert_eq!(key.audit_versions().len(), 1);
        assert_eq!(
            key.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn),
            base.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn)
        );
        assert_eq!(
            key.mac(KeyPurpose::AuditCheckpoint, b"m"),
            base.mac(KeyPurpose::AuditCheckpoint, b"m")
        );
        // Rewriting a file without audit versions adds no audit fields.
        MasterKey::activate_file(&path, "k1").expect("activate");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            !text.contains("audit_versions") && !text.contains("active_audit"),
            "{text}"
        );
        // A missing active audit version fails clearly.
        write_0600(
            &path,
            &format!("key_id = \"k1\"\nsecret_hex = \"{good}\"\nactive_audit = \"a2\"\n"),
        );
        let err = MasterKey::load(&path).expect_err("missing audit version");
        assert!(
            err.to_string().contains("`a2`") && err.to_string().contains("backup"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn audit_versions_make_distinct_subjects_and_leave_index_pseudonyms_alone(
            n in 1usize..4,
            active in 0usize..4,
            seed in proptest::prelude::any::<u8>(),
            digits in 100_000_000u32..999_999_999,
        ) {
            let Ok(bsn) = crate::bsn::Bsn::parse(&digits.to_string()) else {
                return Ok(());
            };
            let base = MasterKey::from_secret("base", &[seed; 32]).expect("key");
            let mut key = MasterKey::from_secret("base", &[seed; 32]).expect("key");
            for i in 0..n {
                key = key
                    .with_audit_version(&format!("a{i}"), &[seed.wrapping_add(i as u8 + 1); 32])
                    .expect("version");
            }
            let want = if active == 0 || active > n { "base".to_owned() } else { format!("a{}", active - 1) };
            proptest::prop_assert!(key.activate_audit(&want));
            // Index pseudonyms never depend on the audit versions.
            proptest::prop_assert_eq!(
                key.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn),
                base.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn)
            );
            // Every audit version gives another subject, none equal to an index pseudonym.
            let subjects: Vec<_> = key.audit_pseudonymisers().iter().map(|p| p.pseudonymise(&bsn)).collect();
            proptest::prop_assert_eq!(subjects.len(), n + 1);
            for (i, a) in subjects.iter().enumerate() {
                for b in &subjects[i + 1..] {
                    proptest::prop_assert_ne!(a, b);
                }
                proptest::prop_assert_ne!(a, &key.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn));
            }
            let active_subject = key.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn);
            proptest::prop_assert!(subjects.contains(&active_subject));
            // The file round-trips with its audit versions and active version.
            let back = MasterKey::from_key_file_text(&key.file_text()).expect("reads back");
            proptest::prop_assert_eq!(back.active_audit_id().as_str(), want.as_str());
            proptest::prop_assert_eq!(back.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn), active_subject);
            let tag = key.mac(KeyPurpose::AuditCheckpoint, b"cp");
            proptest::prop_assert_eq!(back.verify_mac_with(&want, KeyPurpose::AuditCheckpoint, b"cp", &tag), Some(true));
        }

        #[test]
        fn any_key_file_text_loads_or_fails_without_quoting_a_secret(text in "\\PC{0,300}") {
            if let Err(e) = MasterKey::from_key_file_text(&text) {
                // No 64-hex-digit run of the input is ever echoed.
                let msg = e.to_string();
                for w in text.split(|c: char| !c.is_ascii_hexdigit()) {
                    if w.len() >= 64 {
                        proptest::prop_assert!(!msg.contains(w));
                    }
                }
            }
        }

        #[test]
        fn a_written_key_file_reads_back_with_its_versions(
            n in 0usize..4,
            active in 0usize..4,
            seed in proptest::prelude::any::<u8>(),
        ) {
            let mut key = MasterKey::from_secret("base", &[seed; 32]).expect("key");
            for i in 0..n {
                key = key
                    .with_index_version(&format!("v{i}"), &[seed.wrapping_add(i as u8 + 1); 32])
                    .expect("version");
            }
            let want = if active == 0 || active > n { "base".to_owned() } else { format!("v{}", active - 1) };
            proptest::prop_assert!(key.activate_index(&want));
            let back = MasterKey::from_key_file_text(&key.file_text()).expect("reads back");
            proptest::prop_assert_eq!(back.active_index_id().as_str(), want.as_str());
            proptest::prop_assert_eq!(back.index_versions().len(), n + 1);
            let bsn = crate::bsn::Bsn::parse("111222333").expect("bsn");
            proptest::prop_assert_eq!(
                back.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn),
                key.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn)
            );
        }
    }
}
