//! SQLite: the retention purge of the index (involvements, their relations, the iWmo
//! message logs of the pairs they leave without involvement, quarantine).

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

/// The involvements of a stored iWmo pair log (`source_state` kind `pair`, key = provider
/// AGB code, a zero byte, the 32-byte client pseudonym; see `sources::iwmo::stored`): of
/// the same source, for that person, with a record id `AGB-ToewijzingNummer`.
const OF_PAIR: &str = "i.source = s.source
    AND i.person = substr(s.key, length(s.key) - 31)
    AND substr(i.source_record_id, 1, length(s.key) - 32)
        = CAST(substr(s.key, 1, length(s.key) - 33) AS TEXT) || '-'";

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
            tx.execute(&purged_numbers(), params![ended, today])
                .map_err(e(op))?;
            let message_logs = tx
                .execute(&purged_logs(), params![ended, today])
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
                message_logs,
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
                   read, ended, updated, rejected, accepted, error)
                 VALUES (?1, 'retention', ?2, 'done', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    RETENTION_SOURCE,
                    if error.is_some() {
                        "failed"
                    } else {
                        "succeeded"
                    },
                    time(started),
                    time(Utc::now()),
                    (c.involvements + c.relations + c.quarantine + c.message_logs + c.audit) as i64,
                    c.involvements as i64,
                    c.relations as i64,
                    c.quarantine as i64,
                    c.message_logs as i64,
                    error,
                ],
            )
            .map_err(e("record retention run"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }
}
