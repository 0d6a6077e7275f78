//! PostgreSQL backend (through sqlx, runtime queries only): staging in a per-run UNLOGGED
//! table, one multi-row `UNNEST` statement per staged batch, and set-based publication in one
//! transaction, serialised per source by an advisory lock.
//!
//! Behaves exactly like the SQLite backend (the store test suite runs against both).

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use matchpoint_schemas::Involvement;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::{
    Completion, QuarantineEntry, QuarantineFilter, QuarantineRecord, RunCounts, RunId, RunMode,
    RunRecord, RunStatus, SealedRecord, SourceStats, StageOutcome, StoreError, StoredInvolvement,
    WouldEnd, encode_relations, redact_url,
};
use crate::failpoint;

pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("postgres_schema.sql"),
    // Audit trail (issue 4): self-contained, may be reordered with other new migrations.
    include_str!("../audit/postgres_migration.sql"),
    // API users and the shielded flag (issue 4, lookup API).
    include_str!("postgres_users.sql"),
    // Source leases (issue 5, scheduler).
    super::lease_postgres::MIGRATION,
    // v5: the end reason of an involvement (issue 3, iWmo WMO588).
    include_str!("postgres_v5.sql"),
    // v6: connector state (issue 3, iWmo).
    super::state_postgres::MIGRATION,
];

#[path = "lookup_postgres.rs"]
mod lookup;

/// Advisory lock (one-bigint key space) held while migrating, so concurrent opens serialise.
const MIGRATION_LOCK: i64 = 0x4d50_5f53_4348_454d;

/// First key of the two-int advisory lock held per source (the second is `hashtext(source)`)
/// by `begin_run` and publication, so two processes working on one source serialise. The
/// two-int key space does not overlap the one-bigint space other applications tend to use.
pub(crate) const SOURCE_LOCK_SPACE: i32 = 0x4d50_5352;

/// SQLSTATE `undefined_table`.
const UNDEFINED_TABLE: &str = "42P01";

/// The production store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connector state queries sent (`state_postgres.rs`; see `Store::state_reads`).
    state_reads: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Current time at the precision SQLite stores (milliseconds), so both backends agree.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Name of a run's staging table (the id is a number: safe to splice into SQL).
/// Fewest new or changed rows for which a publication may rebuild the person indexes.
const REBUILD_MIN_ROWS: i64 = 10_000;

/// The person indexes (as in `postgres_schema.sql`), rebuilt after a first import.
const PERSON_INDEXES: &str = "CREATE INDEX involvements_person ON involvements (person);
     CREATE INDEX relations_other ON relations (other);";

/// The relations' primary key (as in `postgres_schema.sql`), added back after a first import.
const RELATIONS_KEY: &str = "ALTER TABLE relations ADD CONSTRAINT relations_pkey
     PRIMARY KEY (source, source_record_id, kind, other)";

fn stg(run: RunId) -> String {
    format!("staging_run_{run}")
}

fn e(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

fn is_undefined_table(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == UNDEFINED_TABLE)
}

