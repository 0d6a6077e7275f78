//! PostgreSQL: the retention purge of the index (involvements, their relations, the iWmo
//! message logs of the pairs they leave without involvement, quarantine).

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use super::{RETENTION_SOURCE, RetentionCounts, RetentionCutoffs, StoreError};

fn e(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

/// Rows purged: ended before the cutoff, or past their own `purge_after` date.
const PURGED: &str =
    "(end_date IS NOT NULL AND end_date < $1) OR (purge_after IS NOT NULL AND purge_after < $2)";

/// The involvements of a stored iWmo pair log (`source_state` kind `pair`, key = provider
/// AGB code, a zero byte, the 32-byte client pseudonym; see `sources::iwmo::stored`): of
/// the same source, for that person, with a record id `AGB-ToewijzingNummer` (compared as
/// bytes).
const OF_PAIR: &str = "i.source = s.source
    AND i.person = substring(s.key FROM length(s.key) - 31)
    AND substring(convert_to(i.source_record_id, 'UTF8') FOR greatest(length(s.key) - 32, 0))
        = substring(s.key FOR greatest(length(s.key) - 33, 0)) || '\\x2d'::bytea";

/// Pair logs to purge: an involvement of the pair is purged now, and none stays. Runs
/// before the involvements are deleted. A log whose pair never had an involvement (e.g. a
/// start waiting for its assignment) is kept.
fn purged_logs() -> String {
    format!(
        "DELETE FROM source_state AS s WHERE s.kind = 'pair' AND {}",
        pair_purged()
    )
}

/// The condition on a pair log `s` that retention purges now: longer than a bare prefix, an
/// involvement of the pair is purged now, and none stays.
fn pair_purged() -> String {
    format!(
        "length(s.key) > 33
           AND EXISTS (SELECT 1 FROM involvements i WHERE {OF_PAIR} AND ({PURGED}))
           AND NOT EXISTS (SELECT 1 FROM involvements i WHERE {OF_PAIR} AND NOT ({PURGED}))"
    )
}

/// The assignment-number entries of the pair logs to purge (`source_state` kind `number`,
/// value = the pair log's key; see `sources::iwmo::stored`). Runs before the logs are
/// deleted; not counted.
fn purged_numbers() -> String {
    format!(
        "DELETE FROM source_state AS n WHERE n.kind = 'number' AND EXISTS
           (SELECT 1 FROM source_state AS s WHERE s.source = n.source AND s.kind = 'pair'
              AND s.key = n.value AND {})",
        pair_purged()
    )
}

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
        sqlx::query(sqlx::AssertSqlSafe(purged_numbers()))
            .bind(cut.ended_before)
            .bind(cut.today)
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        let message_logs = sqlx::query(sqlx::AssertSqlSafe(purged_logs()))
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
            message_logs,
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
               read, ended, updated, rejected, accepted, error)
             VALUES ($1, 'retention', $2, 'done', $3, now(), $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(RETENTION_SOURCE)
        .bind(status)
        .bind(started)
        .bind((c.involvements + c.relations + c.quarantine + c.message_logs + c.audit) as i64)
        .bind(c.involvements as i64)
        .bind(c.relations as i64)
        .bind(c.quarantine as i64)
        .bind(c.message_logs as i64)
        .bind(error)
        .fetch_one(self.pool())
        .await
        .map_err(e("record retention run"))
    }
}
