//! Source connectors. Each turns one delivery of a source system into a stream of
//! [`RawRecord`]s, with per-record problems separated from problems that fail the delivery.
//!
//! - [`fhir`]: FHIR R4 REST `EpisodeOfCare` searches with included resources (a paged kind).
//! - [`csv_drop`]: semicolon-separated Windows-1252 CSV drops, read streaming.
//! - [`http`]: HTTP plumbing of the HTTP paged kinds (auth, failure classes, capped bodies).
//! - [`json_flatten`]: JSON objects to field paths and groups (REST/JSON, FHIR).
//! - [`iwmo`]: iWmo 3.2 messages (WMO301/305/307), one per file, read streaming into typed messages.
//! - [`location`]: opening a delivery from a folder/file or an HTTP(S) URL, size-capped.
//! - [`paged`]: the contract of paged sources (REST/JSON, FHIR, SOAP, SQL).
//! - [`runner`]: the shared runner every paged kind goes through (retries, paging, cancel).
//! - [`rest_json`]: kind `rest_json`, a paginated REST/JSON API.
//! - [`soap`]: kind `soap`, a SOAP-style XML web service (one POSTed envelope per page).
//! - [`xml_export`]: the OKC nightly XML export file, parsed streaming with quick-xml.

pub mod csv_drop;
pub mod fhir;
pub mod http;
pub mod iwmo;
pub mod json_flatten;
pub mod location;
pub mod paged;
pub mod rest_json;
pub mod runner;
pub mod soap;
pub mod xml_export;

use matchpoint_schemas::{RawRecord, RecordPosition};

/// A problem with one record: the record goes to quarantine, the delivery goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The record's id, when it could be read.
    pub record_id: Option<String>,
    /// Where the record is.
    pub position: RecordPosition,
    /// Which field, when one field is at fault.
    pub field: Option<String>,
    /// What is wrong; never contains a field's value.
    pub reason: String,
}

/// A problem with the delivery as a whole: the run fails and nothing is published.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The delivery could not be opened or read.
    #[error("cannot read {location}: {message}")]
    Io { location: String, message: String },
    /// The delivery breaks the format at a position.
    #[error(
        "{location}: malformed delivery at byte {byte_offset} (record {record_index}): {message}"
    )]
    Malformed {
        location: String,
        byte_offset: u64,
        record_index: u64,
        message: String,
    },
    /// The delivery ended before it was complete.
    #[error("{location}: delivery is truncated ({message}); nothing was published")]
    Truncated { location: String, message: String },
    /// A configured limit was exceeded.
    #[error("{location}: {message}")]
    Limit { location: String, message: String },
}

/// What a connector yields for each record.
pub type RecordResult = Result<RawRecord, RecordError>;

/// One delivery being read, whatever the connector kind: records in delivery order, then the
/// cursor the delivery proves. The sync pipeline reads every kind through this trait on its
/// reader thread (so implementations need not be `Send`).
pub trait RecordStream {
    /// The next record: `Ok(Some(Ok(_)))` a record, `Ok(Some(Err(_)))` a record for
    /// quarantine, `Ok(None)` the end of the delivery, `Err(_)` a failed delivery (nothing is
    /// published; the stream yields nothing more).
    fn next_record(&mut self) -> Result<Option<RecordResult>, DeliveryError>;

    /// Bytes received so far (progress).
    fn bytes_read(&self) -> u64;

    /// Total bytes of the delivery, when known in advance (progress).
    fn total_bytes(&self) -> Option<u64> {
        None
    }

    /// The cursor to commit with this delivery's data (incremental sources), once the
    /// stream has ended; `None` keeps the committed cursor as it is.
    fn cursor(&self) -> Option<String> {
        None
    }
}
