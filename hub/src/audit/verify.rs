//! Chain verification: a streaming state machine both backends feed row by row, in `seq`
//! order, so memory stays bounded whatever the trail's size.

use matchpoint_schemas::{KeyPurpose, MasterKey};
use serde::{Deserialize, Serialize};

use super::chain::{GENESIS_HASH, chain_hash, parse_hash};
use super::checkpoint::{Checkpoint, anchor_message};
use super::{AuditEntry, RawRow};

/// What kind of damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The entry's content or hash was changed.
    Changed,
    /// The entry is missing (a gap in the sequence numbers).
    Removed,
    /// The entry is not in its place: the next row holds the entry that belongs here.
    Reordered,
    /// Entries at the end are missing (found against the checkpoint or the chain head).
    Truncated,
    /// The chain verifies by itself but does not reach the checkpoint's head hash: entries
    /// up to the checkpoint were rewritten with recomputed hashes.
    CheckpointMismatch,
    /// The retention anchor the chain starts from is not signed by the loaded key.
    AnchorInvalid,
    /// The chain head row does not match the last entry.
    HeadMismatch,
}

impl FailureKind {
    /// The code (as in the JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Changed => "changed",
            FailureKind::Removed => "removed",
            FailureKind::Reordered => "reordered",
            FailureKind::Truncated => "truncated",
            FailureKind::CheckpointMismatch => "checkpoint_mismatch",
            FailureKind::AnchorInvalid => "anchor_invalid",
            FailureKind::HeadMismatch => "head_mismatch",
        }
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyFailure {
    /// What kind.
    pub kind: FailureKind,
    /// The entry named (sequence number).
    pub seq: i64,
    /// In words, for operators.
    pub message: String,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when the chain (and the checkpoint, if given) verified.
    pub ok: bool,
    /// Entries whose hash was recomputed and matched.
    pub entries_verified: u64,
    /// The chain's first sequence number (1, or the retention anchor's).
    pub first_seq: i64,
    /// The last sequence number verified (first_seq - 1 when none).
    pub last_seq: i64,
    /// Hash of the last verified entry, hex.
    pub head_hash: String,
    /// Whether a checkpoint was compared and matched (`None`: none given).
    pub checkpoint_matched: Option<bool>,
    /// The first problem, when not ok.
    pub failure: Option<VerifyFailure>,
    /// Remarks that are not failures (e.g. a checkpoint older than the retention anchor).
    pub notes: Vec<String>,
}

/// The newest retention anchor, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    pub(crate) first_seq: i64,
    pub(crate) prev_hash: String,
    pub(crate) purged_at: chrono::DateTime<chrono::Utc>,
    pub(crate) key_id: String,
    pub(crate) tag: String,
}

/// A row being held back until the next one tells a change from a reorder.
struct Suspect {
    seq: i64,
}

/// The streaming verifier.
pub(crate) struct Verifier {
    first_seq: i64,
    expected: i64,
    prev: [u8; 32],
    verified: u64,
    checkpoint: Option<Checkpoint>,
    checkpoint_matched: Option<bool>,
    suspect: Option<Suspect>,
    failure: Option<VerifyFailure>,
    notes: Vec<String>,
}

