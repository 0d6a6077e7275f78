//! The audit trail: every access to personal data, append-only and hash-chained.
//!
//! Contract (the API writes through it): [`AuditLog::append`] returns only once the entry is
//! durable in the store (group commit: concurrent appends share one transaction); when it
//! returns an error the caller must fail the request (fail-closed) and return no data.
//!
//! # Design
//!
//! **Storage.** Table `audit_log` (one row per entry, `seq` 1-based and gapless), a one-row
//! chain head `audit_head (seq, hash)`, a one-row retention flag `audit_retention` and an
//! append-only table of signed retention anchors `audit_anchors`. The migrations are
//! `sqlite_migration.sql` and `postgres_migration.sql` beside this file.
//!
//! **Hash chain.** `hash(n) = SHA-256(hash(n-1) ‖ canonical_bytes(entry n))` with a genesis
//! hash of 32 zero bytes. The canonical bytes are length-prefixed fields in a fixed order,
//! including `seq` and the microsecond UTC time: see [`chain`]. Changing any column of any
//! row, removing a row or swapping rows breaks the chain at that row, and
//! [`AuditLog::verify`] names the first such entry.
//!
//! **Group commit.** Appends go into a queue served by one writer (SQLite: a dedicated thread
//! with its own rusqlite connection, `synchronous = FULL`; PostgreSQL: a task on its own sqlx
//! pool, `synchronous_commit = on`). The writer takes everything queued (up to
//! [`MAX_BATCH`]), writes it in **one** transaction and answers each caller through its
//! oneshot channel only after the commit. While one commit's fsync runs, the next batch
//! queues up, so a durable fsync is paid per batch rather than per request.
//! [`AuditLog::commits`] counts the transactions.
//!
//! **Serialisation in the database.** Every append transaction first locks the chain head:
//! on SQLite `BEGIN IMMEDIATE` (the database's write lock, shared by every process using the
//! file), on PostgreSQL `SELECT … FROM audit_head … FOR UPDATE`, so several server instances
//! (and the CLI) can append to one database and still form one gapless chain.
//!
//! **Append-only.** Triggers refuse `UPDATE` and `DELETE` (and on PostgreSQL `TRUNCATE`) on
//! `audit_log` and `audit_anchors`. The one exception is the privileged retention path,
//! [`AuditLog::purge_before`]: in a single transaction it locks the head, writes a signed
//! anchor (`first_seq`, the hash of the entry before it, HMAC tag), sets
//! `audit_retention.purge_below = first_seq` — the delete trigger lets through only rows with
//! `seq < purge_below` — deletes, resets the flag to 0 and appends a `retention_purge` entry.
//! The flag is never visible outside that transaction. [`AuditLog::verify`] then proves the
//! remaining chain from the newest anchor, whose tag only the key holder can make.
//!
//! **Checkpoints.** [`AuditLog::checkpoint`] returns a [`Checkpoint`] (size, head hash, time,
//! key id, HMAC tag under the [`KeyPurpose::AuditCheckpoint`] subkey) printable as one JSON
//! line. Kept outside the database, it lets `verify` detect truncation of the tail and a
//! rewrite of the whole chain with recomputed hashes up to that point.
//!
//! **Subjects.** The subject of an entry is the audit pseudonym of the BSN under the
//! [`KeyPurpose::Audit`] subkey ([`AuditLog::subject`]): not joinable by value with the
//! index pseudonyms, and never the clear BSN.
//!
//! **Limits.** On SQLite the trail shares the index file, so an append waits while a sync
//! publishes (one write transaction: ~12 s for a first import of 1M records, milliseconds for
//! an ordinary re-sync); after 10 s of waiting it fails, and the API answers 503 (fail
//! closed). PostgreSQL has no such wait: publication never touches the audit tables. Subject
//! new subject pseudonyms, checkpoints and retention anchors use the key file's *active audit
//! version* (`matchpoint keys rotate --audit`, `keys activate --audit ID`); each entry records
//! the version in `subject_key_id`, each checkpoint and anchor in `key_id`. A subject-access
//! search consults every loaded audit version ([`AuditLog::subjects`]) and a checkpoint or
//! anchor is verified with the version that signed it, so every audit version must stay in
//! the key file for the whole audit retention period.
//!
//! **Back up the master key.** Checkpoint tags, anchors and subject pseudonyms all derive from
//! the master key file. Losing it makes subject-access reports over the existing trail
//! impossible (a BSN can no longer be turned into the pseudonym the entries hold) and old
//! checkpoints unverifiable. Keep an offline copy of the key file (mode 0600) with the same
//! care and retention as the audit trail itself; rotate only by keeping the old key too.

