//! PostgreSQL: the index and quarantine gauges of `/metrics` (see `Store::index_gauges`).

use super::postgres::PgStore;
use super::{IndexGauges, IndexRowCount, StoreError};

impl PgStore {
    pub(super) async fn index_gauges(&self) -> Result<IndexGauges, StoreError> {
        let op = "index gauges";
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT source, status, key_id, count(*) FROM involvements
             GROUP BY source, status, key_id ORDER BY source, status, key_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|err| StoreError::db(op, err))?;
        // Same definition as `stats().quarantined`: distinct record ids neither resolved by a
        // replay nor published by a later run.
        let quarantine: Vec<(String, i64)> = sqlx::query_as(
            "SELECT s.name, COALESCE(q.n, 0) FROM sources s
             LEFT JOIN (SELECT q.source,
                               count(DISTINCT COALESCE(q.source_record_id, '#' || q.id) COLLATE \"C\") AS n
                        FROM quarantine q
                        WHERE q.resolved_by_run IS NULL
                          AND NOT EXISTS (SELECT 1 FROM involvements i
                                          WHERE i.source = q.source
                                            AND i.source_record_id = q.source_record_id
                                            AND i.changed_run > q.run_id)
                        GROUP BY q.source) q ON q.source = s.name
             WHERE s.name <> $1
             ORDER BY s.name",
        )
        .bind(super::RETENTION_SOURCE)
        .fetch_all(self.pool())
        .await
        .map_err(|err| StoreError::db(op, err))?;
        Ok(IndexGauges {
            rows: rows
                .into_iter()
                .map(|(source, status, key_id, n)| IndexRowCount {
                    source,
                    status,
                    key_id,
                    rows: n.max(0) as u64,
                })
                .collect(),
            quarantine: quarantine
                .into_iter()
                .map(|(s, n)| (s, n.max(0) as u64))
                .collect(),
        })
    }
}
