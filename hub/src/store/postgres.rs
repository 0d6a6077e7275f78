//! PostgreSQL backend (through sqlx): being implemented; see the store test suite.

use chrono::{DateTime, Utc};
use matchpoint_schemas::Involvement;

use super::{
    Completion, QuarantineEntry, QuarantineFilter, QuarantineRecord, RunId, RunMode, RunRecord,
    SealedRecord, SourceStats, StageOutcome, StoreError, StoredInvolvement, WouldEnd,
};

/// The production store.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

fn unsupported() -> StoreError {
    StoreError::db(
        "postgres",
        "the PostgreSQL store is not available in this build yet",
    )
}

#[allow(unused_variables, clippy::unused_async)]
impl PgStore {
    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = sqlx::PgPool::connect(url)
            .await
            .map_err(|e| StoreError::db("connect", e))?;
        let _ = &pool;
        Err(unsupported())
    }
    pub(super) async fn begin_run(&self, source: &str, mode: RunMode) -> Result<RunId, StoreError> {
        let _ = &self.pool;
        Err(unsupported())
    }
    pub(super) async fn set_phase(&self, run: RunId, phase: &str) -> Result<(), StoreError> {
        Err(unsupported())
    }
    pub(super) async fn stage(
        &self,
        run: RunId,
        records: Vec<Involvement>,
        rejects: Vec<QuarantineEntry>,
    ) -> Result<StageOutcome, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn complete_run(
        &self,
        run: RunId,
        completion: Completion,
    ) -> Result<RunRecord, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn fail_run(
        &self,
        run: RunId,
        read: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        Err(unsupported())
    }
    pub(super) async fn accept_run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn runs(
        &self,
        source: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn would_end(&self, run: RunId) -> Result<Vec<WouldEnd>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn quarantine(
        &self,
        f: &QuarantineFilter,
    ) -> Result<Vec<QuarantineRecord>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn replayable(
        &self,
        source: Option<&str>,
    ) -> Result<Vec<SealedRecord>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn mark_resolved(&self, ids: Vec<i64>, run: RunId) -> Result<(), StoreError> {
        Err(unsupported())
    }
    pub(super) async fn expire_sealed(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn stats(&self) -> Result<Vec<SourceStats>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn involvements(
        &self,
        source: &str,
    ) -> Result<Vec<StoredInvolvement>, StoreError> {
        Err(unsupported())
    }
    pub(super) async fn relations(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        Err(unsupported())
    }
}