pub mod chain;
pub mod checkpoint;
pub mod entry;
mod postgres;
#[cfg(test)]
mod rotation_tests;
mod sqlite;
#[cfg(test)]
mod tests;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use matchpoint_schemas::{Bsn, KeyPurpose, MasterKey, Pseudonymiser};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use checkpoint::Checkpoint;
pub use entry::{AuditAction, AuditEntry, AuditOutcome, NewAuditEntry};
pub use verify::{FailureKind, VerifyFailure, VerifyReport};

use crate::store::{Store, StoreError, redact_url};

/// Most entries written in one group-commit transaction.
pub const MAX_BATCH: usize = 512;

/// Most appends waiting for the writer; further callers wait for room (back-pressure).
const QUEUE: usize = 8192;

/// Largest page a query returns.
pub const MAX_PAGE: u32 = 1000;

/// What can go wrong in the audit trail. Messages hold no personal data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The store could not be opened or migrated.
    #[error("cannot open the audit trail: {0}")]
    Open(String),
    /// The URL is not one we can open.
    #[error("unsupported store URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    /// Writing entries failed; nothing of the batch was stored (fail closed).
    #[error("audit entry could not be written ({0}); the request must fail")]
    Write(String),
    /// The writer is gone (it stopped after a panic or the log was shut down).
    #[error("the audit writer is not running; the request must fail")]
    WriterGone,
    /// A read, query or verification failed in the database.
    #[error("audit trail operation `{op}` failed: {message}")]
    Database {
        /// The operation.
        op: &'static str,
        /// The database's message.
        message: String,
    },
    /// A checkpoint could not be parsed.
    #[error("{0}")]
    Checkpoint(String),
    /// A checkpoint's tag does not match its content.
    #[error(
        "the checkpoint's signature does not match its content: it was altered or not made by \
         this key"
    )]
    CheckpointSignature,
    /// A checkpoint made with another key.
    #[error(
        "the checkpoint was signed with key version `{checkpoint}` but the key file holds only \
         the audit versions {loaded}; load the key file (from its backup) that holds it"
    )]
    CheckpointKey {
        /// Key id in the checkpoint.
        checkpoint: String,
        /// Audit key versions loaded (comma-separated).
        loaded: String,
    },
    /// A query argument is out of range.
    #[error("invalid audit query: {0}")]
    Query(String),
}

impl AuditError {
    pub(crate) fn db(op: &'static str, e: impl std::fmt::Display) -> Self {
        AuditError::Database {
            op,
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        AuditError::Open(e.to_string())
    }
}

/// Filter for [`AuditLog::search`]; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Acting user.
    pub user_id: Option<i64>,
    /// Acting user's organisation code.
    pub organisation: Option<String>,
    /// Subject audit pseudonym (hex), from [`AuditLog::subject`].
    pub subject: Option<String>,
    /// Any of these subject pseudonyms (hex): one person under every loaded audit key
    /// version, from [`AuditLog::subjects`]. Ignored when empty.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Up to this time (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: Option<AuditOutcome>,
    /// Action.
    pub action: Option<AuditAction>,
}

