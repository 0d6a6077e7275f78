//! The index store: published involvements and relations, sync runs, staging, quarantine.
//!
//! Selected by URL: `sqlite://PATH` (embedded default, WAL; bulk work on a dedicated
//! rusqlite connection) or `postgres://…` (production, through sqlx). Both implement the same
//! behaviour, and the store test suite runs against both.
//!
//! Publication is atomic: a run stages its records apart from the published index, then
//! [`Store::complete_run`] compares, applies and records the run in one transaction.

mod codec;
mod gauges_postgres;
mod gauges_sqlite;
mod keys_postgres;
mod keys_sqlite;
mod lease_postgres;
mod lease_sqlite;
pub mod lookup;
#[cfg(test)]
mod migration_tests;
pub mod postgres;
mod retention_postgres;
mod retention_sqlite;
pub mod sqlite;
mod state_postgres;
mod state_sqlite;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use matchpoint_schemas::Involvement;
use serde::Serialize;

pub use codec::{decode_relations, encode_relations};

/// Identifier of one sync run.
pub type RunId = i64;

/// What can go wrong in the store. Messages name the operation; no personal data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one we can open.
    #[error("unsupported store URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    /// The database refused or failed an operation.
    #[error("store operation `{op}` failed: {message}")]
    Database { op: &'static str, message: String },
    /// The run does not exist.
    #[error("run {0} does not exist")]
    NoSuchRun(RunId),
    /// The run is in a state that does not allow this.
    #[error("run {run} is {status}; {what}")]
    RunState {
        run: RunId,
        status: String,
        what: String,
    },
}

impl StoreError {
    pub(crate) fn db(op: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Database {
            op,
            message: e.to_string(),
        }
    }
}

/// How a run treats records missing from its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// A complete snapshot: involvements not delivered become `ended`.
    Full,
    /// Changes only: nothing is ended for being absent.
    Incremental,
    /// Re-processing quarantined records after a mapping fix.
    Replay,
}

impl RunMode {
    /// Stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Full => "full",
            RunMode::Incremental => "incremental",
            RunMode::Replay => "replay",
        }
    }
}

/// A record rejected during a run, ready to store. Carries no clear identity except inside
/// the sealed (encrypted) raw record.
#[derive(Debug, Clone, Default)]
pub struct QuarantineEntry {
    /// The record's id in the source, when known.
    pub source_record_id: Option<String>,
    /// 1-based record number in the delivery.
    pub record_index: u64,
    /// Byte offset in the delivery.
    pub byte_offset: u64,
    /// Source field at fault.
    pub field: Option<String>,
    /// Stable reason code (`invalid_bsn`, …).
    pub reason_code: String,
    /// Reason in words, never with a BSN or name.
    pub reason: String,
    /// AES-GCM sealed raw record, when kept for replay.
    pub sealed_raw: Option<Vec<u8>>,
    /// Key version the raw record was sealed with.
    pub sealed_key_id: Option<String>,
    /// When the sealed raw record must be deleted.
    pub sealed_expires_at: Option<DateTime<Utc>>,
    /// For replays: the quarantine entry this one re-processes.
    pub replay_of: Option<i64>,
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Records read from the delivery.
    pub read: u64,
    /// Records that passed mapping and validation.
    pub accepted: u64,
    /// Records sent to quarantine.
    pub rejected: u64,
    /// New involvements published.
    pub inserted: u64,
    /// Involvements whose content changed.
    pub updated: u64,
    /// Delivered involvements identical to the published ones (not rewritten).
    pub unchanged: u64,
    /// Involvements ended because a full delivery no longer contained them.
    pub ended: u64,
}

/// Run status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// In progress (or interrupted, until the next run of the source notices).
    Running,
    /// Published.
    Succeeded,
    /// Nothing published; see the error.
    Failed,
    /// Stopped by the shrink guard; nothing published until accepted.
    Held,
    /// A held run published deliberately.
    Accepted,
    /// A held run overtaken by a later run; can no longer be accepted.
    Superseded,
}

impl RunStatus {
    /// Stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Held => "held",
            RunStatus::Accepted => "accepted",
            RunStatus::Superseded => "superseded",
        }
    }

    /// Parses a stored code.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "held" => RunStatus::Held,
            "accepted" => RunStatus::Accepted,
            "superseded" => RunStatus::Superseded,
            _ => return None,
        })
    }
}

/// One row of the run history.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: RunId,
    /// Source name.
    pub source: String,
    /// Full, incremental or replay.
    pub mode: String,
    /// Status.
    pub status: RunStatus,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: Option<DateTime<Utc>>,
    /// Counts.
    pub counts: RunCounts,
    /// Why it failed or was held.
    pub error: Option<String>,
}

