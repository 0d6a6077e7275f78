//! The hash chain: canonical bytes of an entry and the chained hash.
//!
//! `canonical_bytes` is the only input to the hash besides the previous hash, so it must be
//! injective: two different entries never give the same bytes. It is built as
//!
//! ```text
//! "matchpoint-audit-v1"                      domain label (19 bytes, no prefix)
//! int(seq)                                    8 bytes, big-endian two's complement
//! str(at)                                     RFC 3339, UTC, microseconds, `Z`
//! opt(int(user_id))
//! str(role)
//! opt(str(organisation))
//! str(action code)                            e.g. `break_glass_lookup`
//! opt(str(subject))
//! opt(str(subject_key_id))
//! opt(str(purpose))
//! str(outcome code)
//! int(number of checks), then str(check) for each
//! opt(str(break_glass))
//! int(records_returned)
//! opt(str(client_addr))
//! str(request_id)
//! opt(int(refers_to))
//! ```
//!
//! where `str(s)` = 8-byte big-endian length ‖ UTF-8 bytes, `opt(None)` = one byte `0`,
//! `opt(Some(x))` = one byte `1` ‖ x. Every field is self-delimiting and the order is fixed,
//! so the encoding can be parsed back unambiguously — hence injective.
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ canonical_bytes(entry n))`, with `hash(0)` =
//! [`GENESIS_HASH`] (32 zero bytes). Hashes are stored as lower-case hex.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::entry::NewAuditEntry;

/// The hash before the first entry: 32 zero bytes.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Domain label at the start of every entry's canonical bytes (format version 1).
pub const CANONICAL_LABEL: &[u8] = b"matchpoint-audit-v1";

/// The stored text form of an entry's time: UTC, microseconds, `Z`. Part of the hash.
pub fn time_text(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `at` truncated to whole microseconds (what both stores keep exactly).
pub fn truncate_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

fn put_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_int(out, i64::try_from(s.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_opt_int(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_int(out, n);
        }
    }
}

/// The canonical bytes of an entry at position `seq`, written at `at` (see the module docs).
pub fn canonical_bytes(seq: i64, at: &DateTime<Utc>, e: &NewAuditEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(CANONICAL_LABEL);
    put_int(&mut out, seq);
    put_str(&mut out, &time_text(at));
    put_opt_int(&mut out, e.user_id);
    put_str(&mut out, &e.role);
    put_opt_str(&mut out, e.organisation.as_deref());
    put_str(&mut out, e.action.as_str());
    put_opt_str(&mut out, e.subject.as_deref());
    put_opt_str(&mut out, e.subject_key_id.as_deref());
    put_opt_str(&mut out, e.purpose.as_deref());
    put_str(&mut out, e.outcome.as_str());
    put_int(&mut out, i64::try_from(e.checks.len()).unwrap_or(i64::MAX));
    for c in &e.checks {
        put_str(&mut out, c);
    }
    put_opt_str(&mut out, e.break_glass.as_deref());
    put_int(&mut out, i64::from(e.records_returned));
    put_opt_str(&mut out, e.client_addr.as_deref());
    put_str(&mut out, &e.request_id);
    put_opt_int(&mut out, e.refers_to);
    out
}

/// `SHA-256(prev ‖ canonical_bytes(seq, at, entry))`.
pub fn chain_hash(prev: &[u8; 32], seq: i64, at: &DateTime<Utc>, e: &NewAuditEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical_bytes(seq, at, e));
    h.finalize().into()
}

/// Parses a stored hex hash; `None` when it is not 64 hex digits.
pub fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}
