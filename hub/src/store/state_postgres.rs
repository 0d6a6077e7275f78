//! PostgreSQL: per-source connector state (`Store::stage_state`), published in the run's
//! publication transaction.

use std::sync::atomic::Ordering;

use sqlx::PgConnection;

use super::postgres::PgStore;
use super::{RunId, StateChange, StateEntries, StoreError};

/// Schema version 6 (PostgreSQL): connector state and its per-run staging.
pub(super) const MIGRATION: &str = r#"
-- Matchpoint index schema, PostgreSQL, version 6: connector state (issue 3, iWmo).
-- The state a connector keeps between runs (e.g. the iWmo message log per provider and
-- client pseudonym, and the files applied), as published with the index.
CREATE TABLE source_state (
    source text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (source, kind, key)
);
-- Changes staged by a run; applied by its publication, dropped when it fails. kind '' is a
-- marker: the run replaces the source's whole state.
CREATE TABLE source_state_staged (
    run bigint NOT NULL,
    seq bigint NOT NULL,
    source text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    value bytea,
    PRIMARY KEY (run, seq)
);
"#;

fn e(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

/// Applies the run's staged state changes (inside its publication transaction) and drops
/// the staged changes of the source's finished runs.
pub(super) async fn apply(
    tx: &mut PgConnection,
    source: &str,
    run: RunId,
) -> Result<(), StoreError> {
    let op = "publish state";
    for statement in [
        "DELETE FROM source_state WHERE source = $1
           AND EXISTS (SELECT 1 FROM source_state_staged WHERE run = $2 AND kind = '')",
        "DELETE FROM source_state WHERE source = $1 AND (kind, key) IN
           (SELECT kind, key FROM source_state_staged
            WHERE run = $2 AND value IS NULL AND kind <> '')",
        "INSERT INTO source_state (source, kind, key, value)
         SELECT DISTINCT ON (kind, key) $1, kind, key, value FROM source_state_staged
         WHERE run = $2 AND value IS NOT NULL AND kind <> ''
         ORDER BY kind, key, seq DESC
         ON CONFLICT (source, kind, key) DO UPDATE SET value = excluded.value",
        "DELETE FROM source_state_staged WHERE run = $2 OR (source = $1 AND run IN
           (SELECT id FROM runs WHERE source = $1 AND status NOT IN ('running', 'held')))",
    ] {
        sqlx::query(statement)
            .bind(source)
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
    }
    Ok(())
}

impl PgStore {
    pub(super) async fn stage_state(
        &self,
        run: RunId,
        changes: Vec<StateChange>,
    ) -> Result<(), StoreError> {
        let op = "stage state";
        let mut tx = self.pool().begin().await.map_err(e(op))?;
        let (source, status): (String, String) =
            sqlx::query_as("SELECT source, status FROM runs WHERE id = $1")
                .bind(run)
                .fetch_one(&mut *tx)
                .await
                .map_err(e(op))?;
        if status != "running" {
            return Err(StoreError::RunState {
                run,
                status,
                what: "only a running run can stage".into(),
            });
        }
        let base: i64 = sqlx::query_scalar(
            "SELECT COALESCE(max(seq), 0) FROM source_state_staged WHERE run = $1",
        )
        .bind(run)
        .fetch_one(&mut *tx)
        .await
        .map_err(e(op))?;
        let mut next = base + 1;
        for chunk in changes.chunks(1000) {
            let seqs: Vec<i64> = (0..chunk.len())
                .map(|i| next + i64::try_from(i).unwrap_or(0))
                .collect();
            next += i64::try_from(chunk.len()).unwrap_or(0);
            sqlx::query(
                "INSERT INTO source_state_staged (run, seq, source, kind, key, value)
                 SELECT $1, s, $2, k, y, v
                 FROM UNNEST($3::bigint[], $4::text[], $5::bytea[], $6::bytea[]) AS t(s, k, y, v)",
            )
            .bind(run)
            .bind(&source)
            .bind(&seqs)
            .bind(chunk.iter().map(|c| c.kind.as_str()).collect::<Vec<&str>>())
            .bind(
                chunk
                    .iter()
                    .map(|c| c.key.as_slice())
                    .collect::<Vec<&[u8]>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|c| c.value.as_deref())
                    .collect::<Vec<Option<&[u8]>>>(),
            )
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        }
        tx.commit().await.map_err(e(op))
    }

    pub(super) async fn source_state_page(
        &self,
        source: &str,
        kind: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<StateEntries, StoreError> {
        self.state_reads().fetch_add(1, Ordering::Relaxed);
        sqlx::query_as(
            "SELECT key, value FROM source_state
             WHERE source = $1 AND kind = $2 AND ($3::bytea IS NULL OR key > $3)
             ORDER BY key LIMIT $4",
        )
        .bind(source)
        .bind(kind)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(e("read state"))
    }

    pub(super) async fn source_state(
        &self,
        source: &str,
        kind: &str,
        keys: Option<Vec<Vec<u8>>>,
    ) -> Result<StateEntries, StoreError> {
        let op = "read state";
        self.state_reads().fetch_add(1, Ordering::Relaxed);
        match keys {
            None => sqlx::query_as(
                "SELECT key, value FROM source_state WHERE source = $1 AND kind = $2",
            )
            .bind(source)
            .bind(kind)
            .fetch_all(self.pool())
            .await
            .map_err(e(op)),
            Some(keys) => sqlx::query_as(
                "SELECT key, value FROM source_state
                 WHERE source = $1 AND kind = $2 AND key = ANY($3)",
            )
            .bind(source)
            .bind(kind)
            .bind(&keys)
            .fetch_all(self.pool())
            .await
            .map_err(e(op)),
        }
    }

    pub(super) async fn source_state_ranges(
        &self,
        source: &str,
        kind: &str,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        per_range: usize,
    ) -> Result<StateEntries, StoreError> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        self.state_reads().fetch_add(1, Ordering::Relaxed);
        let (starts, ends): (Vec<Vec<u8>>, Vec<Vec<u8>>) = ranges.into_iter().unzip();
        // One index range scan per range, each stopped after `per_range` entries.
        sqlx::query_as(
            "SELECT s.key, s.value FROM UNNEST($3::bytea[], $4::bytea[]) AS r(lo, hi)
             CROSS JOIN LATERAL (
                 SELECT key, value FROM source_state
                 WHERE source = $1 AND kind = $2 AND key >= r.lo AND key < r.hi
                 ORDER BY key LIMIT $5
             ) AS s",
        )
        .bind(source)
        .bind(kind)
        .bind(&starts)
        .bind(&ends)
        .bind(i64::try_from(per_range).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(e("read state"))
    }
}
