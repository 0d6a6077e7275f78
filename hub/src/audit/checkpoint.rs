//! Signed checkpoints (size + head hash) and retention anchors.
//!
//! A checkpoint is printed as one JSON line, e.g.
//! `{"size":42,"head_hash":"…","at":"2026-11-30T07:00:00.000000Z","key_id":"k1","tag":"…"}`,
//! to be stored outside the database (a ticket, a mail to the privacy officer, a WORM bucket).
//! `tag` = hex HMAC-SHA256 under the master key's [`KeyPurpose::AuditCheckpoint`] subkey over
//! `"matchpoint-audit-checkpoint-v1" ‖ int(size) ‖ str(head_hash) ‖ str(at) ‖ str(key_id)`
//! (the length-prefixed encoding of [`super::chain`]). Anyone with the key can check it; no
//! one without the key can make one, so a rewritten database cannot come with a matching
//! fresh checkpoint.

use chrono::{DateTime, Utc};
use matchpoint_schemas::{KeyPurpose, MasterKey};
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::chain::{time_text, truncate_micros};

/// Largest checkpoint text accepted by [`Checkpoint::parse`].
pub const MAX_CHECKPOINT_BYTES: usize = 4096;

/// A signed statement "the chain had `size` entries ending in `head_hash` at `at`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Number of the last entry (the chain's sequence number at the head); 0 for empty.
    pub size: i64,
    /// Hash of entry `size` (hex), or the genesis hash for an empty chain.
    pub head_hash: String,
    /// When the checkpoint was made (UTC).
    pub at: DateTime<Utc>,
    /// Id of the master key whose checkpoint subkey signed it.
    pub key_id: String,
    /// Hex HMAC-SHA256 tag (see the module docs).
    pub tag: String,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn checkpoint_message(size: i64, head_hash: &str, at: &DateTime<Utc>, key_id: &str) -> Vec<u8> {
    let mut m = b"matchpoint-audit-checkpoint-v1".to_vec();
    m.extend_from_slice(&size.to_be_bytes());
    put_str(&mut m, head_hash);
    put_str(&mut m, &time_text(at));
    put_str(&mut m, key_id);
    m
}

pub(crate) fn anchor_message(
    first_seq: i64,
    prev_hash: &str,
    at: &DateTime<Utc>,
    key_id: &str,
) -> Vec<u8> {
    let mut m = b"matchpoint-audit-anchor-v1".to_vec();
    m.extend_from_slice(&first_seq.to_be_bytes());
    put_str(&mut m, prev_hash);
    put_str(&mut m, &time_text(at));
    put_str(&mut m, key_id);
    m
}

impl Checkpoint {
    /// Signs a checkpoint for a chain of `size` entries ending in `head_hash`.
    pub fn sign(key: &MasterKey, size: i64, head_hash: &str, at: DateTime<Utc>) -> Checkpoint {
        let at = truncate_micros(at);
        // The active audit version (`keys rotate --audit`); verified with the same version.
        let key_id = key
            .mac_key_id(KeyPurpose::AuditCheckpoint)
            .as_str()
            .to_owned();
        let tag = key.mac(
            KeyPurpose::AuditCheckpoint,
            &checkpoint_message(size, head_hash, &at, &key_id),
        );
        Checkpoint {
            size,
            head_hash: head_hash.to_owned(),
            at,
            key_id,
            tag: hex::encode(tag),
        }
    }

    /// The one-line JSON form.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form (surrounding whitespace allowed). Does not check the signature:
    /// [`Checkpoint::check_signature`] (or `AuditLog::verify`) does.
    pub fn parse(text: &str) -> Result<Checkpoint, AuditError> {
        if text.len() > MAX_CHECKPOINT_BYTES {
            return Err(AuditError::Checkpoint(format!(
                "checkpoint is {} bytes, more than the {MAX_CHECKPOINT_BYTES} a checkpoint can be; \
                 pass the one JSON line `matchpoint audit checkpoint` printed",
                text.len()
            )));
        }
        let cp: Checkpoint = serde_json::from_str(text.trim()).map_err(|e| {
            AuditError::Checkpoint(format!(
                "not a checkpoint ({e}); expected the one JSON line `matchpoint audit checkpoint` \
                 printed, with size, head_hash, at, key_id and tag"
            ))
        })?;
        if cp.size < 0 {
            return Err(AuditError::Checkpoint(
                "checkpoint size is negative".to_owned(),
            ));
        }
        if super::chain::parse_hash(&cp.head_hash).is_none() {
            return Err(AuditError::Checkpoint(
                "checkpoint head_hash is not 64 hexadecimal digits".to_owned(),
            ));
        }
        Ok(cp)
    }

    /// Checks the HMAC tag with the audit version of `key` named in the checkpoint (any loaded
    /// audit version, so checkpoints from before an audit rotation still verify). Fails when
    /// the key file does not hold that version or any field was changed.
    pub fn check_signature(&self, key: &MasterKey) -> Result<(), AuditError> {
        let tag = hex::decode(&self.tag).map_err(|_| AuditError::CheckpointSignature)?;
        let msg = checkpoint_message(self.size, &self.head_hash, &self.at, &self.key_id);
        match key.verify_mac_with(&self.key_id, KeyPurpose::AuditCheckpoint, &msg, &tag) {
            Some(true) => Ok(()),
            Some(false) => Err(AuditError::CheckpointSignature),
            None => Err(AuditError::CheckpointKey {
                checkpoint: self.key_id.clone(),
                loaded: key
                    .audit_versions()
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
