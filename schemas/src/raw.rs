//! Raw records: what a connector hands to mapping, before any interpretation.

use serde::{Deserialize, Serialize};

/// Where a record sits in its delivery, for error messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPosition {
    /// 1-based record number in the delivery.
    pub index: u64,
    /// Byte offset of the record's start in the delivery.
    pub byte_offset: u64,
}

/// A repeated group inside a record (e.g. one `relatie` element).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawGroup {
    /// The group's path relative to the record.
    pub path: String,
    /// Field path (relative to the group) → value.
    pub fields: Vec<(String, String)>,
}

/// One source record as delivered: field paths and values, nothing interpreted yet.
///
/// Holds clear identity (BSN, name) in memory only; it is sealed before it is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The record's id in the source, when the record has one.
    pub record_id: Option<String>,
    /// Position in the delivery.
    pub position: RecordPosition,
    /// Field path (relative to the record) → value.
    pub fields: Vec<(String, String)>,
    /// Repeated groups.
    pub groups: Vec<RawGroup>,
}

impl RawRecord {
    /// The value at `path`, if delivered.
    pub fn field(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }
}

impl RawGroup {
    /// The value at `path` inside this group, if delivered.
    pub fn field(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }
}