impl Verifier {
    /// Starts at genesis or at the anchor (whose tag is checked with `key`).
    pub(crate) fn new(
        anchor: Option<Anchor>,
        checkpoint: Option<Checkpoint>,
        key: &MasterKey,
    ) -> Verifier {
        let mut v = Verifier {
            first_seq: 1,
            expected: 1,
            prev: GENESIS_HASH,
            verified: 0,
            checkpoint_matched: checkpoint.as_ref().map(|_| false),
            checkpoint,
            suspect: None,
            failure: None,
            notes: Vec::new(),
        };
        if let Some(a) = anchor {
            v.first_seq = a.first_seq;
            v.expected = a.first_seq;
            let msg = anchor_message(a.first_seq, &a.prev_hash, &a.purged_at, &a.key_id);
            // Verified with the audit version that signed it (any loaded one).
            let tag_ok = hex::decode(&a.tag).is_ok_and(|t| {
                key.verify_mac_with(&a.key_id, KeyPurpose::AuditCheckpoint, &msg, &t) == Some(true)
            });
            match parse_hash(&a.prev_hash) {
                Some(h) if tag_ok => v.prev = h,
                _ => {
                    v.fail(
                        FailureKind::AnchorInvalid,
                        a.first_seq,
                        format!(
                            "the retention anchor at entry {} does not verify under key version \
                             `{}` (loaded audit versions: {}): the start of the trail was altered, \
                             or the key file lacks that version",
                            a.first_seq,
                            a.key_id,
                            key.audit_versions()
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
            // A checkpoint taken exactly before the anchor can still be compared.
            v.compare_checkpoint_at(a.first_seq - 1);
            if let Some(cp) = &v.checkpoint
                && cp.size < a.first_seq - 1
            {
                v.notes.push(format!(
                    "the checkpoint (size {}) is older than the retention anchor (entries before \
                     {} were purged); it cannot be compared",
                    cp.size, a.first_seq
                ));
                v.checkpoint_matched = None;
            }
        } else {
            v.compare_checkpoint_at(0);
        }
        v
    }

    fn fail(&mut self, kind: FailureKind, seq: i64, message: String) {
        if self.failure.is_none() {
            self.failure = Some(VerifyFailure { kind, seq, message });
        }
    }

    /// True once a failure is known: the caller may stop reading.
    pub(crate) fn done(&self) -> bool {
        self.failure.is_some()
    }

    /// The sequence number from which rows are needed.
    pub(crate) fn first_seq(&self) -> i64 {
        self.first_seq
    }

    fn compare_checkpoint_at(&mut self, seq: i64) {
        let Some(cp) = &self.checkpoint else { return };
        if cp.size != seq {
            return;
        }
        if parse_hash(&cp.head_hash) == Some(self.prev) {
            self.checkpoint_matched = Some(true);
        } else {
            let size = cp.size;
            self.fail(
                FailureKind::CheckpointMismatch,
                size,
                format!(
                    "the chain up to entry {size} does not end in the checkpoint's head hash: \
                     entries up to {size} were rewritten (hashes recomputed) or removed"
                ),
            );
        }
    }

    /// Feeds the next row (in seq order).
    pub(crate) fn push(&mut self, row: RawRow) {
        if self.done() {
            return;
        }
        let seq = row.seq;
        let stored_hash = parse_hash(&row.hash);
        let decoded = row.decode();
        if let Some(s) = self.suspect.take() {
            // Does this row hold the entry that belongs at the suspect's place?
            let moved_here = match (&decoded, stored_hash) {
                (Ok(e), Some(h)) => chain_hash(&self.prev, s.seq, &e.at, &e.entry) == h,
                _ => false,
            };
            let (kind, what) = if moved_here {
                (
                    FailureKind::Reordered,
                    format!(
                        "entry {} is out of order: the entry that belongs at {} was found at {seq}",
                        s.seq, s.seq
                    ),
                )
            } else {
                (
                    FailureKind::Changed,
                    format!(
                        "entry {} was changed: its hash does not match its content and the \
                         previous entry",
                        s.seq
                    ),
                )
            };
            self.fail(kind, s.seq, what);
            return;
        }
        if seq != self.expected {
            let expected = self.expected;
            let message = if seq > expected {
                format!(
                    "entry {expected} was removed: the sequence jumps from {} to {seq}",
                    expected - 1
                )
            } else {
                format!("entry {seq} appears out of order after {}", expected - 1)
            };
            self.fail(FailureKind::Removed, expected, message);
            return;
        }
        let entry: AuditEntry = match decoded {
            Ok(e) => e,
            Err(why) => {
                self.fail(
                    FailureKind::Changed,
                    seq,
                    format!("entry {seq} was changed: {why}"),
                );
                return;
            }
        };
        let computed = chain_hash(&self.prev, seq, &entry.at, &entry.entry);
        if stored_hash != Some(computed) {
            // Decide between changed and reordered when the next row arrives.
            self.suspect = Some(Suspect { seq });
            return;
        }
        self.prev = computed;
        self.verified += 1;
        self.expected = seq + 1;
        self.compare_checkpoint_at(seq);
    }

    /// Ends the stream; `head` is the chain head row `(seq, hash)` read in the same snapshot.
    pub(crate) fn finish(mut self, head: Option<(i64, String)>) -> VerifyReport {
        if let Some(s) = self.suspect.take() {
            self.fail(
                FailureKind::Changed,
                s.seq,
                format!(
                    "entry {} was changed: its hash does not match its content and the previous \
                     entry",
                    s.seq
                ),
            );
        }
        let last = self.expected - 1;
        if !self.done()
            && let Some(cp) = &self.checkpoint
            && cp.size > last
        {
            let size = cp.size;
            self.fail(
                FailureKind::Truncated,
                last + 1,
                format!(
                    "the trail ends at entry {last} but the checkpoint covers {size} entries: \
                     entries {}..={size} were removed from the end",
                    last + 1
                ),
            );
        }
        if !self.done()
            && let Some((head_seq, head_hash)) = head
        {
            if head_seq > last {
                self.fail(
                    FailureKind::Truncated,
                    last + 1,
                    format!(
                        "the trail ends at entry {last} but its head records {head_seq} entries: \
                         entries {}..={head_seq} were removed from the end",
                        last + 1
                    ),
                );
            } else if head_seq < last || parse_hash(&head_hash) != Some(self.prev) {
                self.fail(
                    FailureKind::HeadMismatch,
                    last,
                    format!(
                        "the chain head (entry {head_seq}) does not match the last entry ({last})"
                    ),
                );
            }
        }
        VerifyReport {
            ok: self.failure.is_none(),
            entries_verified: self.verified,
            first_seq: self.first_seq,
            last_seq: last,
            head_hash: hex::encode(self.prev),
            checkpoint_matched: self.checkpoint_matched,
            failure: self.failure,
            notes: self.notes,
        }
    }
}
