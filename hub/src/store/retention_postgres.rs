//! PostgreSQL: the retention purge of the index (involvements, their relations, quarantine).

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use super::{RETENTION_SOURCE, RetentionCounts, RetentionCutoffs, StoreError};

fn e(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

/// Rows purged: ended before the cutoff, or past their own `purge_after` date.
const PURGED: &str =
    "(end_date IS NOT NULL AND end_date < $1) OR (purge_after IS NOT NULL AND purge_after < $2)";

impl PgStore {
    pub(super) async fn purge_retention(
        &self,
        cut: RetentionCutoffs,
        dry_run: bool,
    ) -> Result<RetentionCounts, StoreError> {
        let op = "retention";
        let mut tx = self.pool().begin().await.map_err(e(op))?;
        let relations = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM relations WHERE (source, source_record_id) IN
             (SELECT source, source_record_id FROM involvements WHERE {PURGED})"
        )))
        .bind(cut.ended_before)
        .bind(cut.today)
        .execute(&mut *tx)
        .await
        .map_err(e(op))?
        .rows_affected();
        let involvements = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM involvements WHERE {PURGED}"
        )))
        .bind(cut.ended_before)
        .bind(cut.today)
        .execute(&mut *tx)
        .await
        .map_err(e(op))?
        .rows_affected();
        let quarantine = sqlx::query("DELETE FROM quarantine WHERE created_at < $1")
            .bind(cut.quarantine_before)
            .execute(&mut *tx)
            .await
            .map_err(e(op))?
            .rows_affected();
        if dry_run {
            tx.rollback().await.map_err(e(op))?;
        } else {
            tx.commit().await.map_err(e(op))?;
        }
        Ok(RetentionCounts {
            involvements,
            relations,
            quarantine,
            audit: 0,
            run: None,
        })
    }

    pub(super) async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        c: RetentionCounts,
        error: Option<String>,
    ) -> Result<i64, StoreError> {
        let status = if error.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        sqlx::query_scalar(
            "INSERT INTO runs (source, mode, status, phase, started_at, finished_at,
               read, ended, updated, rejected, error)
             VALUES ($1, 'retention', $2, 'done', $3, now(), $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(RETENTION_SOURCE)
        .bind(status)
        .bind(started)
        .bind((c.involvements + c.relations + c.quarantine + c.audit) as i64)
        .bind(c.involvements as i64)
        .bind(c.relations as i64)
        .bind(c.quarantine as i64)
        .bind(error)
        .fetch_one(self.pool())
        .await
        .map_err(e("record retention run"))
    }
}
