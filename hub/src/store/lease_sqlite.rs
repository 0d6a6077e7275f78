//! SQLite: source leases (no overlapping runs of one source) and the run history the
//! scheduler needs. Times in `source_leases` are milliseconds since the Unix epoch.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::sqlite::SqliteStore;
use super::{LeaseOutcome, ScheduleHistory, StoreError};

/// Schema version 2 (SQLite): one lease row per source.
pub(super) const MIGRATION: &str = "
-- Matchpoint index schema, SQLite, version 2: source leases.
CREATE TABLE IF NOT EXISTS source_leases (
    source TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
";

fn e(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn parse_text(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl SqliteStore {
    pub(super) async fn try_lease(
        &self,
        source: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError> {
        let (source, holder) = (source.to_owned(), holder.to_owned());
        let op = "take lease";
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(e(op))?;
            // Taken when absent or expired: one conditional statement, under the write lock.
            let changed = tx
                .execute(
                    "INSERT INTO source_leases (source, holder, acquired_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (source) DO UPDATE SET holder = excluded.holder,
                       acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                     WHERE source_leases.expires_at <= ?3",
                    params![
                        source,
                        holder,
                        now.timestamp_millis(),
                        expires_at.timestamp_millis()
                    ],
                )
                .map_err(e(op))?;
            let outcome = if changed == 1 {
                LeaseOutcome::Acquired
            } else {
                let (holder, until): (String, i64) = tx
                    .query_row(
                        "SELECT holder, expires_at FROM source_leases WHERE source = ?1",
                        [&source],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(e(op))?;
                LeaseOutcome::HeldBy {
                    holder,
                    expires_at: from_millis(until),
                }
            };
            tx.commit().map_err(e(op))?;
            Ok(outcome)
        })
        .await
    }

    pub(super) async fn renew_lease(
        &self,
        source: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (source, holder) = (source.to_owned(), holder.to_owned());
        self.with_conn(move |conn| {
            let n = conn
                .execute(
                    "UPDATE source_leases SET expires_at = ?3 WHERE source = ?1 AND holder = ?2",
                    params![source, holder, expires_at.timestamp_millis()],
                )
                .map_err(e("renew lease"))?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn release_lease(&self, source: &str, holder: &str) -> Result<(), StoreError> {
        let (source, holder) = (source.to_owned(), holder.to_owned());
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM source_leases WHERE source = ?1 AND holder = ?2",
                params![source, holder],
            )
            .map_err(e("release lease"))?;
            Ok(())
        })
        .await
    }

    pub(super) async fn schedule_history(
        &self,
        source: &str,
    ) -> Result<ScheduleHistory, StoreError> {
        let source = source.to_owned();
        let op = "schedule history";
        self.with_conn(move |conn| {
            // Same-format RFC 3339 texts (UTC, milliseconds) order like the times they hold.
            let (last, last_full): (Option<String>, Option<String>) = conn
                .query_row(
                    "SELECT max(started_at), max(CASE WHEN mode = 'full' THEN started_at END)
                     FROM runs WHERE source = ?1 AND mode IN ('full', 'incremental')",
                    [&source],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(e(op))?;
            let success: Option<String> = conn
                .query_row(
                    "SELECT last_success_at FROM sources WHERE name = ?1",
                    [&source],
                    |r| r.get(0),
                )
                .optional()
                .map_err(e(op))?
                .flatten();
            Ok(ScheduleHistory {
                last_started: parse_text(last),
                last_full_started: parse_text(last_full),
                last_success_at: parse_text(success),
            })
        })
        .await
    }
}
