//! Paged sources: REST/JSON, FHIR R4, SOAP-style XML and SQL pulls.
//!
//! A [`PagedConnector`] knows one interface: how to ask for a page and how to decode it into
//! raw records. It does not retry, sleep, count or cancel: the shared runner
//! ([`crate::runner`]) owns timeouts, retries with backoff and jitter (honouring
//! `Retry-After`), paging, cancellation, rate limiting and progress for every kind.

use std::time::Duration;

use crate::{DeliveryError, RecordResult};

/// Which page to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRequest {
    /// The first page of a run. `since` is the committed cursor of the last successful run
    /// (incremental mode), `None` for a full snapshot.
    First { since: Option<String> },
    /// A later page, by the token the previous page returned in [`Page::next`].
    Next(String),
}

/// One decoded page.
#[derive(Debug, Default)]
pub struct Page {
    /// The page's records, in delivery order; a malformed record is an `Err` (quarantine).
    pub records: Vec<RecordResult>,
    /// Token for the next page; `None` when this was the last page.
    pub next: Option<String>,
    /// The high-water mark this page proves (e.g. the largest `updated_at` seen); the runner
    /// keeps the last one and the pipeline commits it with the data it covers.
    pub cursor: Option<String>,
    /// The total number of records the source announces for the whole delivery, when it does
    /// (checked against what arrived: a mismatch fails the run as truncated).
    pub announced_total: Option<u64>,
    /// Bytes received for this page (progress and limits).
    pub bytes: u64,
}

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth retrying (connection reset, timeout, HTTP 429/500/502/503/504).
    #[error("{message}")]
    Transient {
        /// What happened; no personal data, no secrets.
        message: String,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying: the run fails (malformed page, truncated body, 4xx, SOAP fault).
    #[error(transparent)]
    Fatal(#[from] DeliveryError),
}

/// One paged interface.
pub trait PagedConnector: Send {
    /// Where the source is, for messages (never with credentials).
    fn describe(&self) -> String;

    /// Fetches and decodes one page. Must not read an unbounded body into memory: bodies are
    /// size-capped and decoded streaming where the format allows.
    fn fetch(&mut self, request: &PageRequest) -> Result<Page, FetchError>;
}