/// `LIMIT` argument: `NULL` (no limit) when the count does not fit a bigint.
fn limit(n: u64) -> Option<i64> {
    i64::try_from(n).ok()
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sql(s: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(s)
}

impl PgStore {
    /// The connection pool (for the store's sibling modules).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The counter of connector state queries sent (for the store's sibling modules).
    pub(super) fn state_reads(&self) -> &std::sync::atomic::AtomicU64 {
        &self.state_reads
    }

    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| StoreError::Database {
                op: "connect",
                message: format!("{}: {err}", redact_url(url)),
            })?
            .application_name("matchpoint")
            // `DROP TABLE IF EXISTS` notices are expected; only warnings are worth logging.
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|err| StoreError::Database {
                op: "connect",
                message: format!("{}: {err}", redact_url(url)),
            })?;
        migrate(&pool).await?;
        Ok(PgStore {
            pool,
            state_reads: std::sync::Arc::default(),
        })
    }

    pub(super) async fn begin_run(&self, source: &str, mode: RunMode) -> Result<RunId, StoreError> {
        let op = "begin run";
        let now = now();
        let mut tx = self.pool.begin().await.map_err(e(op))?;
        lock_source(&mut tx, source).await?;
        let stale: Vec<RunId> = sqlx::query_scalar(
            "UPDATE runs SET status = 'failed', finished_at = $2,
             error = 'interrupted: the process ended before the run completed (phase ' || COALESCE(phase, '?') || '); nothing was published'
             WHERE source = $1 AND status = 'running'
             RETURNING id",
        )
        .bind(source)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(e(op))?;
        for id in stale {
            drop_staging(&mut tx, id).await?;
        }
        sqlx::query("INSERT INTO sources (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(source)
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        let run: RunId = sqlx::query_scalar(
            "INSERT INTO runs (source, mode, status, phase, started_at, pid)
             VALUES ($1, $2, 'running', 'reading', $3, $4) RETURNING id",
        )
        .bind(source)
        .bind(mode.as_str())
        .bind(now)
        .bind(i64::from(std::process::id()))
        .fetch_one(&mut *tx)
        .await
        .map_err(e(op))?;
        sqlx::raw_sql(sql(format!(
            "CREATE UNLOGGED TABLE {s} (
                source_record_id text COLLATE \"C\" PRIMARY KEY,
                person bytea NOT NULL, key_id text NOT NULL,
                organisation_code text COLLATE \"C\" NOT NULL, organisation_name text NOT NULL,
                team text, life_domain text COLLATE \"C\" NOT NULL, goal text,
                contact_name text NOT NULL, contact_role text, contact_phone text,
                contact_email text, start_date date NOT NULL, end_date date, status text NOT NULL,
                coordinator boolean NOT NULL, sensitive boolean NOT NULL, purge_after date,
                rels bytea NOT NULL, content_hash bytea NOT NULL,
                shielded boolean NOT NULL DEFAULT false,
                end_reason_code text, end_reason text
             );
             CREATE UNLOGGED TABLE {s}_ids (source_record_id text COLLATE \"C\" PRIMARY KEY)",
            s = stg(run)
        )))
        .execute(&mut *tx)
        .await
        .map_err(e("staging"))?;
        tx.commit().await.map_err(e(op))?;
        Ok(run)
    }

    pub(super) async fn set_phase(&self, run: RunId, phase: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET phase = $2 WHERE id = $1")
            .bind(run)
            .bind(phase)
            .execute(&self.pool)
            .await
            .map_err(e("set phase"))?;
        Ok(())
    }

    pub(super) async fn stage(
        &self,
        run: RunId,
        records: Vec<Involvement>,
        rejects: Vec<QuarantineEntry>,
    ) -> Result<StageOutcome, StoreError> {
        let op = "stage";
        let mut out = StageOutcome::default();
        // Duplicates inside the batch: the first occurrence is staged, later ones reported.
        let mut seen = HashSet::with_capacity(records.len());
        let mut keep: Vec<usize> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if seen.insert(r.source_record_id.as_str()) {
                keep.push(i);
            } else {
                out.duplicates.push((i, r.source_record_id.clone()));
            }
        }
        let mut tx = self.pool.begin().await.map_err(e(op))?;
        if !keep.is_empty() {
            let rs: Vec<&Involvement> = keep.iter().map(|&i| &records[i]).collect();
            // Cross-batch duplicates conflict with an id staged earlier: not returned.
            let ids: Vec<String> = sqlx::query_scalar(sql(format!(
                "INSERT INTO {s}_ids (source_record_id) SELECT * FROM UNNEST($1::text[])
                 ON CONFLICT (source_record_id) DO NOTHING RETURNING source_record_id",
                s = stg(run)
            )))
            .bind(
                rs.iter()
                    .map(|r| r.source_record_id.as_str())
                    .collect::<Vec<&str>>(),
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(|err| staging_error(op, run, err))?;
            let fresh: HashSet<&str> = ids.iter().map(String::as_str).collect();
            if fresh.len() < keep.len() {
                for &i in &keep {
                    let id = &records[i].source_record_id;
                    if !fresh.contains(id.as_str()) {
                        out.duplicates.push((i, id.clone()));
                    }
                }
                out.duplicates.sort_by_key(|(i, _)| *i);
            }
            // Compare while staging: unchanged records are only noted as delivered (the ids
            // table); new and changed ones are staged in full.
            let stored: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT source_record_id, content_hash FROM involvements
                 WHERE source = (SELECT source FROM runs WHERE id = $1)
                   AND source_record_id = ANY($2::text[])",
            )
            .bind(run)
            .bind(ids.iter().map(String::as_str).collect::<Vec<&str>>())
            .fetch_all(&mut *tx)
            .await
            .map_err(e(op))?;
            let stored: std::collections::HashMap<&str, &[u8]> = stored
                .iter()
                .map(|(id, h)| (id.as_str(), h.as_slice()))
                .collect();
            let hashes: Vec<[u8; 32]> = rs.iter().map(|r| r.content_hash()).collect();
            let (rs, hashes): (Vec<&Involvement>, Vec<[u8; 32]>) = rs
                .into_iter()
                .zip(hashes)
                .filter(|(r, h)| {
                    fresh.contains(r.source_record_id.as_str())
                        && stored.get(r.source_record_id.as_str()) != Some(&&h[..])
                })
                .unzip();
            let rels: Vec<Vec<u8>> = rs.iter().map(|r| encode_relations(&r.relations)).collect();
            let strs = |f: fn(&Involvement) -> &str| rs.iter().map(|r| f(r)).collect::<Vec<&str>>();
            let opts = |f: fn(&Involvement) -> Option<&str>| {
                rs.iter().map(|r| f(r)).collect::<Vec<Option<&str>>>()
            };
            let dates = |f: fn(&Involvement) -> Option<NaiveDate>| {
                rs.iter().map(|r| f(r)).collect::<Vec<_>>()
            };
            if !rs.is_empty() {
                sqlx::query(sql(format!(
                    "INSERT INTO {s} (source_record_id, person, key_id, organisation_code,
                       organisation_name, team, life_domain, goal, contact_name, contact_role,
                       contact_phone, contact_email, start_date, end_date, status, coordinator,
                       sensitive, purge_after, rels, content_hash, shielded, end_reason_code,
                       end_reason)
                     SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::text[],
                       $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                       $11::text[], $12::text[], $13::date[], $14::date[], $15::text[],
                       $16::boolean[], $17::boolean[], $18::date[], $19::bytea[], $20::bytea[],
                       $21::boolean[], $22::text[], $23::text[])",
                    s = stg(run)
                )))
                .bind(strs(|r| &r.source_record_id))
                .bind(
                    rs.iter()
                        .map(|r| &r.person.as_bytes()[..])
                        .collect::<Vec<&[u8]>>(),
                )
                .bind(strs(|r| &r.key_id))
                .bind(strs(|r| &r.organisation_code))
                .bind(strs(|r| &r.organisation_name))
                .bind(opts(|r| r.team.as_deref()))
                .bind(strs(|r| r.life_domain.as_str()))
                .bind(opts(|r| r.goal.as_deref()))
                .bind(strs(|r| &r.contact.name))
                .bind(opts(|r| r.contact.role.as_deref()))
                .bind(opts(|r| r.contact.phone.as_deref()))
                .bind(opts(|r| r.contact.email.as_deref()))
                .bind(rs.iter().map(|r| r.start_date).collect::<Vec<NaiveDate>>())
                .bind(dates(|r| r.end_date))
                .bind(strs(|r| r.status.as_str()))
                .bind(rs.iter().map(|r| r.coordinator).collect::<Vec<bool>>())
                .bind(rs.iter().map(|r| r.sensitive).collect::<Vec<bool>>())
                .bind(dates(|r| r.purge_after))
                .bind(rels.iter().map(Vec::as_slice).collect::<Vec<&[u8]>>())
                .bind(hashes.iter().map(|h| &h[..]).collect::<Vec<&[u8]>>())
                .bind(rs.iter().map(|r| r.shielded).collect::<Vec<bool>>())
                .bind(opts(|r| r.end_reason.as_ref().map(|x| x.code.as_str())))
                .bind(opts(|r| {
                    r.end_reason.as_ref().map(|x| x.description.as_str())
                }))
                .execute(&mut *tx)
                .await
                .map_err(|err| staging_error(op, run, err))?;
            }
            // Counted durably beside the run: an UNLOGGED table is emptied when PostgreSQL
            // restarts after a crash, and publication must notice rather than end everything.
            sqlx::query(
                "UPDATE runs SET staged = staged + $2, staged_full = staged_full + $3
                 WHERE id = $1",
            )
            .bind(run)
            .bind(i64::try_from(ids.len()).unwrap_or(i64::MAX))
            .bind(i64::try_from(rs.len()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        }
        insert_quarantine(&mut tx, run, &rejects).await?;
        tx.commit().await.map_err(e(op))?;
        Ok(out)
    }

    pub(super) async fn complete_run(
        &self,
        run: RunId,
        completion: Completion,
    ) -> Result<RunRecord, StoreError> {
        self.publish(run, &completion, false).await
    }

    pub(super) async fn fail_run(
        &self,
        run: RunId,
        read: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let op = "fail run";
        let mut tx = self.pool.begin().await.map_err(e(op))?;
        // Serialised with a publication or `begin_run` of the same source.
        let source: Option<String> = sqlx::query_scalar("SELECT source FROM runs WHERE id = $1")
            .bind(run)
            .fetch_optional(&mut *tx)
            .await
            .map_err(e(op))?;
        if let Some(source) = source {
            lock_source(&mut tx, &source).await?;
        }
        sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = $2, error = $3, read = $4,
             rejected = (SELECT count(*) FROM quarantine WHERE run_id = $1)
             WHERE id = $1 AND status = 'running'",
        )
        .bind(run)
        .bind(now())
        .bind(error)
        .bind(int(read))
        .execute(&mut *tx)
        .await
        .map_err(e(op))?;
        drop_staging(&mut tx, run).await?;
        tx.commit().await.map_err(e(op))
    }

    pub(super) async fn accept_run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        let rec = self.run(run).await?;
        if rec.status != RunStatus::Held {
            return Err(StoreError::RunState {
                run,
                status: rec.status.as_str().into(),
                what: "only a held run can be accepted".into(),
            });
        }
        let mode = if rec.mode == "incremental" {
            RunMode::Incremental
        } else {
            RunMode::Full
        };
        let completion = Completion {
            read: rec.counts.read,
            mode,
            cursor: None,
            guard: None,
            accept: true,
        };
        self.publish(run, &completion, true).await
    }

    pub(super) async fn runs(
        &self,
        source: Option<&str>,
        limit_: u64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(sql(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR source = $1)
             ORDER BY id DESC LIMIT $2"
        )))
        .bind(source)
        .bind(limit(limit_))
        .fetch_all(&self.pool)
        .await
        .map_err(e("list runs"))?;
        rows.iter()
            .map(run_from_row)
            .collect::<Result<_, _>>()
            .map_err(e("list runs"))
    }

    pub(super) async fn run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        read_run(&self.pool, run).await
    }

    pub(super) async fn would_end(&self, run: RunId) -> Result<Vec<WouldEnd>, StoreError> {
        let op = "would end";
        let rec = self.run(run).await?;
        if rec.status != RunStatus::Held {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sql(format!(
            "SELECT i.organisation_code, i.life_domain, count(*) FROM involvements i
             WHERE {ENDING} GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            ENDING = ending_clause(run)
        )))
        .bind(&rec.source)
        .bind(run)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            // The staging is gone (superseded or accepted meanwhile): nothing to end.
            Err(err) if is_undefined_table(&err) => return Ok(Vec::new()),
            Err(err) => return Err(StoreError::db(op, err)),
        };
        rows.iter()
            .map(|r| {
                Ok(WouldEnd {
                    organisation_code: r.try_get(0)?,
                    life_domain: r.try_get(1)?,
                    count: count(r.try_get(2)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(e(op))
    }

    pub(super) async fn quarantine(
        &self,
        f: &QuarantineFilter,
    ) -> Result<Vec<QuarantineRecord>, StoreError> {
        let op = "list quarantine";
        let rows = sqlx::query(
            "SELECT id, source, run_id, source_record_id, record_index, field, reason_code,
                    reason, created_at, sealed_raw IS NOT NULL, resolved_by_run
             FROM quarantine
             WHERE ($1::text IS NULL OR source = $1) AND ($2::bigint IS NULL OR run_id = $2)
               AND ($3 OR resolved_by_run IS NULL)
             ORDER BY id LIMIT $4",
        )
        .bind(f.source.as_deref())
        .bind(f.run)
        .bind(f.include_resolved)
        .bind(limit(f.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        rows.iter()
            .map(|r| {
                Ok(QuarantineRecord {
                    id: r.try_get(0)?,
                    source: r.try_get(1)?,
                    run_id: r.try_get(2)?,
                    source_record_id: r.try_get(3)?,
                    record_index: count(r.try_get(4)?),
                    field: r.try_get(5)?,
                    reason_code: r.try_get(6)?,
                    reason: r.try_get(7)?,
                    created_at: r.try_get(8)?,
                    replayable: r.try_get(9)?,
                    resolved_by_run: r.try_get(10)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(e(op))
    }

    pub(super) async fn replayable(
        &self,
        source: Option<&str>,
    ) -> Result<Vec<SealedRecord>, StoreError> {
        let op = "replayable";
        // Only the newest entry per (source, record id) is replayed.
        let rows = sqlx::query(
            "SELECT q.id, q.source, q.source_record_id, q.sealed_raw, q.sealed_key_id
             FROM quarantine q
             WHERE q.sealed_raw IS NOT NULL AND q.resolved_by_run IS NULL
               AND ($1::text IS NULL OR q.source = $1)
               AND NOT EXISTS (SELECT 1 FROM quarantine n
                               WHERE n.source = q.source
                                 AND n.source_record_id = q.source_record_id
                                 AND n.id > q.id)
               AND NOT EXISTS (SELECT 1 FROM involvements i
                               WHERE i.source = q.source
                                 AND i.source_record_id = q.source_record_id
                                 AND i.changed_run > q.run_id)
             ORDER BY q.id",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        rows.iter()
            .map(|r| {
                Ok(SealedRecord {
                    id: r.try_get(0)?,
                    source: r.try_get(1)?,
                    source_record_id: r.try_get(2)?,
                    sealed: r.try_get(3)?,
                    key_id: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(e(op))
    }

    pub(super) async fn mark_resolved(&self, ids: Vec<i64>, run: RunId) -> Result<(), StoreError> {
        sqlx::query("UPDATE quarantine SET resolved_by_run = $2 WHERE id = ANY($1)")
            .bind(ids)
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(e("resolve quarantine"))?;
        Ok(())
    }

    pub(super) async fn expire_sealed(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE quarantine SET sealed_raw = NULL, sealed_key_id = NULL
             WHERE sealed_raw IS NOT NULL AND sealed_expires_at < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(e("expire quarantine"))?;
        Ok(done.rows_affected())
    }

    pub(super) async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar::<_, Option<String>>("SELECT cursor FROM sources WHERE name = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
            .map_err(e("cursor"))
    }

    pub(super) async fn stats(&self) -> Result<Vec<SourceStats>, StoreError> {
        let op = "stats";
        let rows = sqlx::query(
            "WITH inv AS (
               SELECT source,
                      count(*) FILTER (WHERE status = 'planned') AS planned,
                      count(*) FILTER (WHERE status = 'active') AS active,
                      count(*) FILTER (WHERE status = 'ended') AS ended,
                      count(DISTINCT person) AS persons
               FROM involvements GROUP BY source),
             rel AS (SELECT source, count(*) AS n FROM relations GROUP BY source),
             -- Records in quarantine: distinct record ids, neither resolved by a replay nor
             -- published by a later run.
             q AS (SELECT q.source,
                          count(DISTINCT COALESCE(q.source_record_id, '#' || q.id) COLLATE \"C\") AS n
                   FROM quarantine q
                   WHERE q.resolved_by_run IS NULL
                     AND NOT EXISTS (SELECT 1 FROM involvements i
                                     WHERE i.source = q.source
                                       AND i.source_record_id = q.source_record_id
                                       AND i.changed_run > q.run_id)
                   GROUP BY q.source)
             SELECT s.name, COALESCE(inv.planned, 0), COALESCE(inv.active, 0),
                    COALESCE(inv.ended, 0), COALESCE(inv.persons, 0), COALESCE(rel.n, 0),
                    COALESCE(q.n, 0), s.last_success_run, s.last_success_at
             FROM sources s
             LEFT JOIN inv ON inv.source = s.name
             LEFT JOIN rel ON rel.source = s.name
             LEFT JOIN q ON q.source = s.name
             ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        rows.iter()
            .map(|r| {
                Ok(SourceStats {
                    source: r.try_get(0)?,
                    planned: count(r.try_get(1)?),
                    active: count(r.try_get(2)?),
                    ended: count(r.try_get(3)?),
                    persons: count(r.try_get(4)?),
                    relations: count(r.try_get(5)?),
                    quarantined: count(r.try_get(6)?),
                    last_success_run: r.try_get(7)?,
                    last_success_at: r.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(e(op))
    }

    pub(super) async fn involvements(
        &self,
        source: &str,
    ) -> Result<Vec<StoredInvolvement>, StoreError> {
        let op = "read involvements";
        let rows = sqlx::query(
            "SELECT source, source_record_id, person, key_id, organisation_code,
                    life_domain, status, end_date, content_hash, end_reason_code
             FROM involvements WHERE source = $1 ORDER BY source_record_id",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        rows.iter()
            .map(|r| {
                Ok(StoredInvolvement {
                    source: r.try_get(0)?,
                    source_record_id: r.try_get(1)?,
                    person: hex::encode(r.try_get::<Vec<u8>, _>(2)?),
                    key_id: r.try_get(3)?,
                    organisation_code: r.try_get(4)?,
                    life_domain: r.try_get(5)?,
                    status: r.try_get(6)?,
                    end_date: r.try_get::<Option<NaiveDate>, _>(7)?.map(|d| d.to_string()),
                    content_hash: hex::encode(r.try_get::<Vec<u8>, _>(8)?),
                    end_reason: r.try_get(9)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(e(op))
    }

    pub(super) async fn relations(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let op = "read relations";
        let rows = sqlx::query(
            "SELECT source_record_id, kind, other FROM relations WHERE source = $1
             ORDER BY source_record_id, kind, other",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    hex::encode(r.try_get::<Vec<u8>, _>(2)?),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(e(op))
    }

    /// Shrink guard, then compare and apply, in one transaction holding the source's lock.
    /// `accepting`: the run must be held (accept); otherwise it must be running.
    async fn publish(
        &self,
        run: RunId,
        c: &Completion,
        accepting: bool,
    ) -> Result<RunRecord, StoreError> {
        let s = stg(run);
        let op = "publish";
        let mut tx = self.pool.begin().await.map_err(e(op))?;
        failpoint::hit("publish:begin");
        let mut timer = super::StepTimer::start();
        let source: String = sqlx::query_scalar("SELECT source FROM runs WHERE id = $1")
            .bind(run)
            .fetch_optional(&mut *tx)
            .await
            .map_err(e(op))?
            .ok_or(StoreError::NoSuchRun(run))?;
        lock_source(&mut tx, &source).await?;
        // Re-read under the lock: another process may have published, failed or superseded it.
        let (status, recorded, recorded_full): (String, i64, i64) =
            sqlx::query_as("SELECT status, staged, staged_full FROM runs WHERE id = $1 FOR UPDATE")
                .bind(run)
                .fetch_one(&mut *tx)
                .await
                .map_err(e(op))?;
        let expected = if accepting {
            RunStatus::Held
        } else {
            RunStatus::Running
        };
        if status != expected.as_str() {
            return Err(StoreError::RunState {
                run,
                status,
                what: if accepting {
                    "only a held run can be accepted".into()
                } else {
                    "only a running run can be completed".into()
                },
            });
        }
        if !staging_exists(&mut tx, run).await? {
            return Err(StoreError::RunState {
                run,
                status,
                what: if accepting {
                    "its staged records are gone; run the sync again".into()
                } else {
                    "its staging table is missing".into()
                },
            });
        }
        if accepting {
            // A run held by a build before schema v5 staged no end reasons.
            sqlx::raw_sql(sql(format!(
                "ALTER TABLE {s} ADD COLUMN IF NOT EXISTS end_reason_code text,
                   ADD COLUMN IF NOT EXISTS end_reason text"
            )))
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        }
        // The planner needs the staged row count and key statistics for the set-based
        // statements below (the join key only: analysing every column costs ~10x more). JIT
        // compilation, triggered by the relation decoding's inflated estimate, costs more
        // than it saves here.
        sqlx::raw_sql(sql(format!(
            "ANALYZE {s} (source_record_id); ANALYZE {s}_ids (source_record_id)"
        )))
        .execute(&mut *tx)
        .await
        .map_err(e(op))?;
        sqlx::query("SET LOCAL jit = off")
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        let (staged, full_rows, rejected, total, active): (i64, i64, i64, i64, i64) =
            sqlx::query_as(sql(format!(
                "SELECT (SELECT count(*) FROM {s}_ids), (SELECT count(*) FROM {s}),
                    (SELECT count(*) FROM quarantine WHERE run_id = $2),
                    count(*), count(*) FILTER (WHERE status <> 'ended')
             FROM involvements WHERE source = $1"
            )))
            .bind(&source)
            .bind(run)
            .fetch_one(&mut *tx)
            .await
            .map_err(e(op))?;
        let (staged, rejected, total, active) =
            (count(staged), count(rejected), count(total), count(active));
        if staged != count(recorded) || full_rows != recorded_full {
            return Err(StoreError::RunState {
                run,
                status,
                what: format!(
                    "its staging table holds {staged} of the {recorded} records staged \
                     (PostgreSQL restarted?); nothing was published, run the sync again"
                ),
            });
        }
        let would_end = if c.mode == RunMode::Full {
            let n: i64 = sqlx::query_scalar(sql(format!(
                "SELECT count(*) FROM involvements i WHERE {}",
                ending_clause(run)
            )))
            .bind(&source)
            .bind(run)
            .fetch_one(&mut *tx)
            .await
            .map_err(e(op))?;
            count(n)
        } else {
            0
        };
        let now = now();
        timer.lap("guard counts");
        if let Some(why) = c
            .guard
            .filter(|_| c.mode == RunMode::Full)
            .and_then(|g| g.hold_reason(staged, total, active, would_end))
        {
            sqlx::query(
                "UPDATE runs SET status = 'held', phase = 'held', finished_at = $2, error = $3,
                     read = $4, accepted = $5, rejected = $6, ended = $7 WHERE id = $1",
            )
            .bind(run)
            .bind(now)
            .bind(why)
            .bind(int(c.read))
            .bind(int(staged))
            .bind(int(rejected))
            .bind(int(would_end))
            .execute(&mut *tx)
            .await
            .map_err(e("hold run"))?;
            supersede_older_held(&mut tx, &source, run).await?;
            tx.commit().await.map_err(e("hold run"))?;
            return read_run(&self.pool, run).await;
        }

        // A publication that more than doubles the index (a first import) builds the person
        // indexes afterwards, by one sort each, instead of inserting millions of random keys
        // into them (measured at 1M records: the inserts took 35 s of a 40 s publication).
        // Dropping an index locks its table until commit: lookups wait for this publication
        // (docs/operations.md, "First import"). The row estimate suffices for the decision.
        let rebuild_indexes = full_rows >= REBUILD_MIN_ROWS && {
            let present: f32 = sqlx::query_scalar(
                "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'involvements'::regclass",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(e(op))?;
            full_rows as f32 > present
        };
        // The relations' primary key too, unless accepting a run held by an older build:
        // staged relations are unique per record (`encode_relations`), and the insert below
        // never meets rows of the same records, so it needs no conflict check; adding the key
        // back proves it. (Measured with 2M relation rows: 16.7 s with the key and `ON
        // CONFLICT`, 8.1 s inserting without it and adding it after.)
        let rebuild_relations_key = rebuild_indexes && !accepting;
        if rebuild_indexes {
            sqlx::raw_sql(
                "SET LOCAL maintenance_work_mem = '256MB';
                 DROP INDEX involvements_person; DROP INDEX relations_other;",
            )
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        }
        if rebuild_relations_key {
            sqlx::raw_sql("ALTER TABLE relations DROP CONSTRAINT relations_pkey")
                .execute(&mut *tx)
                .await
                .map_err(e(op))?;
        }

        // Relations of new and changed records: replace them.
        let changed_or_new = format!(
            "FROM {s} s LEFT JOIN involvements i
               ON i.source = $1 AND i.source_record_id = s.source_record_id
             WHERE (i.content_hash IS NULL OR i.content_hash <> s.content_hash)"
        );
        // A source's first publication has no relations to replace (skips a join of staging).
        let has_relations: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM relations WHERE source = $1)")
                .bind(&source)
                .fetch_one(&mut *tx)
                .await
                .map_err(e("publish relations"))?;
        if has_relations {
            sqlx::query(sql(format!(
                "DELETE FROM relations WHERE source = $1 AND source_record_id IN
                 (SELECT s.source_record_id {changed_or_new})"
            )))
            .bind(&source)
            .execute(&mut *tx)
            .await
            .map_err(e("publish relations"))?;
        }
        timer.lap("relations deleted");
        failpoint::hit("publish:relations");
        // The staged `rels` blob is decoded in SQL, exactly as `codec::decode_relations`
        // does: 33-byte entries of kind byte (1 parent, 2 child, 3 household member) and
        // pseudonym; entries of an unknown kind are skipped.
        sqlx::query(sql(format!(
            "INSERT INTO relations (source, source_record_id, person, kind, other, key_id)
             SELECT $1, s.source_record_id, s.person,
                    CASE get_byte(s.rels, g.n * 33)
                      WHEN 1 THEN 'parent' WHEN 2 THEN 'child' ELSE 'household_member' END,
                    substring(s.rels FROM g.n * 33 + 2 FOR 32), s.key_id
             FROM {s} s
             LEFT JOIN involvements i
               ON i.source = $1 AND i.source_record_id = s.source_record_id
             CROSS JOIN LATERAL generate_series(0, length(s.rels) / 33 - 1) AS g(n)
             WHERE (i.content_hash IS NULL OR i.content_hash <> s.content_hash)
               AND get_byte(s.rels, g.n * 33) BETWEEN 1 AND 3
             {on_conflict}",
            on_conflict = if rebuild_relations_key {
                ""
            } else {
                "ON CONFLICT DO NOTHING"
            }
        )))
        .bind(&source)
        .execute(&mut *tx)
        .await
        .map_err(e("publish relations"))?;
        timer.lap("relations inserted");
        failpoint::hit("publish:relations-inserted");

        let updated = sqlx::query(sql(format!(
            "UPDATE involvements AS i SET
               person = s.person, key_id = s.key_id,
               organisation_code = s.organisation_code, organisation_name = s.organisation_name,
               team = s.team, life_domain = s.life_domain, goal = s.goal,
               contact_name = s.contact_name, contact_role = s.contact_role,
               contact_phone = s.contact_phone, contact_email = s.contact_email,
               start_date = s.start_date, end_date = s.end_date, status = s.status,
               coordinator = s.coordinator, sensitive = s.sensitive, purge_after = s.purge_after,
               shielded = s.shielded,
               end_reason_code = s.end_reason_code, end_reason = s.end_reason,
               content_hash = s.content_hash, changed_run = $2, ended_by_run = NULL
             FROM {s} s
             WHERE i.source = $1
               AND i.source_record_id = s.source_record_id
               AND i.content_hash <> s.content_hash"
        )))
        .bind(&source)
        .bind(run)
        .execute(&mut *tx)
        .await
        .map_err(e("publish updates"))?
        .rows_affected();
        timer.lap("updated");
        failpoint::hit("publish:updated");

        let inserted = sqlx::query(sql(format!(
            "INSERT INTO involvements (source, source_record_id, person, key_id,
               organisation_code, organisation_name, team, life_domain, goal,
               contact_name, contact_role, contact_phone, contact_email,
               start_date, end_date, status, coordinator, sensitive, purge_after,
               shielded, end_reason_code, end_reason, content_hash, first_seen, changed_run)
             SELECT $1, s.source_record_id, s.person, s.key_id,
               s.organisation_code, s.organisation_name, s.team, s.life_domain, s.goal,
               s.contact_name, s.contact_role, s.contact_phone, s.contact_email,
               s.start_date, s.end_date, s.status, s.coordinator, s.sensitive, s.purge_after,
               s.shielded, s.end_reason_code, s.end_reason, s.content_hash, $3, $2
             FROM {s} s
             WHERE NOT EXISTS (SELECT 1 FROM involvements i
                               WHERE i.source = $1 AND i.source_record_id = s.source_record_id)"
        )))
        .bind(&source)
        .bind(run)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(e("publish inserts"))?
        .rows_affected();
        timer.lap("inserted");
        failpoint::hit("publish:inserted");

        let ended = if c.mode == RunMode::Full && would_end > 0 {
            sqlx::query(sql(format!(
                "UPDATE involvements AS i SET status = 'ended',
                   end_date = COALESCE(i.end_date, ($3::timestamptz AT TIME ZONE 'UTC')::date),
                   content_hash = ''::bytea, changed_run = $2, ended_by_run = $2
                 WHERE {}",
                ending_clause(run)
            )))
            .bind(&source)
            .bind(run)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(e("publish ends"))?
            .rows_affected()
        } else {
            0
        };
        timer.lap("ended");
        if rebuild_relations_key {
            sqlx::raw_sql(RELATIONS_KEY)
                .execute(&mut *tx)
                .await
                .map_err(e("publish indexes"))?;
        }
        if rebuild_indexes {
            sqlx::raw_sql(PERSON_INDEXES)
                .execute(&mut *tx)
                .await
                .map_err(e("publish indexes"))?;
            timer.lap("indexes rebuilt");
        }
        failpoint::hit("publish:ended");

        let status = if c.accept {
            RunStatus::Accepted
        } else {
            RunStatus::Succeeded
        };
        let unchanged = staged.saturating_sub(inserted + updated);
        sqlx::query(
            "UPDATE runs SET status = $2, phase = 'published', finished_at = $3, error = NULL,
               read = $4, accepted = $5, rejected = $6, inserted = $7, updated = $8,
               unchanged = $9, ended = $10
             WHERE id = $1",
        )
        .bind(run)
        .bind(status.as_str())
        .bind(now)
        .bind(int(c.read))
        .bind(int(staged))
        .bind(int(rejected))
        .bind(int(inserted))
        .bind(int(updated))
        .bind(int(unchanged))
        .bind(int(ended))
        .execute(&mut *tx)
        .await
        .map_err(e("publish run"))?;
        sqlx::query(
            "UPDATE sources SET last_success_run = $2, last_success_at = $3,
               cursor = COALESCE($4::text, cursor)
             WHERE name = $1",
        )
        .bind(&source)
        .bind(run)
        .bind(now)
        .bind(c.cursor.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(e("publish run"))?;
        super::state_postgres::apply(&mut tx, &source, run).await?;
        supersede_older_held(&mut tx, &source, run).await?;
        drop_staging(&mut tx, run).await?;
        failpoint::hit("publish:commit");
        tx.commit().await.map_err(e("publish commit"))?;
        timer.lap("committed");
        failpoint::hit("publish:committed");
        // A publication that changed a large share of the index leaves the planner's
        // statistics behind until autovacuum catches up, and lookups meanwhile get plans made
        // for the wrong table size (measured after a 1M-row first sync: 180 ms parallel scans
        // of `relations` instead of 0.3 ms index scans). Refresh them now; ~0.6 s at 1M rows.
        let changed = inserted + updated + ended;
        if changed >= 1000
            && changed.saturating_mul(10) >= total
            && let Err(err) = sqlx::query("ANALYZE involvements, relations")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(%err, "ANALYZE after a large publication failed; autovacuum will catch up.");
        }
        timer.lap("analyzed");
        read_run(&self.pool, run).await
    }
}

/// Applies the migrations not yet applied, in one transaction under an advisory lock.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let op = "migrate";
    let mut tx = pool.begin().await.map_err(e(op))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(e(op))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS matchpoint_schema_version (
           version integer PRIMARY KEY,
           applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(e(op))?;
    let current: i32 =
        sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM matchpoint_schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(e(op))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::db(
            op,
            format!(
                "the database schema is version {current}, newer than this build knows ({})",
                MIGRATIONS.len()
            ),
        ));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(*migration)
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        sqlx::query("INSERT INTO matchpoint_schema_version (version) VALUES ($1)")
            .bind(i32::try_from(i + 1).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
    }
    tx.commit().await.map_err(e(op))
}

/// Waits for, then holds until the transaction ends, the source's advisory lock.
async fn lock_source(conn: &mut PgConnection, source: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(SOURCE_LOCK_SPACE)
        .bind(source)
        .execute(conn)
        .await
        .map_err(e("lock source"))?;
    Ok(())
}

async fn staging_exists(conn: &mut PgConnection, run: RunId) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(stg(run))
        .fetch_one(conn)
        .await
        .map_err(e("staging"))
}

async fn drop_staging(conn: &mut PgConnection, run: RunId) -> Result<(), StoreError> {
    sqlx::raw_sql(sql(format!(
        "DROP TABLE IF EXISTS {s}, {s}_ids",
        s = stg(run)
    )))
    .execute(conn)
    .await
    .map_err(e("drop staging"))?;
    Ok(())
}

fn staging_error(op: &'static str, run: RunId, err: sqlx::Error) -> StoreError {
    if is_undefined_table(&err) {
        StoreError::RunState {
            run,
            status: "unknown".into(),
            what: "its staging table is missing".into(),
        }
    } else {
        StoreError::db(op, err)
    }
}

/// Rows of the source that a full run would end: active, not delivered, not quarantined in
/// this run (a rejected record stays as it was rather than being ended). Params: $1 source,
/// $2 run.
fn ending_clause(run: RunId) -> String {
    format!(
        "i.source = $1 AND i.status <> 'ended'
         AND NOT EXISTS (SELECT 1 FROM {s}_ids s WHERE s.source_record_id = i.source_record_id)
         AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.run_id = $2
                         AND q.source_record_id = i.source_record_id)",
        s = stg(run)
    )
}

/// Marks held runs of the source older than `run` superseded and drops their staging.
async fn supersede_older_held(
    conn: &mut PgConnection,
    source: &str,
    run: RunId,
) -> Result<(), StoreError> {
    let ids: Vec<RunId> = sqlx::query_scalar(
        "UPDATE runs SET status = 'superseded', phase = 'superseded',
           error = 'superseded by run ' || $2::text || '; can no longer be accepted'
         WHERE source = $1 AND status = 'held' AND id < $2
         RETURNING id",
    )
    .bind(source)
    .bind(run)
    .fetch_all(&mut *conn)
    .await
    .map_err(e("supersede"))?;
    for id in ids {
        drop_staging(conn, id).await?;
    }
    Ok(())
}

async fn insert_quarantine(
    conn: &mut PgConnection,
    run: RunId,
    rejects: &[QuarantineEntry],
) -> Result<(), StoreError> {
    if rejects.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&QuarantineEntry) -> Option<&str>| rejects.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO quarantine (source, run_id, source_record_id, record_index, byte_offset,
           field, reason_code, reason, sealed_raw, sealed_key_id, sealed_expires_at, created_at,
           replay_of)
         SELECT (SELECT source FROM runs WHERE id = $1), $1, u.source_record_id, u.record_index,
           u.byte_offset, u.field, u.reason_code, u.reason, u.sealed_raw, u.sealed_key_id,
           u.sealed_expires_at, $12, u.replay_of
         FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                     $8::bytea[], $9::text[], $10::timestamptz[], $11::bigint[])
              WITH ORDINALITY AS u(source_record_id, record_index, byte_offset, field,
                                   reason_code, reason, sealed_raw, sealed_key_id,
                                   sealed_expires_at, replay_of, ord)
         ORDER BY u.ord",
    )
    .bind(run)
    .bind(col(|q| q.source_record_id.as_deref()))
    .bind(
        rejects
            .iter()
            .map(|q| int(q.record_index))
            .collect::<Vec<i64>>(),
    )
    .bind(
        rejects
            .iter()
            .map(|q| int(q.byte_offset))
            .collect::<Vec<i64>>(),
    )
    .bind(col(|q| q.field.as_deref()))
    .bind(col(|q| Some(q.reason_code.as_str())))
    .bind(col(|q| Some(q.reason.as_str())))
    .bind(
        rejects
            .iter()
            .map(|q| q.sealed_raw.as_deref())
            .collect::<Vec<Option<&[u8]>>>(),
    )
    .bind(col(|q| q.sealed_key_id.as_deref()))
    .bind(
        rejects
            .iter()
            .map(|q| q.sealed_expires_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rejects
            .iter()
            .map(|q| q.replay_of)
            .collect::<Vec<Option<i64>>>(),
    )
    .bind(now())
    .execute(conn)
    .await
    .map_err(e("quarantine"))?;
    Ok(())
}

const RUN_COLUMNS: &str = "id, source, mode, status, started_at, finished_at, read, accepted, \
     rejected, inserted, updated, unchanged, ended, error";

fn run_from_row(r: &PgRow) -> Result<RunRecord, sqlx::Error> {
    let status: String = r.try_get(3)?;
    let n = |i: usize| -> Result<u64, sqlx::Error> { Ok(count(r.try_get(i)?)) };
    Ok(RunRecord {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        mode: r.try_get(2)?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        started_at: r.try_get(4)?,
        finished_at: r.try_get(5)?,
        counts: RunCounts {
            read: n(6)?,
            accepted: n(7)?,
            rejected: n(8)?,
            inserted: n(9)?,
            updated: n(10)?,
            unchanged: n(11)?,
            ended: n(12)?,
        },
        error: r.try_get(13)?,
    })
}

async fn read_run(pool: &PgPool, run: RunId) -> Result<RunRecord, StoreError> {
    let row = sqlx::query(sql(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
        .bind(run)
        .fetch_optional(pool)
        .await
        .map_err(e("read run"))?
        .ok_or(StoreError::NoSuchRun(run))?;
    run_from_row(&row).map_err(e("read run"))
}
