//! What one audit entry holds (in the spirit of NEN 7513). Shared contract between the audit
//! trail (writing, chaining, verifying) and the API (deciding what to write).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A professional's lookup of a person.
    Lookup,
    /// A lookup with break-the-glass.
    BreakGlassLookup,
    /// A privacy officer searched the audit trail.
    AuditSearch,
    /// A subject access report was produced.
    SubjectAccessReport,
    /// An export of audit entries.
    AuditExport,
    /// A break-glass access was reviewed (verdict).
    BreakGlassReview,
    /// The chain was verified through the API or CLI.
    AuditVerify,
    /// A user was added, disabled or given a new token.
    UserManagement,
    /// Operator views of runs, quarantine or data quality.
    OperatorView,
    /// Entries removed at the end of their retention (the privileged path).
    RetentionPurge,
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Answered.
    Granted,
    /// Refused (need-to-know, role).
    Refused,
    /// Answered through break-the-glass; goes to the review queue.
    BreakGlass,
    /// Rejected as invalid input (e.g. BSN fails the elfproef).
    Invalid,
    /// Failed for another reason.
    Error,
}

/// An entry as the caller hands it in; the trail adds sequence number, time and hashes.
///
/// Never holds a clear BSN or name: `subject` is the audit-key pseudonym (hex), which cannot
/// be joined by value with index pseudonyms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// The acting user's id (`None` for the CLI acting as the local operator).
    pub user_id: Option<i64>,
    /// The user's role at the time (`professional`, `privacy_officer`, `operator`, `admin`, `cli`).
    pub role: String,
    /// The user's organisation code.
    pub organisation: Option<String>,
    /// What was done.
    pub action: AuditAction,
    /// Audit pseudonym of the person concerned, hex, with its key id.
    pub subject: Option<String>,
    /// Key id of the audit subkey that made `subject`.
    pub subject_key_id: Option<String>,
    /// Purpose code given with the request.
    pub purpose: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Checks done, e.g. `["authenticated","role","relationship:none","break_glass:safety"]`.
    pub checks: Vec<String>,
    /// Break-glass reason code and justification (already checked to hold no BSN).
    pub break_glass: Option<String>,
    /// Number of involvement records returned.
    pub records_returned: u32,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The request id (also in the response header and the logs).
    pub request_id: String,
    /// For reviews: the sequence number of the entry reviewed.
    pub refers_to: Option<i64>,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, 1-based, gapless.
    pub seq: i64,
    /// UTC time the entry was written.
    pub at: DateTime<Utc>,
    /// What the caller gave.
    #[serde(flatten)]
    pub entry: NewAuditEntry,
    /// SHA-256 of the previous entry's hash and this entry's canonical bytes, hex.
    pub hash: String,
}