impl RunRecord {
    /// Duration in seconds, when finished.
    pub fn duration_secs(&self) -> Option<f64> {
        self.finished_at
            .map(|f| (f - self.started_at).num_milliseconds() as f64 / 1000.0)
    }
}

/// What a held run would end: counts per organisation and life domain, no identities.
#[derive(Debug, Clone, Serialize)]
pub struct WouldEnd {
    /// Registry organisation code.
    pub organisation_code: String,
    /// Life domain.
    pub life_domain: String,
    /// Number of active involvements the run would end.
    pub count: u64,
}

/// The shrink guard's settings for one run.
#[derive(Debug, Clone, Copy)]
pub struct ShrinkGuard {
    /// Largest share of active involvements a run may end without being held.
    pub max_end_share: f64,
}

impl ShrinkGuard {
    /// The shrink guard's verdict: why a full run must be held, or `None` to publish.
    /// `staged` records delivered, `total`/`active` the source's rows in the index, `would_end`
    /// how many the run would end.
    pub fn hold_reason(
        &self,
        staged: u64,
        total: u64,
        active: u64,
        would_end: u64,
    ) -> Option<String> {
        if staged == 0 && total > 0 {
            return Some(format!(
                "held: the delivery holds no records while the index holds {total} for this source"
            ));
        }
        if active > 0 && (would_end as f64) > self.max_end_share * active as f64 {
            return Some(format!(
                "held: the run would end {would_end} of {active} active involvements ({:.1}%, limit {:.1}%)",
                100.0 * would_end as f64 / active as f64,
                100.0 * self.max_end_share
            ));
        }
        None
    }
}

/// How to complete a run.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Records read (accepted + rejected, as counted by the pipeline).
    pub read: u64,
    /// Full runs end what was not delivered.
    pub mode: RunMode,
    /// The source cursor after this run (incremental sources), committed with the data.
    pub cursor: Option<String>,
    /// The guard (full runs only), or `None` to publish regardless.
    pub guard: Option<ShrinkGuard>,
    /// A deliberate publication of a held run (recorded as `accepted`).
    pub accept: bool,
}

/// One quarantined record, as listed (no clear identity).
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRecord {
    /// Entry id.
    pub id: i64,
    /// Source.
    pub source: String,
    /// Run that rejected it.
    pub run_id: RunId,
    /// Record id in the source.
    pub source_record_id: Option<String>,
    /// Record number in the delivery.
    pub record_index: u64,
    /// Field at fault.
    pub field: Option<String>,
    /// Reason code.
    pub reason_code: String,
    /// Reason.
    pub reason: String,
    /// When it was rejected.
    pub created_at: DateTime<Utc>,
    /// Whether the sealed raw record is still kept for replay.
    pub replayable: bool,
    /// Run that published it after a replay, if any.
    pub resolved_by_run: Option<RunId>,
}

/// A sealed raw record for replay.
#[derive(Debug, Clone)]
pub struct SealedRecord {
    /// Quarantine entry id.
    pub id: i64,
    /// Source.
    pub source: String,
    /// Record id in the source.
    pub source_record_id: Option<String>,
    /// Sealed bytes.
    pub sealed: Vec<u8>,
    /// Key version.
    pub key_id: String,
}

/// Filter for quarantine listings.
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Only this run.
    pub run: Option<RunId>,
    /// Include entries already resolved by a replay.
    pub include_resolved: bool,
    /// Most rows to return.
    pub limit: u64,
}

/// Per-source index statistics.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStats {
    /// Source.
    pub source: String,
    /// Involvements by status.
    pub planned: u64,
    /// Active involvements.
    pub active: u64,
    /// Ended involvements.
    pub ended: u64,
    /// Distinct persons.
    pub persons: u64,
    /// Relations.
    pub relations: u64,
    /// Records in quarantine: distinct record ids, not resolved by a replay nor published by a
    /// later run.
    pub quarantined: u64,
    /// Last successful run and when it finished ("last seen" for its records).
    pub last_success_run: Option<RunId>,
    /// Finish time of that run.
    pub last_success_at: Option<DateTime<Utc>>,
}

/// The result of staging a batch.
#[derive(Debug, Clone, Default)]
pub struct StageOutcome {
    /// Position in the batch and record id of records whose id was already staged in this run.
    pub duplicates: Vec<(usize, String)>,
}

