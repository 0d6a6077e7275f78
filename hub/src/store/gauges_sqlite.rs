//! SQLite: the index and quarantine gauges of `/metrics` (see `Store::index_gauges`).

use super::sqlite::SqliteStore;
use super::{IndexGauges, IndexRowCount, StoreError};

impl SqliteStore {
    pub(super) async fn index_gauges(&self) -> Result<IndexGauges, StoreError> {
        let op = "index gauges";
        self.with_conn(move |conn| {
            let mut st = conn
                .prepare(
                    "SELECT source, status, key_id, count(*) FROM involvements
                     GROUP BY source, status, key_id ORDER BY source, status, key_id",
                )
                .map_err(|err| StoreError::db(op, err))?;
            let rows = st
                .query_map([], |r| {
                    Ok(IndexRowCount {
                        source: r.get(0)?,
                        status: r.get(1)?,
                        key_id: r.get(2)?,
                        rows: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|err| StoreError::db(op, err))?;
            // Same definition as `stats().quarantined`.
            let mut st = conn
                .prepare(
                    "SELECT s.name,
                       (SELECT count(DISTINCT COALESCE(q.source_record_id, '#' || q.id)) FROM quarantine q
                        WHERE q.source = s.name AND q.resolved_by_run IS NULL
                          AND NOT EXISTS (SELECT 1 FROM involvements i
                                          WHERE i.source = q.source
                                            AND i.source_record_id = q.source_record_id
                                            AND i.changed_run > q.run_id))
                     FROM sources s WHERE s.name <> ?1 ORDER BY s.name",
                )
                .map_err(|err| StoreError::db(op, err))?;
            let quarantine = st
                .query_map([super::RETENTION_SOURCE], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|err| StoreError::db(op, err))?;
            Ok(IndexGauges { rows, quarantine })
        })
        .await
    }
}