/// Which page to return: newest first, entries with `seq < before` (all when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Cursor: the `next_before` of the previous page.
    pub before: Option<i64>,
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            before: None,
            limit: 100,
        }
    }
}

impl PageRequest {
    fn checked(self) -> Result<PageRequest, AuditError> {
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(AuditError::Query(format!(
                "page limit {} is out of range; use 1 to {MAX_PAGE}",
                self.limit
            )));
        }
        Ok(self)
    }
}

/// One page of entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// Cursor for the next (older) page, or `None` when this was the last.
    pub next_before: Option<i64>,
}

/// What [`AuditLog::purge_before`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Entries removed.
    pub removed: u64,
    /// The first entry kept (the chain's new start), when anything was removed.
    pub anchor_seq: Option<i64>,
    /// The `retention_purge` entry recording the purge.
    pub entry: AuditEntry,
}

/// A queued append.
pub(crate) struct Job {
    pub(crate) entry: NewAuditEntry,
    pub(crate) reply: oneshot::Sender<Result<AuditEntry, AuditError>>,
}

/// Counters shared with the writer.
#[derive(Default)]
pub(crate) struct Counters {
    /// Transactions committed by the writer.
    pub(crate) commits: AtomicU64,
    /// Appends handed to the writer's queue.
    pub(crate) enqueued: AtomicU64,
}

enum Backend {
    Sqlite(sqlite::SqliteAudit),
    Postgres(postgres::PgAudit),
}

struct Inner {
    backend: Backend,
    queue: mpsc::Sender<Job>,
    key: Arc<MasterKey>,
    subjects: Pseudonymiser,
    /// Every loaded audit version, the active one first.
    all_subjects: Vec<Pseudonymiser>,
    counters: Arc<Counters>,
}

/// The audit trail of one store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// The audit pseudonym (hex) of a BSN and the key id that made it: HMAC-SHA256 under the
/// [`KeyPurpose::Audit`] subkey, not joinable with index pseudonyms.
pub fn audit_subject(key: &MasterKey, bsn: &Bsn) -> (String, String) {
    let p = key.pseudonymiser(KeyPurpose::Audit);
    (p.pseudonymise(bsn).to_hex(), p.key_id().as_str().to_owned())
}

impl AuditLog {
    /// Opens the audit trail of the store at `url` (`sqlite://PATH` or `postgres://…`):
    /// migrates the store (creating the audit tables), opens the trail's own connections and
    /// starts the writer. Must be called inside a tokio runtime.
    pub async fn open(url: &str, key: Arc<MasterKey>) -> Result<AuditLog, AuditError> {
        // Migration (the audit tables are a store migration); the store itself is not kept.
        drop(Store::open(url).await?);
        Self::open_migrated(url, key).await
    }

