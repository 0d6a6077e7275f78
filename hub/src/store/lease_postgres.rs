//! PostgreSQL: source leases (no overlapping runs of one source, also across instances
//! sharing the database) and the run history the scheduler needs.

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use super::{LeaseOutcome, ScheduleHistory, StoreError};

/// Schema version 2 (PostgreSQL): one lease row per source.
pub(super) const MIGRATION: &str = r#"
-- Matchpoint index schema, PostgreSQL, version 2: source leases.
CREATE TABLE IF NOT EXISTS source_leases (
    source text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
"#;

fn e(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

impl PgStore {
    pub(super) async fn try_lease(
        &self,
        source: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError> {
        let op = "take lease";
        // One conditional upsert: of two instances racing for a free or expired lease, the
        // second waits on the row and then sees it taken.
        let taken: Option<String> = sqlx::query_scalar(
            "INSERT INTO source_leases (source, holder, acquired_at, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source) DO UPDATE SET holder = excluded.holder,
               acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
             WHERE source_leases.expires_at <= $3
             RETURNING holder",
        )
        .bind(source)
        .bind(holder)
        .bind(now)
        .bind(expires_at)
        .fetch_optional(self.pool())
        .await
        .map_err(e(op))?;
        if taken.is_some() {
            return Ok(LeaseOutcome::Acquired);
        }
        let current: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT holder, expires_at FROM source_leases WHERE source = $1")
                .bind(source)
                .fetch_optional(self.pool())
                .await
                .map_err(e(op))?;
        Ok(match current {
            Some((holder, expires_at)) => LeaseOutcome::HeldBy { holder, expires_at },
            // Released between the two statements: report it as held briefly; the next
            // look at the schedule takes it.
            None => LeaseOutcome::HeldBy {
                holder: "(just released)".into(),
                expires_at: now,
            },
        })
    }

    pub(super) async fn renew_lease(
        &self,
        source: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE source_leases SET expires_at = $3 WHERE source = $1 AND holder = $2",
        )
        .bind(source)
        .bind(holder)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .map_err(e("renew lease"))?
        .rows_affected();
        Ok(n == 1)
    }

    pub(super) async fn release_lease(&self, source: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM source_leases WHERE source = $1 AND holder = $2")
            .bind(source)
            .bind(holder)
            .execute(self.pool())
            .await
            .map_err(e("release lease"))?;
        Ok(())
    }

    pub(super) async fn schedule_history(
        &self,
        source: &str,
    ) -> Result<ScheduleHistory, StoreError> {
        let op = "schedule history";
        let (last_started, last_full_started): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as(
                "SELECT max(started_at), max(started_at) FILTER (WHERE mode = 'full')
                 FROM runs WHERE source = $1 AND mode IN ('full', 'incremental')",
            )
            .bind(source)
            .fetch_one(self.pool())
            .await
            .map_err(e(op))?;
        let last_success_at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT last_success_at FROM sources WHERE name = $1")
                .bind(source)
                .fetch_optional(self.pool())
                .await
                .map_err(e(op))?
                .flatten();
        Ok(ScheduleHistory {
            last_started,
            last_full_started,
            last_success_at,
        })
    }
}