/// A published involvement as read back (for tests, lookups and exports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredInvolvement {
    /// Source.
    pub source: String,
    /// Record id.
    pub source_record_id: String,
    /// Person pseudonym (hex).
    pub person: String,
    /// Key version.
    pub key_id: String,
    /// Organisation code.
    pub organisation_code: String,
    /// Life domain.
    pub life_domain: String,
    /// Status.
    pub status: String,
    /// End date.
    pub end_date: Option<String>,
    /// Content hash (hex), empty after reconciliation ended the row.
    pub content_hash: String,
    /// End reason code, when the source gave one.
    pub end_reason: Option<String>,
}

/// The result of trying to take a source's lease (see `crate::schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// This holder now has the lease until the requested expiry.
    Acquired,
    /// Another holder has it (a run of the source is in progress elsewhere).
    HeldBy {
        /// The other holder (`host/pid/nonce`).
        holder: String,
        /// When its lease expires unless renewed.
        expires_at: DateTime<Utc>,
    },
}

/// What the scheduler needs to know about a source's past runs (replays do not count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleHistory {
    /// Start of the latest full or incremental run, whatever its outcome.
    pub last_started: Option<DateTime<Utc>>,
    /// Start of the latest full run, whatever its outcome.
    pub last_full_started: Option<DateTime<Utc>>,
    /// End of the latest successful (published) run.
    pub last_success_at: Option<DateTime<Utc>>,
}

/// How many rows of one source carry one key version (`matchpoint keys status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyVersionCount {
    /// Source.
    pub source: String,
    /// Key version (`key_id`).
    pub key_id: String,
    /// Involvement rows with this version.
    pub involvements: u64,
    /// Relation rows with this version.
    pub relations: u64,
}

/// Index rows of one source with one status under one key version (`/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexRowCount {
    /// Source.
    pub source: String,
    /// Involvement status (planned, active, ended).
    pub status: String,
    /// Key version (`key_id`).
    pub key_id: String,
    /// Rows.
    pub rows: u64,
}

/// What the `matchpoint_index_rows` and `matchpoint_quarantine_entries` gauges show: two
/// aggregate queries (see [`Store::index_gauges`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexGauges {
    /// Index rows per source, status and key version (only combinations that have rows).
    pub rows: Vec<IndexRowCount>,
    /// Unresolved quarantined records per configured source (0 included), counted as
    /// [`SourceStats::quarantined`].
    pub quarantine: Vec<(String, u64)>,
}

/// The source name retention runs are recorded under in the run history.
pub const RETENTION_SOURCE: &str = "__retention__";

/// What a retention run removes (see `crate::retention`).
#[derive(Debug, Clone, Copy)]
pub struct RetentionCutoffs {
    /// Involvements whose end date lies before this are purged (with their relations).
    pub ended_before: chrono::NaiveDate,
    /// Involvements whose `purge_after` date lies before this are purged.
    pub today: chrono::NaiveDate,
    /// Quarantine entries created before this are purged.
    pub quarantine_before: DateTime<Utc>,
}

/// Counts of one retention run. In the run history (source `__retention__`, mode
/// `retention`): `ended` = involvements, `updated` = relations, `rejected` = quarantine
/// entries, `accepted` = iWmo message logs, `read` = all rows removed (audit entries included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionCounts {
    /// Involvements purged.
    pub involvements: u64,
    /// Relations purged with them.
    pub relations: u64,
    /// Quarantine entries purged.
    pub quarantine: u64,
    /// Stored iWmo message logs (`source_state` kind `pair`) purged: those of a (provider,
    /// client pseudonym) pair whose last involvements of the source were purged in this run.
    pub message_logs: u64,
    /// Audit entries removed through the audit trail's privileged path.
    pub audit: u64,
    /// The run recorded in the history (not for dry runs).
    pub run: Option<RunId>,
}

