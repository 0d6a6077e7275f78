//! The iWmo source's state in the store (`Store::source_state`), so that a run reads only
//! the message files it has not applied yet.
//!
//! | kind | key | value |
//! |---|---|---|
//! | `meta` | `key_id` | the index key version the pair keys were made with |
//! | `file` | file name | [`FileEntry`]: size, modification time and SHA-256 of an applied file |
//! | `pair` | provider AGB code, `0`, client pseudonym | [`Logged`] messages of that provider for that client |
//!
//! A pair's log holds the header and products of every message applied to it, never the
//! client (BSN, birth date): a run replays the log of each (provider, client) pair a new
//! message concerns, with the client of the new message, so a late message is applied in
//! its place and a start that arrived before its assignment takes effect, exactly as when
//! the whole folder is read. Changes are staged with the run and published in the same
//! transaction as its involvements.

use std::path::Path;
use std::time::UNIX_EPOCH;

use matchpoint_connectors::iwmo::{Body, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StateChange;

/// State kinds.
pub const META: &str = "meta";
/// Applied files.
pub const FILE: &str = "file";
/// Message logs per (provider, client pseudonym).
pub const PAIR: &str = "pair";
/// The `meta` key holding the key version.
pub const KEY_ID: &[u8] = b"key_id";

/// What is known of an applied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 when unknown).
    pub mtime: u128,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

impl FileEntry {
    /// Size and modification time of `path` (the hash is filled in by [`FileEntry::read`]).
    pub fn stat(path: &Path) -> std::io::Result<(u64, u128)> {
        let m = std::fs::metadata(path)?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok((m.len(), mtime))
    }

    /// Size, modification time and hash of `path` (reads the file; at most `max` bytes).
    pub fn read(path: &Path, max: u64) -> std::io::Result<Self> {
        let (size, mtime) = Self::stat(path)?;
        let mut h = Sha256::new();
        let mut f = std::io::Read::take(std::fs::File::open(path)?, max);
        std::io::copy(&mut f, &mut h)?;
        Ok(FileEntry {
            size,
            mtime,
            sha256: hex::encode(h.finalize()),
        })
    }

    /// Whether the file may have changed since this entry (size or time differ).
    pub fn differs(&self, size: u64, mtime: u128) -> bool {
        self.size != size || self.mtime != mtime
    }

    /// The state change recording it.
    pub fn change(&self, name: &str) -> StateChange {
        StateChange {
            kind: FILE.into(),
            key: name.as_bytes().to_vec(),
            value: serde_json::to_vec(self).ok(),
        }
    }
}

/// One applied message in a pair's log: no client data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// The file it came from (orders messages that sort equal otherwise).
    pub file: String,
    /// Its header.
    pub header: Header,
    /// Its products.
    pub body: Body,
}

/// The state key of a (provider, client pseudonym) pair.
pub fn pair_key(provider: &str, pseudonym: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 33);
    k.extend_from_slice(provider.as_bytes());
    k.push(0);
    k.extend_from_slice(pseudonym);
    k
}

/// The state change storing a pair's log.
pub fn pair_change(key: Vec<u8>, log: &[Logged]) -> StateChange {
    StateChange {
        kind: PAIR.into(),
        key,
        value: serde_json::to_vec(log).ok(),
    }
}

/// A pair's log as stored; `None` when it cannot be read (the run then fails).
pub fn parse_log(value: &[u8]) -> Option<Vec<Logged>> {
    serde_json::from_slice(value).ok()
}

/// A file entry as stored.
pub fn parse_file(value: &[u8]) -> Option<FileEntry> {
    serde_json::from_slice(value).ok()
}
