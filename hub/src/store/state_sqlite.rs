//! SQLite: per-source connector state (`Store::stage_state`), published in the run's
//! publication transaction.

use std::sync::atomic::Ordering;

use rusqlite::{Transaction, params, params_from_iter};

use super::sqlite::SqliteStore;
use super::{RunId, StateChange, StateEntries, StoreError};

/// Schema version 6 (SQLite): connector state and its per-run staging.
pub(super) const MIGRATION: &str = "
-- Matchpoint index schema, SQLite, version 6: connector state (issue 3, iWmo).
-- The state a connector keeps between runs (e.g. the iWmo message log per provider and
-- client pseudonym, and the files applied), as published with the index.
CREATE TABLE source_state (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (source, kind, key)
) WITHOUT ROWID;
-- Changes staged by a run; applied by its publication, dropped when it fails. kind '' is a
-- marker: the run replaces the source's whole state.
CREATE TABLE source_state_staged (
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
";

fn e(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

/// Applies the run's staged state changes (inside its publication transaction) and drops
/// the staged changes of the source's finished runs.
pub(super) fn apply(tx: &Transaction<'_>, source: &str, run: RunId) -> Result<(), StoreError> {
    let op = "publish state";
    tx.execute(
        "DELETE FROM source_state WHERE source = ?1
           AND EXISTS (SELECT 1 FROM source_state_staged WHERE run = ?2 AND kind = '')",
        params![source, run],
    )
    .map_err(e(op))?;
    tx.execute(
        "DELETE FROM source_state WHERE source = ?1 AND (kind, key) IN
           (SELECT kind, key FROM source_state_staged
            WHERE run = ?2 AND value IS NULL AND kind <> '')",
        params![source, run],
    )
    .map_err(e(op))?;
    tx.execute(
        "INSERT INTO source_state (source, kind, key, value)
         SELECT ?1, kind, key, value FROM source_state_staged
         WHERE run = ?2 AND value IS NOT NULL AND kind <> '' ORDER BY seq
         ON CONFLICT (source, kind, key) DO UPDATE SET value = excluded.value",
        params![source, run],
    )
    .map_err(e(op))?;
    tx.execute(
        "DELETE FROM source_state_staged WHERE run = ?2 OR (source = ?1 AND run IN
           (SELECT id FROM runs WHERE source = ?1 AND status NOT IN ('running', 'held')))",
        params![source, run],
    )
    .map_err(e(op))?;
    Ok(())
}

impl SqliteStore {
    pub(super) async fn stage_state(
        &self,
        run: RunId,
        changes: Vec<StateChange>,
    ) -> Result<(), StoreError> {
        let op = "stage state";
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(e(op))?;
            {
                let (source, status): (String, String) = tx
                    .query_row(
                        "SELECT source, status FROM runs WHERE id = ?1",
                        [run],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(e(op))?;
                if status != "running" {
                    return Err(StoreError::RunState {
                        run,
                        status,
                        what: "only a running run can stage".into(),
                    });
                }
                let base: i64 = tx
                    .query_row(
                        "SELECT COALESCE(max(seq), 0) FROM source_state_staged WHERE run = ?1",
                        [run],
                        |r| r.get(0),
                    )
                    .map_err(e(op))?;
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO source_state_staged (run, seq, source, kind, key, value)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(e(op))?;
                for (i, c) in changes.iter().enumerate() {
                    let seq = base + 1 + i64::try_from(i).unwrap_or(i64::MAX - base - 1);
                    ins.execute(params![run, seq, source, c.kind, c.key, c.value])
                        .map_err(e(op))?;
                }
            }
            tx.commit().map_err(e(op))
        })
        .await
    }

    pub(super) async fn source_state_page(
        &self,
        source: &str,
        kind: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<StateEntries, StoreError> {
        let (source, kind) = (source.to_owned(), kind.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let op = "read state";
        self.state_reads().fetch_add(1, Ordering::Relaxed);
        self.with_conn(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT key, value FROM source_state
                     WHERE source = ?1 AND kind = ?2 AND (?3 IS NULL OR key > ?3)
                     ORDER BY key LIMIT ?4",
                )
                .map_err(e(op))?;
            let rows = st
                .query_map(params![source, kind, after, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(e(op))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(e(op))?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn source_state(
        &self,
        source: &str,
        kind: &str,
        keys: Option<Vec<Vec<u8>>>,
    ) -> Result<StateEntries, StoreError> {
        let (source, kind) = (source.to_owned(), kind.to_owned());
        let op = "read state";
        let statements = keys
            .as_ref()
            .map_or(1, |k| k.len().div_ceil(KEYS_PER_QUERY));
        self.state_reads().fetch_add(
            u64::try_from(statements).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.with_conn(move |conn| {
            let mut out = Vec::new();
            match keys {
                None => {
                    let mut st = conn
                        .prepare(
                            "SELECT key, value FROM source_state WHERE source = ?1 AND kind = ?2",
                        )
                        .map_err(e(op))?;
                    let rows = st
                        .query_map(params![source, kind], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(e(op))?;
                    for r in rows {
                        out.push(r.map_err(e(op))?);
                    }
                }
                Some(keys) => {
                    // An `IN` list of at most KEYS_PER_QUERY keys per statement.
                    for chunk in keys.chunks(KEYS_PER_QUERY) {
                        let list = vec!["?"; chunk.len()].join(", ");
                        let mut st = conn
                            .prepare_cached(&format!(
                                "SELECT key, value FROM source_state
                                 WHERE source = ?1 AND kind = ?2 AND key IN ({list})"
                            ))
                            .map_err(e(op))?;
                        let args = [source.clone(), kind.clone()]
                            .into_iter()
                            .map(rusqlite::types::Value::Text)
                            .chain(
                                chunk
                                    .iter()
                                    .map(|k| rusqlite::types::Value::Blob(k.clone())),
                            );
                        let rows = st
                            .query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))
                            .map_err(e(op))?;
                        for r in rows {
                            out.push(r.map_err(e(op))?);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn source_state_ranges(
        &self,
        source: &str,
        kind: &str,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        per_range: usize,
    ) -> Result<StateEntries, StoreError> {
        let (source, kind) = (source.to_owned(), kind.to_owned());
        let op = "read state";
        let per_range = i64::try_from(per_range).unwrap_or(i64::MAX);
        let statements = ranges.len().div_ceil(RANGES_PER_QUERY);
        self.state_reads().fetch_add(
            u64::try_from(statements).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.with_conn(move |conn| {
            let mut out = Vec::new();
            for chunk in ranges.chunks(RANGES_PER_QUERY) {
                // The ranges as a VALUES list (?4, ?5, ?6), (?7, ?8, ?9), …; each a range
                // scan of the primary key, numbered per range to keep the first `per_range`.
                let values = (0..chunk.len())
                    .map(|i| format!("(?{}, ?{}, ?{})", 4 + 3 * i, 5 + 3 * i, 6 + 3 * i))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut st = conn
                    .prepare_cached(&format!(
                        "WITH r(i, lo, hi) AS (VALUES {values})
                         SELECT key, value FROM (
                             SELECT s.key, s.value,
                                    row_number() OVER (PARTITION BY r.i ORDER BY s.key) AS n
                             FROM r JOIN source_state AS s
                               ON s.source = ?1 AND s.kind = ?2 AND s.key >= r.lo AND s.key < r.hi
                         ) WHERE n <= ?3"
                    ))
                    .map_err(e(op))?;
                let mut args = vec![
                    rusqlite::types::Value::Text(source.clone()),
                    rusqlite::types::Value::Text(kind.clone()),
                    rusqlite::types::Value::Integer(per_range),
                ];
                for (i, (lo, hi)) in chunk.iter().enumerate() {
                    args.push(rusqlite::types::Value::Integer(
                        i64::try_from(i).unwrap_or(i64::MAX),
                    ));
                    args.push(rusqlite::types::Value::Blob(lo.clone()));
                    args.push(rusqlite::types::Value::Blob(hi.clone()));
                }
                let rows = st
                    .query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(e(op))?;
                for r in rows {
                    out.push(r.map_err(e(op))?);
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Keys per `IN` list of a state read (SQLite binds at most 32,766 parameters).
const KEYS_PER_QUERY: usize = 500;

/// Ranges per query of a state read by ranges (three parameters each).
const RANGES_PER_QUERY: usize = 300;