/// The store, by backend.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (and migrates) the store at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(postgres::PgStore::open(url).await?))
        } else {
            Err(StoreError::Url(redact_url(url)))
        }
    }

    /// Starts a run; first marks interrupted runs of the source as failed and drops their staging.
    pub async fn begin_run(&self, source: &str, mode: RunMode) -> Result<RunId, StoreError> {
        dispatch!(self, s => s.begin_run(source, mode).await)
    }

    /// Records the phase a run is in (shown in `runs`, used to confirm crash points).
    pub async fn set_phase(&self, run: RunId, phase: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_phase(run, phase).await)
    }

    /// Stages accepted records and stores rejected ones, in one transaction.
    pub async fn stage(
        &self,
        run: RunId,
        records: Vec<Involvement>,
        rejects: Vec<QuarantineEntry>,
    ) -> Result<StageOutcome, StoreError> {
        dispatch!(self, s => s.stage(run, records, rejects).await)
    }

    /// Applies the guard and publishes (or holds) the run, atomically.
    pub async fn complete_run(
        &self,
        run: RunId,
        completion: Completion,
    ) -> Result<RunRecord, StoreError> {
        dispatch!(self, s => s.complete_run(run, completion).await)
    }

    /// Marks a run failed; nothing is published and its staging is dropped.
    pub async fn fail_run(&self, run: RunId, read: u64, error: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.fail_run(run, read, error).await)
    }

    /// Publishes a held run deliberately.
    pub async fn accept_run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        dispatch!(self, s => s.accept_run(run).await)
    }

    /// The run history, newest first.
    pub async fn runs(
        &self,
        source: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        dispatch!(self, s => s.runs(source, limit).await)
    }

    /// One run.
    pub async fn run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        dispatch!(self, s => s.run(run).await)
    }

    /// For a held run: what it would end, per organisation and domain.
    pub async fn would_end(&self, run: RunId) -> Result<Vec<WouldEnd>, StoreError> {
        dispatch!(self, s => s.would_end(run).await)
    }

    /// Quarantine listing.
    pub async fn quarantine(
        &self,
        filter: &QuarantineFilter,
    ) -> Result<Vec<QuarantineRecord>, StoreError> {
        dispatch!(self, s => s.quarantine(filter).await)
    }

    /// Sealed raw records still kept, unresolved, for replay.
    pub async fn replayable(&self, source: Option<&str>) -> Result<Vec<SealedRecord>, StoreError> {
        dispatch!(self, s => s.replayable(source).await)
    }

    /// Marks quarantine entries as published by a replay run.
    pub async fn mark_resolved(&self, ids: Vec<i64>, run: RunId) -> Result<(), StoreError> {
        dispatch!(self, s => s.mark_resolved(ids, run).await)
    }

    /// Deletes sealed raw records past their expiry; returns how many.
    pub async fn expire_sealed(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.expire_sealed(now).await)
    }

    /// The committed cursor of an incremental source.
    pub async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.cursor(source).await)
    }

    /// Index statistics per source.
    pub async fn stats(&self) -> Result<Vec<SourceStats>, StoreError> {
        dispatch!(self, s => s.stats().await)
    }

    /// Every published involvement of a source, ordered by record id (tests, exports).
    pub async fn involvements(&self, source: &str) -> Result<Vec<StoredInvolvement>, StoreError> {
        dispatch!(self, s => s.involvements(source).await)
    }

    /// Relations of a source as (record id, kind, other pseudonym hex), ordered.
    pub async fn relations(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        dispatch!(self, s => s.relations(source).await)
    }
}

/// Connector state entries: (key, value).
pub type StateEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// One change of a connector's state (`state_sqlite.rs`, `state_postgres.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// What the entry is (the connector's own name space, e.g. `file`); never empty.
    pub kind: String,
    /// The entry's key (never a clear BSN).
    pub key: Vec<u8>,
    /// The new value, or `None` to delete the entry.
    pub value: Option<Vec<u8>>,
}

impl StateChange {
    /// The marker that makes the run's publication replace the source's whole state.
    pub fn replace_all() -> Self {
        StateChange {
            kind: String::new(),
            key: Vec::new(),
            value: None,
        }
    }
}

