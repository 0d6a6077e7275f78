//! The audit trail: every access to personal data, append-only and hash-chained.
//!
//! Contract (the API writes through it): [`AuditLog::append`] returns only once the entry is
//! durable in the store (group commit: concurrent appends share one transaction); when it
//! returns an error the caller must fail the request (fail-closed) and return no data.

pub mod entry;

pub use entry::{AuditAction, AuditEntry, AuditOutcome, NewAuditEntry};