    /// Like [`AuditLog::open`] but without migrating: for a role that may only read and
    /// append (the store must already be migrated).
    pub async fn open_migrated(url: &str, key: Arc<MasterKey>) -> Result<AuditLog, AuditError> {
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            Backend::Sqlite(sqlite::SqliteAudit::open(path, rx, counters.clone()).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PgAudit::open(url, rx, counters.clone()).await?)
        } else {
            return Err(AuditError::Url(redact_url(url)));
        };
        let subjects = key.pseudonymiser(KeyPurpose::Audit);
        let mut all_subjects = vec![subjects.clone()];
        all_subjects.extend(
            key.audit_pseudonymisers()
                .into_iter()
                .filter(|p| p.key_id() != subjects.key_id()),
        );
        Ok(AuditLog {
            inner: Arc::new(Inner {
                backend,
                queue: tx,
                key,
                subjects,
                all_subjects,
                counters,
            }),
        })
    }

    /// Appends one entry; returns it (with seq, time and hash) once it is durable. Concurrent
    /// appends are committed together. On error nothing was stored: fail the request.
    pub async fn append(&self, entry: NewAuditEntry) -> Result<AuditEntry, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Job { entry, reply })
            .await
            .map_err(|_| AuditError::WriterGone)?;
        self.inner.counters.enqueued.fetch_add(1, Ordering::SeqCst);
        answer.await.map_err(|_| AuditError::WriterGone)?
    }

    /// The audit pseudonym (hex) and key id for a BSN; see [`audit_subject`].
    pub fn subject(&self, bsn: &Bsn) -> (String, String) {
        (
            self.inner.subjects.pseudonymise(bsn).to_hex(),
            self.inner.subjects.key_id().as_str().to_owned(),
        )
    }

    /// The audit pseudonyms (hex) of a BSN under every loaded audit key version, the active
    /// one first: what a subject-access search looks for, so entries written before an audit
    /// rotation are found too.
    pub fn subjects(&self, bsn: &Bsn) -> Vec<String> {
        self.inner
            .all_subjects
            .iter()
            .map(|p| p.pseudonymise(bsn).to_hex())
            .collect()
    }

    /// Transactions committed by this log's writer so far (group commit: fewer than appends).
    pub fn commits(&self) -> u64 {
        self.inner.counters.commits.load(Ordering::SeqCst)
    }

    /// Appends handed to the writer so far (for tests and metrics).
    pub fn enqueued(&self) -> u64 {
        self.inner.counters.enqueued.load(Ordering::SeqCst)
    }

    /// A signed checkpoint of the current head.
    pub async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let (size, head) = match &self.inner.backend {
            Backend::Sqlite(s) => s.head().await?,
            Backend::Postgres(p) => p.head().await?,
        };
        Ok(Checkpoint::sign(&self.inner.key, size, &head, Utc::now()))
    }

    /// Recomputes the whole chain (streaming, bounded memory) from genesis or the newest
    /// retention anchor, and compares it with `checkpoint` when given (its signature is
    /// checked first). Names the first entry changed, removed or reordered, or the first
    /// missing entry after a truncated tail.
    pub async fn verify(
        &self,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<VerifyReport, AuditError> {
        if let Some(cp) = checkpoint {
            cp.check_signature(&self.inner.key)?;
        }
        let key = self.inner.key.clone();
        let cp = checkpoint.cloned();
        match &self.inner.backend {
            Backend::Sqlite(s) => s.verify(key, cp).await,
            Backend::Postgres(p) => p.verify(&key, cp.as_ref()).await,
        }
    }

    /// The privileged retention path: removes every entry written before `cutoff` (keeping at
    /// least the chain from the first later entry), records a signed anchor and a
    /// `retention_purge` entry, all in one transaction. The only way past the triggers.
    pub async fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<PurgeReport, AuditError> {
        let key = self.inner.key.clone();
        match &self.inner.backend {
            Backend::Sqlite(s) => s.purge_before(cutoff, key).await,
            Backend::Postgres(p) => p.purge_before(cutoff, &key).await,
        }
    }

    /// Entries matching `filter`, newest first, one page.
    pub async fn search(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<AuditPage, AuditError> {
        let page = page.checked()?;
        match &self.inner.backend {
            Backend::Sqlite(s) => s.query(Query::Search(filter.clone()), page).await,
            Backend::Postgres(p) => p.query(Query::Search(filter.clone()), page).await,
        }
    }

    /// Break-glass lookups that no review entry refers to yet, newest first.
    pub async fn break_glass_queue(&self, page: PageRequest) -> Result<AuditPage, AuditError> {
        let page = page.checked()?;
        match &self.inner.backend {
            Backend::Sqlite(s) => s.query(Query::BreakGlassQueue, page).await,
            Backend::Postgres(p) => p.query(Query::BreakGlassQueue, page).await,
        }
    }

    /// Every entry about one subject, newest first: the accesses part of a subject access
    /// report. `subjects` are the person's audit pseudonyms (hex) under every audit key
    /// version ([`AuditLog::subjects`]).
    pub async fn subject_access(
        &self,
        subjects: &[String],
        page: PageRequest,
    ) -> Result<AuditPage, AuditError> {
        let page = page.checked()?;
        if subjects.is_empty() {
            return Err(AuditError::Query(
                "a subject access search needs a subject".into(),
            ));
        }
        let q = Query::Search(AuditFilter {
            subjects: subjects.to_vec(),
            ..AuditFilter::default()
        });
        match &self.inner.backend {
            Backend::Sqlite(s) => s.query(q, page).await,
            Backend::Postgres(p) => p.query(q, page).await,
        }
    }

    /// One entry by sequence number.
    pub async fn entry(&self, seq: i64) -> Result<Option<AuditEntry>, AuditError> {
        let page = PageRequest {
            before: Some(seq.saturating_add(1)),
            limit: 1,
        };
        let found = match &self.inner.backend {
            Backend::Sqlite(s) => s.query(Query::Search(AuditFilter::default()), page).await?,
            Backend::Postgres(p) => p.query(Query::Search(AuditFilter::default()), page).await?,
        };
        Ok(found.entries.into_iter().find(|e| e.seq == seq))
    }
}

/// The queries both backends answer.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    Search(AuditFilter),
    BreakGlassQueue,
}

