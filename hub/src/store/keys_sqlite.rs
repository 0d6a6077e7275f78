//! SQLite: rows per key version and audit entries per audit key version
//! (`matchpoint keys status`).

use super::sqlite::SqliteStore;
use super::{KeyVersionCount, StoreError};

impl SqliteStore {
    pub(super) async fn key_versions(&self) -> Result<Vec<KeyVersionCount>, StoreError> {
        self.with_conn(|conn| {
            let mut st = conn
                .prepare(
                    "SELECT source, key_id, sum(inv), sum(rel) FROM (
                       SELECT source, key_id, count(*) AS inv, 0 AS rel
                         FROM involvements GROUP BY source, key_id
                       UNION ALL
                       SELECT source, key_id, 0, count(*) FROM relations GROUP BY source, key_id)
                     GROUP BY source, key_id ORDER BY source, key_id",
                )
                .map_err(|err| StoreError::db("key versions", err))?;
            st.query_map([], |r| {
                Ok(KeyVersionCount {
                    source: r.get(0)?,
                    key_id: r.get(1)?,
                    involvements: r.get::<_, i64>(2)?.max(0) as u64,
                    relations: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|err| StoreError::db("key versions", err))
        })
        .await
    }

    pub(super) async fn audit_key_versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_conn(|conn| {
            let mut st = conn
                .prepare(
                    "SELECT subject_key_id, count(*) FROM audit_log WHERE subject_key_id IS NOT NULL
                     GROUP BY subject_key_id ORDER BY subject_key_id",
                )
                .map_err(|err| StoreError::db("audit key versions", err))?;
            st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|err| StoreError::db("audit key versions", err))
        })
        .await
    }
}
