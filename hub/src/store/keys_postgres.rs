//! PostgreSQL: rows per key version and audit entries per audit key version
//! (`matchpoint keys status`).

use super::postgres::PgStore;
use super::{KeyVersionCount, StoreError};

impl PgStore {
    pub(super) async fn key_versions(&self) -> Result<Vec<KeyVersionCount>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT source, key_id, sum(inv)::bigint, sum(rel)::bigint FROM (
               SELECT source, key_id, count(*) AS inv, 0::bigint AS rel
                 FROM involvements GROUP BY source, key_id
               UNION ALL
               SELECT source, key_id, 0::bigint, count(*) FROM relations GROUP BY source, key_id) t
             GROUP BY source, key_id ORDER BY source, key_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|err| StoreError::db("key versions", err))?;
        Ok(rows
            .into_iter()
            .map(|(source, key_id, inv, rel)| KeyVersionCount {
                source,
                key_id,
                involvements: inv.max(0) as u64,
                relations: rel.max(0) as u64,
            })
            .collect())
    }

    pub(super) async fn audit_key_versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subject_key_id, count(*) FROM audit_log WHERE subject_key_id IS NOT NULL
             GROUP BY subject_key_id ORDER BY subject_key_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|err| StoreError::db("audit key versions", err))?;
        Ok(rows
            .into_iter()
            .map(|(k, n)| (k, n.max(0) as u64))
            .collect())
    }
}