/// Column list shared by both backends' SELECTs, in the order `decode` expects.
pub(crate) const COLUMNS: &str = "seq, at, user_id, role, organisation, action, subject, \
     subject_key_id, purpose, outcome, checks, break_glass, records_returned, client_addr, \
     request_id, refers_to, hash";

/// A stored row with its fields as the database holds them, before decoding.
pub(crate) struct RawRow {
    pub(crate) seq: i64,
    pub(crate) at: Result<DateTime<Utc>, String>,
    pub(crate) user_id: Option<i64>,
    pub(crate) role: String,
    pub(crate) organisation: Option<String>,
    pub(crate) action: String,
    pub(crate) subject: Option<String>,
    pub(crate) subject_key_id: Option<String>,
    pub(crate) purpose: Option<String>,
    pub(crate) outcome: String,
    pub(crate) checks: String,
    pub(crate) break_glass: Option<String>,
    pub(crate) records_returned: i64,
    pub(crate) client_addr: Option<String>,
    pub(crate) request_id: String,
    pub(crate) refers_to: Option<i64>,
    pub(crate) hash: String,
}

impl RawRow {
    /// Decodes the row; `Err` names the column that holds no valid value.
    pub(crate) fn decode(self) -> Result<AuditEntry, String> {
        let at = self
            .at
            .map_err(|e| format!("column `at` is not a time ({e})"))?;
        let action = AuditAction::parse(&self.action)
            .ok_or_else(|| "column `action` holds an unknown code".to_owned())?;
        let outcome = AuditOutcome::parse(&self.outcome)
            .ok_or_else(|| "column `outcome` holds an unknown code".to_owned())?;
        let checks: Vec<String> = serde_json::from_str(&self.checks)
            .map_err(|_| "column `checks` is not a JSON list of strings".to_owned())?;
        let records_returned = u32::try_from(self.records_returned)
            .map_err(|_| "column `records_returned` is out of range".to_owned())?;
        Ok(AuditEntry {
            seq: self.seq,
            at,
            entry: NewAuditEntry {
                user_id: self.user_id,
                role: self.role,
                organisation: self.organisation,
                action,
                subject: self.subject,
                subject_key_id: self.subject_key_id,
                purpose: self.purpose,
                outcome,
                checks,
                break_glass: self.break_glass,
                records_returned,
                client_addr: self.client_addr,
                request_id: self.request_id,
                refers_to: self.refers_to,
            },
            hash: self.hash,
        })
    }
}

/// The JSON text stored in the `checks` column.
pub(crate) fn checks_json(checks: &[String]) -> String {
    serde_json::to_string(checks).unwrap_or_else(|_| "[]".to_owned())
}
