//! Rejections: the field at fault and a reason that is safe to store and show.

use std::fmt;

/// Why a record cannot be accepted. Messages never contain a BSN or a client's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The BSN is missing.
    MissingBsn,
    /// The BSN fails normalisation or the elfproef.
    InvalidBsn,
    /// A required field is missing or empty.
    MissingField,
    /// A code is not in the mapping's code table (or registry).
    UnknownCode { table: &'static str, code: String },
    /// A date does not parse with the mapping's format.
    BadDate,
    /// The end date lies before the start date.
    EndBeforeStart,
    /// The same record id came twice in one delivery.
    DuplicateRecord,
    /// The record is structurally broken (reported by the connector).
    Malformed(String),
}

impl RejectReason {
    /// Stable machine-readable code, used in listings, reports and the generator's manifest.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::MissingBsn | RejectReason::MissingField => "missing_field",
            RejectReason::InvalidBsn => "invalid_bsn",
            RejectReason::UnknownCode { .. } => "unknown_code",
            RejectReason::BadDate => "bad_date",
            RejectReason::EndBeforeStart => "end_before_start",
            RejectReason::DuplicateRecord => "duplicate_record",
            RejectReason::Malformed(_) => "malformed_record",
        }
    }
}

/// Shows a source code only when it cannot be a BSN: at most 24 characters, no run of
/// 5 or more digits, printable.
fn safe_code(code: &str) -> String {
    let mut run = 0;
    let mut long_run = false;
    for c in code.chars() {
        if c.is_ascii_digit() {
            run += 1;
            long_run |= run >= 5;
        } else {
            run = 0;
        }
    }
    if long_run || code.chars().count() > 24 || code.chars().any(char::is_control) {
        "<withheld>".to_owned()
    } else {
        code.to_owned()
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::MissingBsn => f.write_str("BSN is missing"),
            RejectReason::InvalidBsn => f.write_str("BSN fails elfproef or is not 8-9 digits"),
            RejectReason::MissingField => f.write_str("required field is missing or empty"),
            RejectReason::UnknownCode { table, code } => {
                write!(f, "unknown {table} code `{}`", safe_code(code))
            }
            RejectReason::BadDate => f.write_str("date does not match the mapping's date format"),
            RejectReason::EndBeforeStart => f.write_str("end date lies before start date"),
            RejectReason::DuplicateRecord => {
                f.write_str("record id delivered more than once in one delivery")
            }
            RejectReason::Malformed(m) => write!(f, "malformed record: {m}"),
        }
    }
}

/// A rejected record: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The source field path at fault, when one is.
    pub field: Option<String>,
    /// Why.
    pub reason: RejectReason,
}

impl Rejection {
    pub(crate) fn at(field: &str, reason: RejectReason) -> Self {
        Rejection {
            field: Some(field.to_owned()),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_that_could_be_a_bsn_are_withheld() {
        let r = RejectReason::UnknownCode {
            table: "life_domain",
            code: "123456782".into(),
        };
        assert!(!r.to_string().contains("12345"));
        let r = RejectReason::UnknownCode {
            table: "life_domain",
            code: "XYZ".into(),
        };
        assert!(r.to_string().contains("`XYZ`"));
    }
}
