//! SQLite: the retention purge of the index (involvements, their relations, quarantine).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::params;

use super::sqlite::SqliteStore;
use super::{RETENTION_SOURCE, RetentionCounts, RetentionCutoffs, StoreError};

fn e(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

/// Rows purged: ended before the cutoff, or past their own `purge_after` date.
const PURGED: &str =
    "(end_date IS NOT NULL AND end_date < ?1) OR (purge_after IS NOT NULL AND purge_after < ?2)";

fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SqliteStore {
    pub(super) async fn purge_retention(
        &self,
        cut: RetentionCutoffs,
        dry_run: bool,
    ) -> Result<RetentionCounts, StoreError> {
        let op = "retention";
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(e(op))?;
            let (ended, today) = (date(cut.ended_before), date(cut.today));
            let relations = tx
                .execute(
                    &format!(
                        "DELETE FROM relations WHERE (source, source_record_id) IN
                         (SELECT source, source_record_id FROM involvements WHERE {PURGED})"
                    ),
                    params![ended, today],
                )
                .map_err(e(op))? as u64;
            let involvements = tx
                .execute(
                    &format!("DELETE FROM involvements WHERE {PURGED}"),
                    params![ended, today],
                )
                .map_err(e(op))? as u64;
            let quarantine = tx
                .execute(
                    "DELETE FROM quarantine WHERE created_at < ?1",
                    [time(cut.quarantine_before)],
                )
                .map_err(e(op))? as u64;
            let counts = RetentionCounts {
                involvements,
                relations,
                quarantine,
                audit: 0,
                run: None,
            };
            if dry_run {
                tx.rollback().map_err(e(op))?;
                return Ok(counts);
            }
            tx.commit().map_err(e(op))?;
            Ok(counts)
        })
        .await
    }

    pub(super) async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        c: RetentionCounts,
        error: Option<String>,
    ) -> Result<i64, StoreError> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO runs (source, mode, status, phase, started_at, finished_at,
                   read, ended, updated, rejected, error)
                 VALUES (?1, 'retention', ?2, 'done', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    RETENTION_SOURCE,
                    if error.is_some() {
                        "failed"
                    } else {
                        "succeeded"
                    },
                    time(started),
                    time(Utc::now()),
                    (c.involvements + c.relations + c.quarantine + c.audit) as i64,
                    c.involvements as i64,
                    c.relations as i64,
                    c.quarantine as i64,
                    error,
                ],
            )
            .map_err(e("record retention run"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }
}
