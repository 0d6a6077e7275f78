//! From a configured source to a stream of raw records: one module per connector kind, and
//! one registration line per kind in [`open`].
//!
//! File kinds (XML export, CSV drop, iWmo messages) share [`files::FileDeliveries`]: a file,
//! an HTTP(S) URL, or a folder (full: the newest file; incremental: every file named after
//! the cursor, in name order). Paged kinds (REST/JSON, FHIR, SOAP, SQL) go through the shared
//! runner in `matchpoint_connectors` ([`paged::open_paged`] builds it from the source's
//! `[source.paging]` settings; [`paged::http_client`] the HTTP client from `[source.http]`).

pub mod csv_drop;
pub mod fhir;
pub mod files;
pub mod iwmo;
pub mod paged;
pub mod rest_json;
pub mod soap;
pub mod sql_pull;
pub mod xml_export;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use matchpoint_connectors::RecordStream;
use matchpoint_schemas::Pseudonymiser;

use crate::config::{SourceConfig, SourceKind};
use crate::store::{RunId, StateChange, StateEntries, Store, StoreError};

/// The store's connector state, for a run of a source that keeps state between runs (iWmo).
/// Used from the run's reader thread: each call blocks on the runtime.
#[derive(Clone)]
pub struct SourceState {
    /// The store.
    pub store: Store,
    /// The runtime the store runs on.
    pub runtime: tokio::runtime::Handle,
    /// The run, whose publication publishes the staged changes.
    pub run: RunId,
    /// The index pseudonymiser: state is keyed by pseudonyms, never by a clear BSN.
    pub pseudonymiser: Pseudonymiser,
}

impl SourceState {
    /// The published entries of `kind` of `source` (all, or those with these keys).
    pub fn read(
        &self,
        source: &str,
        kind: &str,
        keys: Option<Vec<Vec<u8>>>,
    ) -> Result<StateEntries, StoreError> {
        self.runtime
            .block_on(self.store.source_state(source, kind, keys))
    }

    /// At most `limit` published entries of `kind` of `source` with a key after `after`, in
    /// key order.
    pub fn read_page(
        &self,
        source: &str,
        kind: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<StateEntries, StoreError> {
        self.runtime
            .block_on(self.store.source_state_page(source, kind, after, limit))
    }

    /// The first `per_range` published entries of `kind` of `source` (in key order) in each
    /// of these key ranges (`start <= key < end`): many keys' state in one query.
    pub fn read_ranges(
        &self,
        source: &str,
        kind: &str,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        per_range: usize,
    ) -> Result<StateEntries, StoreError> {
        self.runtime.block_on(
            self.store
                .source_state_ranges(source, kind, ranges, per_range),
        )
    }

    /// Stages changes, published with the run.
    pub fn stage(&self, changes: Vec<StateChange>) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.store.stage_state(self.run, changes))
    }
}

/// What a run reads.
pub struct Opened {
    /// The delivery, record by record.
    pub stream: Box<dyn RecordStream>,
}

/// Everything a connector may need to open a run's delivery.
pub struct OpenContext<'a> {
    /// The source.
    pub source: &'a SourceConfig,
    /// The committed cursor of the last successful run (`None` on a full run).
    pub cursor: Option<&'a str>,
    /// Whether the run is a full reconciliation.
    pub full: bool,
    /// Set on Ctrl-C; long waits (retries, backoff) must watch it.
    pub cancel: Arc<AtomicBool>,
    /// The store's connector state for this run (`None`: the source keeps none, e.g. a
    /// preview without store).
    pub state: Option<SourceState>,
}

/// Opens the delivery of one run. `Ok(None)`: an incremental source has nothing new (a quiet
/// night). `Err`: the run fails with this message and nothing is published.
///
/// Runs on the run's reader thread.
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    match cx.source.kind {
        SourceKind::XmlExport => xml_export::open(cx),
        SourceKind::RestJson => rest_json::open(cx),
        SourceKind::Soap => soap::open(cx),
        SourceKind::Fhir => fhir::open(cx),
        SourceKind::CsvDrop => csv_drop::open(cx),
        SourceKind::SqlPull => sql_pull::open(cx),
        SourceKind::Iwmo => iwmo::open(cx),
    }
}
