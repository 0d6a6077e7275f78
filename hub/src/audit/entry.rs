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

impl AuditAction {
    /// Every action, in declaration order.
    pub const ALL: [AuditAction; 10] = [
        AuditAction::Lookup,
        AuditAction::BreakGlassLookup,
        AuditAction::AuditSearch,
        AuditAction::SubjectAccessReport,
        AuditAction::AuditExport,
        AuditAction::BreakGlassReview,
        AuditAction::AuditVerify,
        AuditAction::UserManagement,
        AuditAction::OperatorView,
        AuditAction::RetentionPurge,
    ];

    /// Stored code (the same as the JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Lookup => "lookup",
            AuditAction::BreakGlassLookup => "break_glass_lookup",
            AuditAction::AuditSearch => "audit_search",
            AuditAction::SubjectAccessReport => "subject_access_report",
            AuditAction::AuditExport => "audit_export",
            AuditAction::BreakGlassReview => "break_glass_review",
            AuditAction::AuditVerify => "audit_verify",
            AuditAction::UserManagement => "user_management",
            AuditAction::OperatorView => "operator_view",
            AuditAction::RetentionPurge => "retention_purge",
        }
    }

    /// Parses a stored code.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == code)
    }
}

impl AuditOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [AuditOutcome; 5] = [
        AuditOutcome::Granted,
        AuditOutcome::Refused,
        AuditOutcome::BreakGlass,
        AuditOutcome::Invalid,
        AuditOutcome::Error,
    ];

    /// Stored code (the same as the JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Granted => "granted",
            AuditOutcome::Refused => "refused",
            AuditOutcome::BreakGlass => "break_glass",
            AuditOutcome::Invalid => "invalid",
            AuditOutcome::Error => "error",
        }
    }

    /// Parses a stored code.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == code)
    }
}

impl NewAuditEntry {
    /// An entry with the required fields and everything else empty (`records_returned` 0).
    pub fn new(
        role: impl Into<String>,
        action: AuditAction,
        outcome: AuditOutcome,
        request_id: impl Into<String>,
    ) -> Self {
        NewAuditEntry {
            user_id: None,
            role: role.into(),
            organisation: None,
            action,
            subject: None,
            subject_key_id: None,
            purpose: None,
            outcome,
            checks: Vec::new(),
            break_glass: None,
            records_returned: 0,
            client_addr: None,
            request_id: request_id.into(),
            refers_to: None,
        }
    }

    /// Makes this entry the review of break-glass entry `reviewed_seq`: action
    /// [`AuditAction::BreakGlassReview`], `refers_to = reviewed_seq`, the check
    /// `verdict:<code>`, and `break_glass = "<code>: <note>"`. Reviews are new entries, never
    /// updates; an entry leaves the review queue once a review refers to it.
    pub fn into_review(mut self, reviewed_seq: i64, verdict_code: &str, note: &str) -> Self {
        self.action = AuditAction::BreakGlassReview;
        self.refers_to = Some(reviewed_seq);
        self.checks.push(format!("verdict:{verdict_code}"));
        self.break_glass = Some(format!("{verdict_code}: {note}"));
        self
    }
}