/// Connector state: kept per source, staged by a run and published in the same transaction
/// as the run's involvements, so a crash leaves the state and the index consistent.
impl Store {
    /// Stages state changes of a running run (applied by its publication, in order).
    pub async fn stage_state(
        &self,
        run: RunId,
        changes: Vec<StateChange>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.stage_state(run, changes).await)
    }

    /// The published state entries of `kind` of a source: all, or those with these keys.
    pub async fn source_state(
        &self,
        source: &str,
        kind: &str,
        keys: Option<Vec<Vec<u8>>>,
    ) -> Result<StateEntries, StoreError> {
        dispatch!(self, s => s.source_state(source, kind, keys).await)
    }

    /// At most `limit` published state entries of `kind` of a source with a key after
    /// `after` (all when `None`), in key order: reads a large state a page at a time.
    pub async fn source_state_page(
        &self,
        source: &str,
        kind: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<StateEntries, StoreError> {
        dispatch!(self, s => s.source_state_page(source, kind, after, limit).await)
    }

    /// The first `per_range` published state entries of `kind` of a source (in key order)
    /// with a key in each of these ranges (`start <= key < end`): the state of many keys read
    /// a batch at a time (one query on PostgreSQL; a few hundred ranges per query on SQLite).
    pub async fn source_state_ranges(
        &self,
        source: &str,
        kind: &str,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        per_range: usize,
    ) -> Result<StateEntries, StoreError> {
        dispatch!(self, s => s.source_state_ranges(source, kind, ranges, per_range).await)
    }

    /// Connector state queries this store sent since it was opened (reads of
    /// [`Store::source_state`], [`Store::source_state_page`] and
    /// [`Store::source_state_ranges`]): observable, so that tests and measurements can tell
    /// how a connector's reads grow.
    pub fn state_reads(&self) -> u64 {
        dispatch!(self, s => s.state_reads().load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Source leases and schedule history (`lease_sqlite.rs`, `lease_postgres.rs`).
impl Store {
    /// Takes the source's lease for `holder` until `expires_at` if nobody holds it or the
    /// holder's lease expired before `now`.
    pub async fn try_lease(
        &self,
        source: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError> {
        dispatch!(self, s => s.try_lease(source, holder, now, expires_at).await)
    }

    /// Extends `holder`'s lease; `false` when it no longer holds it.
    pub async fn renew_lease(
        &self,
        source: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew_lease(source, holder, expires_at).await)
    }

    /// Gives up `holder`'s lease (nothing happens when it does not hold it).
    pub async fn release_lease(&self, source: &str, holder: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_lease(source, holder).await)
    }

    /// Latest run starts and last success of a source, for the scheduler and staleness.
    pub async fn schedule_history(&self, source: &str) -> Result<ScheduleHistory, StoreError> {
        dispatch!(self, s => s.schedule_history(source).await)
    }
}

/// Key versions (`keys_sqlite.rs`, `keys_postgres.rs`).
impl Store {
    /// Rows per source and key version, in the index and the relations.
    pub async fn key_versions(&self) -> Result<Vec<KeyVersionCount>, StoreError> {
        dispatch!(self, s => s.key_versions().await)
    }

    /// Audit entries per audit key version (`subject_key_id`), over the entries still in the
    /// trail (inside the audit retention period).
    pub async fn audit_key_versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        dispatch!(self, s => s.audit_key_versions().await)
    }
}

/// Metrics gauges (`gauges_sqlite.rs`, `gauges_postgres.rs`).
impl Store {
    /// Index rows per source, status and key version, and unresolved quarantined records per
    /// source: one `GROUP BY` over the index and one over the quarantine. `serve` caches the
    /// result for [`crate::metrics::GAUGE_TTL`] (see `docs/instrumentation.md`).
    pub async fn index_gauges(&self) -> Result<IndexGauges, StoreError> {
        dispatch!(self, s => s.index_gauges().await)
    }
}

/// Retention (`retention_sqlite.rs`, `retention_postgres.rs`).
impl Store {
    /// Purges involvements past the cutoffs (and their relations) and old quarantine entries,
    /// in one transaction; with `dry_run` only counts (the transaction is rolled back).
    pub async fn purge_retention(
        &self,
        cutoffs: RetentionCutoffs,
        dry_run: bool,
    ) -> Result<RetentionCounts, StoreError> {
        dispatch!(self, s => s.purge_retention(cutoffs, dry_run).await)
    }

    /// Records a retention run in the run history (source [`RETENTION_SOURCE`]).
    pub async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        counts: RetentionCounts,
        error: Option<String>,
    ) -> Result<RunId, StoreError> {
        dispatch!(self, s => s.record_retention_run(started, counts, error).await)
    }
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:****{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Logs how long each publish step took (debug level), to see where time goes.
pub(crate) struct StepTimer(std::time::Instant);

impl StepTimer {
    pub(crate) fn start() -> Self {
        StepTimer(std::time::Instant::now())
    }

    pub(crate) fn lap(&mut self, step: &str) {
        tracing::debug!(
            step,
            ms = self.0.elapsed().as_millis() as u64,
            "Publish step done."
        );
        self.0 = std::time::Instant::now();
    }
}

#[cfg(test)]
mod guard_tests {
    use super::ShrinkGuard;

    #[test]
    fn the_guard_holds_an_empty_delivery_and_a_large_shrink_only() {
        let g = ShrinkGuard {
            max_end_share: 0.10,
        };
        assert!(
            g.hold_reason(0, 5, 5, 5)
                .is_some_and(|w| w.contains("no records"))
        );
        assert!(
            g.hold_reason(0, 0, 0, 0).is_none(),
            "a first, empty delivery is fine"
        );
        assert!(
            g.hold_reason(90, 100, 100, 10).is_none(),
            "exactly 10% is allowed"
        );
        assert!(
            g.hold_reason(89, 100, 100, 11)
                .is_some_and(|w| w.contains("11 of 100"))
        );
    }
}
