//! SQLite backend: one rusqlite connection on blocking threads, WAL, staging in a per-run
//! side file (journal off) that is attached for the run and deleted after it.
//!
//! sqlx's SQLite driver pays a cross-thread hop per statement (PERF-NOTES), so bulk staging
//! and set-based publication run on rusqlite directly.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use matchpoint_schemas::Involvement;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    Completion, QuarantineEntry, QuarantineFilter, QuarantineRecord, RunCounts, RunId, RunMode,
    RunRecord, RunStatus, SealedRecord, SourceStats, StageOutcome, StoreError, StoredInvolvement,
    WouldEnd, encode_relations,
};
use crate::failpoint;

pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("sqlite_schema.sql"),
    // Audit trail (issue 4): self-contained, may be reordered with other new migrations.
    include_str!("../audit/sqlite_migration.sql"),
    // API users and the shielded flag (issue 4, lookup API).
    include_str!("sqlite_users.sql"),
    // Source leases (issue 5, scheduler).
    super::lease_sqlite::MIGRATION,
    // v5: the end reason of an involvement (issue 3, iWmo WMO588).
    include_str!("sqlite_v5.sql"),
    // v6: connector state (issue 3, iWmo).
    super::state_sqlite::MIGRATION,
];

#[path = "lookup_sqlite.rs"]
mod lookup;

/// Indexes on pseudonyms. (Relations *from* a person need no index of their own: they are
/// found through the person's involvements and the relations' primary key.) Inserting many rows in random pseudonym order into them costs far
/// more than building them anew by sorting, so a publication that adds more rows than the
/// tables hold drops and rebuilds them inside its transaction.
const PERSON_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS involvements_person ON involvements (person);
    CREATE INDEX IF NOT EXISTS relations_other ON relations (other);";

/// Page size of new index and staging files (an existing file keeps its own). Larger pages
/// than SQLite's default 4 KiB: a first sync of 1M records took 11% less time
/// (docs/operations.md, "SQLite page size"). Only a file's first table fixes it, so it is set
/// before anything else.
pub(super) const PAGE_SIZE: u32 = 16_384;

/// Page cache of the store's connection (negative: KiB).
const PAGE_CACHE: i64 = -65_536;

/// Page cache, and so sort buffer per sorter thread, while the person indexes are rebuilt
/// (measured on 2M random 32-byte keys: 16 MB buffers sorted faster than 64 MB ones).
const SORT_CACHE: i64 = -16_384;

const DROP_PERSON_INDEXES: &str = "
    DROP INDEX IF EXISTS involvements_person;
    DROP INDEX IF EXISTS relations_other;";

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    staging_dir: PathBuf,
    /// Read-only connections for the lookup API (`lookup_sqlite.rs`), so lookups neither wait
    /// for each other nor for this connection.
    readers: lookup::Readers,
    /// Connector state queries run (`state_sqlite.rs`; see `Store::state_reads`).
    state_reads: std::sync::atomic::AtomicU64,
}

pub(crate) fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

/// How long to wait for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Switches the file to WAL. Converting a fresh file needs it alone, and SQLite reports a
/// concurrent opener as busy without calling the busy handler: retry within the timeout.
fn set_wal(conn: &Connection) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(err) => return Err(StoreError::db("open", err)),
        }
    }
}

fn stg(run: RunId) -> String {
    format!("stg{run}")
}

fn e(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::db(op, err)
}

impl SqliteStore {
    /// Opens or creates the database file, sets WAL and migrates.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let path = PathBuf::from(path);
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|err| StoreError::db("open", err))?
    }

    fn open_blocking(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::db("open", err))?;
        }
        let conn = Connection::open(path).map_err(|err| StoreError::Database {
            op: "open",
            message: format!("{}: {err}", path.display()),
        })?;
        // The busy timeout first: another process may be opening (and migrating) the file.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(e("open"))?;
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
            .map_err(e("open"))?;
        set_wal(&conn)?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = {PAGE_CACHE};
             PRAGMA temp_store = FILE;"
        ))
        .map_err(e("open"))?;
        // Let SQLite's sorter use a helper thread: rebuilding the pseudonym indexes after a
        // large first publication is a sort of every row. Each sorter thread has a buffer
        // the size of the page cache; see SORT_CACHE.
        let threads = std::thread::available_parallelism().map_or(0, |n| n.get().min(2) - 1);
        conn.execute_batch(&format!("PRAGMA threads = {threads};"))
            .map_err(e("open"))?;
        // `generate_series`, to unpack staged relation blobs in SQL at publication.
        rusqlite::vtab::series::load_module(&conn).map_err(e("open"))?;
        // Migrate under the write lock and read the version inside it, so concurrent opens
        // of a fresh file migrate once.
        let mut conn = conn;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e("migrate"))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e("migrate"))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(e("migrate"))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(e("migrate"))?;
        }
        tx.execute_batch(PERSON_INDEXES).map_err(e("migrate"))?;
        tx.commit().map_err(e("migrate"))?;
        let mut staging_dir = path.as_os_str().to_owned();
        staging_dir.push(".staging");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                staging_dir: PathBuf::from(staging_dir),
                readers: lookup::Readers::new(path),
                state_reads: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The counter of connector state queries run (for the store's sibling modules).
    pub(super) fn state_reads(&self) -> &std::sync::atomic::AtomicU64 {
        &self.inner.state_reads
    }

    /// Runs `f` on the connection on a blocking thread (for the store's sibling modules).
    pub(super) async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.with(move |conn, _| f(conn)).await
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .conn
                .lock()
                .map_err(|_| StoreError::db("lock", "a previous store operation panicked"))?;
            f(&mut conn, &inner)
        })
        .await
        .map_err(|err| StoreError::db("task", err))?
    }

    pub(super) async fn begin_run(&self, source: &str, mode: RunMode) -> Result<RunId, StoreError> {
        let source = source.to_owned();
        self.with(move |conn, inner| {
            let tx = conn.transaction().map_err(e("begin run"))?;
            let stale: Vec<RunId> = {
                let mut st = tx
                    .prepare("SELECT id FROM runs WHERE source = ?1 AND status = 'running'")
                    .map_err(e("begin run"))?;
                st.query_map([&source], |r| r.get(0))
                    .map_err(e("begin run"))?
                    .collect::<Result<_, _>>()
                    .map_err(e("begin run"))?
            };
            let now = now_text();
            for id in &stale {
                tx.execute(
                    "UPDATE runs SET status = 'failed', finished_at = ?2,
                     error = 'interrupted: the process ended before the run completed (phase ' || COALESCE(phase, '?') || '); nothing was published'
                     WHERE id = ?1",
                    params![id, now],
                )
                .map_err(e("begin run"))?;
            }
            tx.execute("INSERT OR IGNORE INTO sources (name) VALUES (?1)", [&source])
                .map_err(e("begin run"))?;
            tx.execute(
                "INSERT INTO runs (source, mode, status, phase, started_at, pid)
                 VALUES (?1, ?2, 'running', 'reading', ?3, ?4)",
                params![source, mode.as_str(), now, i64::from(std::process::id())],
            )
            .map_err(e("begin run"))?;
            let run = tx.last_insert_rowid();
            tx.commit().map_err(e("begin run"))?;
            for id in stale {
                drop_staging(conn, inner, id);
            }
            sweep_staging(conn, inner);
            create_staging(conn, inner, run)?;
            Ok(run)
        })
        .await
    }

    pub(super) async fn set_phase(&self, run: RunId, phase: &str) -> Result<(), StoreError> {
        let phase = phase.to_owned();
        self.with(move |conn, _| {
            conn.execute(
                "UPDATE runs SET phase = ?2 WHERE id = ?1",
                params![run, phase],
            )
            .map_err(e("set phase"))?;
            Ok(())
        })
        .await
    }

    pub(super) async fn stage(
        &self,
        run: RunId,
        records: Vec<Involvement>,
        rejects: Vec<QuarantineEntry>,
    ) -> Result<StageOutcome, StoreError> {
        self.with(move |conn, inner| {
            attach_staging(conn, inner, run)?;
            let tx = conn.transaction().map_err(e("stage"))?;
            let mut out = StageOutcome::default();
            let mut full_rows = 0i64;
            {
                let source: String = tx
                    .query_row("SELECT source FROM runs WHERE id = ?1", [run], |r| r.get(0))
                    .map_err(e("stage"))?;
                let mut id_ins = tx
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO {}.ids (source_record_id) VALUES (?1)",
                        stg(run)
                    ))
                    .map_err(e("stage"))?;
                let mut current = tx
                    .prepare_cached(
                        "SELECT content_hash FROM involvements
                         WHERE source = ?1 AND source_record_id = ?2",
                    )
                    .map_err(e("stage"))?;
                // A source with nothing published (its first import) has nothing to compare.
                let published = count(
                    &tx,
                    "SELECT EXISTS (SELECT 1 FROM involvements WHERE source = ?1)",
                    [&source],
                )? > 0;
                let mut ins = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {}.staging (source_record_id, person, key_id,
                         organisation_code, organisation_name, team, life_domain, goal,
                         contact_name, contact_role, contact_phone, contact_email,
                         start_date, end_date, status, coordinator, sensitive, purge_after,
                         rels, content_hash, shielded, end_reason_code, end_reason)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                                 ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
                        stg(run)
                    ))
                    .map_err(e("stage"))?;
                for (i, r) in records.iter().enumerate() {
                    if id_ins.execute([&r.source_record_id]).map_err(e("stage"))? == 0 {
                        out.duplicates.push((i, r.source_record_id.clone()));
                        continue;
                    }
                    // Compare while staging: an unchanged record is only noted as delivered;
                    // only new and changed records are staged in full.
                    let hash = r.content_hash();
                    if published {
                        let stored: Option<Vec<u8>> = current
                            .query_row(params![source, r.source_record_id], |row| row.get(0))
                            .optional()
                            .map_err(e("stage"))?;
                        if stored.as_deref() == Some(&hash[..]) {
                            continue;
                        }
                    }
                    full_rows += 1;
                    ins.execute(params![
                        r.source_record_id,
                        &r.person.as_bytes()[..],
                        r.key_id,
                        r.organisation_code,
                        r.organisation_name,
                        r.team,
                        r.life_domain.as_str(),
                        r.goal,
                        r.contact.name,
                        r.contact.role,
                        r.contact.phone,
                        r.contact.email,
                        r.start_date.to_string(),
                        r.end_date.map(|d| d.to_string()),
                        r.status.as_str(),
                        r.coordinator,
                        r.sensitive,
                        r.purge_after.map(|d| d.to_string()),
                        encode_relations(&r.relations),
                        &hash[..],
                        r.shielded,
                        r.end_reason.as_ref().map(|x| x.code.as_str()),
                        r.end_reason.as_ref().map(|x| x.description.as_str()),
                    ])
                    .map_err(e("stage"))?;
                }
            }
            // Durable counts of what was staged: the staging file runs without a journal, so
            // publication checks it is complete (e.g. after a power loss while held).
            let delivered = (records.len() - out.duplicates.len()) as i64;
            tx.execute(
                "UPDATE runs SET staged = staged + ?2, staged_full = staged_full + ?3 WHERE id = ?1",
                params![run, delivered, full_rows],
            )
            .map_err(e("stage"))?;
            insert_quarantine(&tx, run, &rejects)?;
            tx.commit().map_err(e("stage"))?;
            Ok(out)
        })
        .await
    }

    pub(super) async fn complete_run(
        &self,
        run: RunId,
        completion: Completion,
    ) -> Result<RunRecord, StoreError> {
        self.with(move |conn, inner| {
            attach_staging(conn, inner, run)?;
            let (record, superseded) = publish(conn, run, &completion)?;
            if record.status != RunStatus::Held {
                drop_staging(conn, inner, run);
            }
            for old in superseded {
                drop_staging(conn, inner, old);
            }
            Ok(record)
        })
        .await
    }

    pub(super) async fn fail_run(
        &self,
        run: RunId,
        read: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.with(move |conn, inner| {
            conn.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?2, error = ?3, read = ?4,
                 rejected = (SELECT count(*) FROM quarantine WHERE run_id = ?1)
                 WHERE id = ?1 AND status = 'running'",
                params![run, now_text(), error, read as i64],
            )
            .map_err(e("fail run"))?;
            drop_staging(conn, inner, run);
            Ok(())
        })
        .await
    }

    pub(super) async fn accept_run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        self.with(move |conn, inner| {
            let rec = read_run(conn, run)?;
            if rec.status != RunStatus::Held {
                return Err(StoreError::RunState {
                    run,
                    status: rec.status.as_str().into(),
                    what: "only a held run can be accepted".into(),
                });
            }
            if !staging_path(inner, run).exists() {
                return Err(StoreError::RunState {
                    run,
                    status: "held".into(),
                    what: "its staged records are gone; run the sync again".into(),
                });
            }
            attach_staging(conn, inner, run)?;
            upgrade_held_staging(conn, run)?;
            let mode = if rec.mode == "incremental" {
                RunMode::Incremental
            } else {
                RunMode::Full
            };
            let (record, superseded) = publish(
                conn,
                run,
                &Completion {
                    read: rec.counts.read,
                    mode,
                    cursor: None,
                    guard: None,
                    accept: true,
                },
            )?;
            drop_staging(conn, inner, run);
            for old in superseded {
                drop_staging(conn, inner, old);
            }
            Ok(record)
        })
        .await
    }

    pub(super) async fn runs(
        &self,
        source: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let source = source.map(str::to_owned);
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR source = ?1)
                     ORDER BY id DESC LIMIT ?2"
                ))
                .map_err(e("list runs"))?;
            st.query_map(params![source, limit as i64], run_from_row)
                .map_err(e("list runs"))?
                .collect::<Result<_, _>>()
                .map_err(e("list runs"))
        })
        .await
    }

    pub(super) async fn run(&self, run: RunId) -> Result<RunRecord, StoreError> {
        self.with(move |conn, _| read_run(conn, run)).await
    }

    pub(super) async fn would_end(&self, run: RunId) -> Result<Vec<WouldEnd>, StoreError> {
        self.with(move |conn, inner| {
            let rec = read_run(conn, run)?;
            if rec.status != RunStatus::Held || !staging_path(inner, run).exists() {
                return Ok(Vec::new());
            }
            attach_staging(conn, inner, run)?;
            let mut st = conn
                .prepare(&format!(
                    "SELECT i.organisation_code, i.life_domain, count(*) FROM involvements i
                     WHERE {ENDING} GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
                    ENDING = ending_clause(run)
                ))
                .map_err(e("would end"))?;
            st.query_map(params![rec.source, run], |r| {
                Ok(WouldEnd {
                    organisation_code: r.get(0)?,
                    life_domain: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(e("would end"))?
            .collect::<Result<_, _>>()
            .map_err(e("would end"))
        })
        .await
    }

    pub(super) async fn quarantine(
        &self,
        f: &QuarantineFilter,
    ) -> Result<Vec<QuarantineRecord>, StoreError> {
        let f = f.clone();
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(
                    "SELECT id, source, run_id, source_record_id, record_index, field, reason_code,
                            reason, created_at, sealed_raw IS NOT NULL, resolved_by_run
                     FROM quarantine
                     WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR run_id = ?2)
                       AND (?3 OR resolved_by_run IS NULL)
                     ORDER BY id LIMIT ?4",
                )
                .map_err(e("list quarantine"))?;
            st.query_map(
                params![f.source, f.run, f.include_resolved, f.limit as i64],
                |r| {
                    Ok(QuarantineRecord {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        run_id: r.get(2)?,
                        source_record_id: r.get(3)?,
                        record_index: r.get::<_, i64>(4)? as u64,
                        field: r.get(5)?,
                        reason_code: r.get(6)?,
                        reason: r.get(7)?,
                        created_at: parse_time(&r.get::<_, String>(8)?),
                        replayable: r.get(9)?,
                        resolved_by_run: r.get(10)?,
                    })
                },
            )
            .map_err(e("list quarantine"))?
            .collect::<Result<_, _>>()
            .map_err(e("list quarantine"))
        })
        .await
    }

    pub(super) async fn replayable(
        &self,
        source: Option<&str>,
    ) -> Result<Vec<SealedRecord>, StoreError> {
        let source = source.map(str::to_owned);
        self.with(move |conn, _| {
            // Only the newest entry per (source, record id) is replayed.
            let mut st = conn
                .prepare(
                    "SELECT q.id, q.source, q.source_record_id, q.sealed_raw, q.sealed_key_id
                     FROM quarantine q
                     WHERE q.sealed_raw IS NOT NULL AND q.resolved_by_run IS NULL
                       AND (?1 IS NULL OR q.source = ?1)
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
                .map_err(e("replayable"))?;
            st.query_map(params![source], |r| {
                Ok(SealedRecord {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    source_record_id: r.get(2)?,
                    sealed: r.get(3)?,
                    key_id: r.get(4)?,
                })
            })
            .map_err(e("replayable"))?
            .collect::<Result<_, _>>()
            .map_err(e("replayable"))
        })
        .await
    }

    pub(super) async fn mark_resolved(&self, ids: Vec<i64>, run: RunId) -> Result<(), StoreError> {
        self.with(move |conn, _| {
            let tx = conn.transaction().map_err(e("resolve quarantine"))?;
            {
                let mut st = tx
                    .prepare("UPDATE quarantine SET resolved_by_run = ?2 WHERE id = ?1")
                    .map_err(e("resolve quarantine"))?;
                for id in ids {
                    st.execute(params![id, run])
                        .map_err(e("resolve quarantine"))?;
                }
            }
            tx.commit().map_err(e("resolve quarantine"))
        })
        .await
    }

    pub(super) async fn expire_sealed(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.with(move |conn, _| {
            let n = conn
                .execute(
                    "UPDATE quarantine SET sealed_raw = NULL, sealed_key_id = NULL
                     WHERE sealed_raw IS NOT NULL AND sealed_expires_at < ?1",
                    [now.to_rfc3339_opts(SecondsFormat::Millis, true)],
                )
                .map_err(e("expire quarantine"))?;
            Ok(n as u64)
        })
        .await
    }

    pub(super) async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        let source = source.to_owned();
        self.with(move |conn, _| {
            conn.query_row(
                "SELECT cursor FROM sources WHERE name = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(e("cursor"))
        })
        .await
    }

    pub(super) async fn stats(&self) -> Result<Vec<SourceStats>, StoreError> {
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(
                    "SELECT s.name,
                      (SELECT count(*) FROM involvements i WHERE i.source = s.name AND i.status = 'planned'),
                      (SELECT count(*) FROM involvements i WHERE i.source = s.name AND i.status = 'active'),
                      (SELECT count(*) FROM involvements i WHERE i.source = s.name AND i.status = 'ended'),
                      (SELECT count(DISTINCT person) FROM involvements i WHERE i.source = s.name),
                      (SELECT count(*) FROM relations r WHERE r.source = s.name),
                      (SELECT count(DISTINCT COALESCE(q.source_record_id, '#' || q.id)) FROM quarantine q
                       WHERE q.source = s.name AND q.resolved_by_run IS NULL
                         AND NOT EXISTS (SELECT 1 FROM involvements i
                                         WHERE i.source = q.source
                                           AND i.source_record_id = q.source_record_id
                                           AND i.changed_run > q.run_id)),
                      s.last_success_run, s.last_success_at
                     FROM sources s ORDER BY s.name",
                )
                .map_err(e("stats"))?;
            st.query_map([], |r| {
                Ok(SourceStats {
                    source: r.get(0)?,
                    planned: r.get::<_, i64>(1)? as u64,
                    active: r.get::<_, i64>(2)? as u64,
                    ended: r.get::<_, i64>(3)? as u64,
                    persons: r.get::<_, i64>(4)? as u64,
                    relations: r.get::<_, i64>(5)? as u64,
                    quarantined: r.get::<_, i64>(6)? as u64,
                    last_success_run: r.get(7)?,
                    last_success_at: r.get::<_, Option<String>>(8)?.map(|s| parse_time(&s)),
                })
            })
            .map_err(e("stats"))?
            .collect::<Result<_, _>>()
            .map_err(e("stats"))
        })
        .await
    }

    pub(super) async fn involvements(
        &self,
        source: &str,
    ) -> Result<Vec<StoredInvolvement>, StoreError> {
        let source = source.to_owned();
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(
                    "SELECT source, source_record_id, person, key_id, organisation_code,
                            life_domain, status, end_date, content_hash, end_reason_code
                     FROM involvements WHERE source = ?1 ORDER BY source_record_id",
                )
                .map_err(e("read involvements"))?;
            st.query_map([source], |r| {
                Ok(StoredInvolvement {
                    source: r.get(0)?,
                    source_record_id: r.get(1)?,
                    person: hex::encode(r.get::<_, Vec<u8>>(2)?),
                    key_id: r.get(3)?,
                    organisation_code: r.get(4)?,
                    life_domain: r.get(5)?,
                    status: r.get(6)?,
                    end_date: r.get(7)?,
                    content_hash: hex::encode(r.get::<_, Vec<u8>>(8)?),
                    end_reason: r.get(9)?,
                })
            })
            .map_err(e("read involvements"))?
            .collect::<Result<_, _>>()
            .map_err(e("read involvements"))
        })
        .await
    }

    pub(super) async fn relations(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let source = source.to_owned();
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(
                    "SELECT source_record_id, kind, other FROM relations WHERE source = ?1
                     ORDER BY source_record_id, kind, other",
                )
                .map_err(e("read relations"))?;
            st.query_map([source], |r| {
                Ok((r.get(0)?, r.get(1)?, hex::encode(r.get::<_, Vec<u8>>(2)?)))
            })
            .map_err(e("read relations"))?
            .collect::<Result<_, _>>()
            .map_err(e("read relations"))
        })
        .await
    }
}

const RUN_COLUMNS: &str = "id, source, mode, status, started_at, finished_at, read, accepted, \
     rejected, inserted, updated, unchanged, ended, error";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let status: String = r.get(3)?;
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)? as u64) };
    Ok(RunRecord {
        id: r.get(0)?,
        source: r.get(1)?,
        mode: r.get(2)?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        started_at: parse_time(&r.get::<_, String>(4)?),
        finished_at: r.get::<_, Option<String>>(5)?.map(|s| parse_time(&s)),
        counts: RunCounts {
            read: n(6)?,
            accepted: n(7)?,
            rejected: n(8)?,
            inserted: n(9)?,
            updated: n(10)?,
            unchanged: n(11)?,
            ended: n(12)?,
        },
        error: r.get(13)?,
    })
}

fn read_run(conn: &Connection, run: RunId) -> Result<RunRecord, StoreError> {
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [run],
        run_from_row,
    )
    .optional()
    .map_err(e("read run"))?
    .ok_or(StoreError::NoSuchRun(run))
}

fn insert_quarantine(
    tx: &Transaction<'_>,
    run: RunId,
    rejects: &[QuarantineEntry],
) -> Result<(), StoreError> {
    if rejects.is_empty() {
        return Ok(());
    }
    let mut st = tx
        .prepare_cached(
            "INSERT INTO quarantine (source, run_id, source_record_id, record_index, byte_offset,
             field, reason_code, reason, sealed_raw, sealed_key_id, sealed_expires_at, created_at,
             replay_of)
             VALUES ((SELECT source FROM runs WHERE id = ?1), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                     ?10, ?11, ?12)",
        )
        .map_err(e("quarantine"))?;
    let now = now_text();
    for q in rejects {
        st.execute(params![
            run,
            q.source_record_id,
            q.record_index as i64,
            q.byte_offset as i64,
            q.field,
            q.reason_code,
            q.reason,
            q.sealed_raw,
            q.sealed_key_id,
            q.sealed_expires_at
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            now,
            q.replay_of,
        ])
        .map_err(e("quarantine"))?;
    }
    Ok(())
}

fn staging_path(inner: &Inner, run: RunId) -> PathBuf {
    inner.staging_dir.join(format!("run-{run}.db"))
}

fn is_attached(conn: &Connection, run: RunId) -> Result<bool, StoreError> {
    let name = stg(run);
    let mut st = conn.prepare("PRAGMA database_list").map_err(e("attach"))?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(1))
        .map_err(e("attach"))?
        .collect::<Result<_, _>>()
        .map_err(e("attach"))?;
    Ok(names.contains(&name))
}

/// A run held by a build before schema v5 staged no end reasons: adds the columns (empty) so
/// that it can still be accepted.
fn upgrade_held_staging(conn: &Connection, run: RunId) -> Result<(), StoreError> {
    let has: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('staging', ?1) WHERE name = 'end_reason_code'",
            [stg(run)],
            |r| r.get(0),
        )
        .map_err(e("upgrade staging"))?;
    if has == 0 {
        conn.execute_batch(&format!(
            "ALTER TABLE {s}.staging ADD COLUMN end_reason_code TEXT;
             ALTER TABLE {s}.staging ADD COLUMN end_reason TEXT;",
            s = stg(run)
        ))
        .map_err(e("upgrade staging"))?;
    }
    Ok(())
}

fn attach_staging(conn: &Connection, inner: &Inner, run: RunId) -> Result<(), StoreError> {
    if is_attached(conn, run)? {
        return Ok(());
    }
    let path = staging_path(inner, run);
    if !path.exists() {
        return Err(StoreError::RunState {
            run,
            status: "unknown".into(),
            what: "its staging file is missing".into(),
        });
    }
    conn.execute(
        "ATTACH DATABASE ?1 AS ?2",
        params![path.to_string_lossy(), stg(run)],
    )
    .map_err(e("attach"))?;
    conn.execute_batch(&format!(
        "PRAGMA {s}.journal_mode = OFF; PRAGMA {s}.synchronous = OFF;",
        s = stg(run)
    ))
    .map_err(e("attach"))?;
    Ok(())
}

fn create_staging(conn: &Connection, inner: &Inner, run: RunId) -> Result<(), StoreError> {
    std::fs::create_dir_all(&inner.staging_dir).map_err(|err| StoreError::db("staging", err))?;
    let path = staging_path(inner, run);
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path).map_err(|err| StoreError::db("staging", err))?;
    attach_staging(conn, inner, run)?;
    conn.execute_batch(&format!(
        "PRAGMA {s}.page_size = {PAGE_SIZE};
         CREATE TABLE {s}.staging (
            source_record_id TEXT PRIMARY KEY,
            person BLOB NOT NULL, key_id TEXT NOT NULL,
            organisation_code TEXT NOT NULL, organisation_name TEXT NOT NULL, team TEXT,
            life_domain TEXT NOT NULL, goal TEXT,
            contact_name TEXT NOT NULL, contact_role TEXT, contact_phone TEXT, contact_email TEXT,
            start_date TEXT NOT NULL, end_date TEXT, status TEXT NOT NULL,
            coordinator INTEGER NOT NULL, sensitive INTEGER NOT NULL, purge_after TEXT,
            rels BLOB NOT NULL, content_hash BLOB NOT NULL,
            shielded INTEGER NOT NULL DEFAULT 0,
            end_reason_code TEXT, end_reason TEXT
         ) WITHOUT ROWID;
         CREATE TABLE {s}.ids (source_record_id TEXT PRIMARY KEY) WITHOUT ROWID;",
        s = stg(run)
    ))
    .map_err(e("staging"))
}

/// Deletes staging files left by runs that finished (a crash between commit and cleanup).
fn sweep_staging(conn: &Connection, inner: &Inner) {
    let Ok(dir) = std::fs::read_dir(&inner.staging_dir) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("run-")
            .and_then(|n| n.strip_suffix(".db"))
            .and_then(|n| n.parse::<RunId>().ok())
        else {
            continue;
        };
        let status: Option<String> = conn
            .query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .ok()
            .flatten();
        if !matches!(status.as_deref(), Some("running" | "held")) {
            drop_staging(conn, inner, id);
        }
    }
}

fn drop_staging(conn: &Connection, inner: &Inner, run: RunId) {
    if matches!(is_attached(conn, run), Ok(true)) {
        let _ = conn.execute("DETACH DATABASE ?1", [stg(run)]);
    }
    let _ = std::fs::remove_file(staging_path(inner, run));
}

/// Rows of the source that a full run would end: active, not delivered, not quarantined in
/// this run (a rejected record stays as it was rather than being ended). Params: ?1 source,
/// ?2 run.
fn ending_clause(run: RunId) -> String {
    format!(
        "i.source = ?1 AND i.status <> 'ended'
         AND NOT EXISTS (SELECT 1 FROM {s}.ids s WHERE s.source_record_id = i.source_record_id)
         AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.run_id = ?2
                         AND q.source_record_id = i.source_record_id)",
        s = stg(run)
    )
}

fn count(tx: &Transaction<'_>, sql: &str, p: impl rusqlite::Params) -> Result<u64, StoreError> {
    tx.query_row(sql, p, |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(e("publish"))
}

/// Shrink guard, then compare and apply, in one IMMEDIATE transaction.
fn publish(
    conn: &mut Connection,
    run: RunId,
    c: &Completion,
) -> Result<(RunRecord, Vec<RunId>), StoreError> {
    let s = stg(run);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(e("publish"))?;
    failpoint::hit("publish:begin");
    let mut timer = super::StepTimer::start();
    let (source, status): (String, String) = tx
        .query_row(
            "SELECT source, status FROM runs WHERE id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(e("publish"))?;
    // Under the write lock: another process (or a shutdown that gave up waiting) may have
    // failed, published or superseded the run meanwhile.
    let expected = if c.accept {
        RunStatus::Held
    } else {
        RunStatus::Running
    };
    if status != expected.as_str() {
        return Err(StoreError::RunState {
            run,
            status,
            what: if c.accept {
                "only a held run can be accepted".into()
            } else {
                "only a running run can be completed".into()
            },
        });
    }
    let staged = count(&tx, &format!("SELECT count(*) FROM {s}.ids"), [])?;
    let full_rows = count(&tx, &format!("SELECT count(*) FROM {s}.staging"), [])?;
    let (recorded, recorded_full): (i64, i64) = tx
        .query_row(
            "SELECT staged, staged_full FROM runs WHERE id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(e("publish"))?;
    if staged as i64 != recorded || full_rows as i64 != recorded_full {
        return Err(StoreError::RunState {
            run,
            status: "incomplete".into(),
            what: format!(
                "its staging holds {staged}/{full_rows} records but {recorded}/{recorded_full} \
                 were staged; run the sync again"
            ),
        });
    }
    let rejected = count(
        &tx,
        "SELECT count(*) FROM quarantine WHERE run_id = ?1",
        [run],
    )?;
    let total = count(
        &tx,
        "SELECT count(*) FROM involvements WHERE source = ?1",
        [&source],
    )?;
    let active = count(
        &tx,
        "SELECT count(*) FROM involvements WHERE source = ?1 AND status <> 'ended'",
        [&source],
    )?;
    let would_end = if c.mode == RunMode::Full {
        count(
            &tx,
            &format!(
                "SELECT count(*) FROM involvements i WHERE {}",
                ending_clause(run)
            ),
            params![source, run],
        )?
    } else {
        0
    };
    let now = now_text();
    timer.lap("guard counts");
    if let Some(why) = c
        .guard
        .filter(|_| c.mode == RunMode::Full)
        .and_then(|g| g.hold_reason(staged, total, active, would_end))
    {
        tx.execute(
            "UPDATE runs SET status = 'held', phase = 'held', finished_at = ?2, error = ?3,
                 read = ?4, accepted = ?5, rejected = ?6, ended = ?7 WHERE id = ?1",
            params![
                run,
                now,
                why,
                c.read as i64,
                staged as i64,
                rejected as i64,
                would_end as i64
            ],
        )
        .map_err(e("hold run"))?;
        let superseded = supersede_older_held(&tx, &source, run)?;
        tx.commit().map_err(e("hold run"))?;
        return Ok((read_run(conn, run)?, superseded));
    }

    // Relations of new and changed records: replace them.
    let changed_or_new = format!(
        "FROM {s}.staging s LEFT JOIN involvements i
           ON i.source = ?1 AND i.source_record_id = s.source_record_id
         WHERE i.content_hash IS NULL OR i.content_hash <> s.content_hash"
    );
    // One scan tells whether anything is new or changed; a quiet night skips the rest.
    // A source's first publication: every staged record is new, so no statement needs to
    // look up the published row of a staged one.
    let first = total == 0;
    let to_apply = if first {
        full_rows
    } else {
        count(&tx, &format!("SELECT count(*) {changed_or_new}"), [&source])?
    };
    timer.lap("compared");
    let present = count(&tx, "SELECT count(*) FROM involvements", [])?;
    let rebuild_indexes = to_apply > present;
    if rebuild_indexes {
        tx.execute_batch(DROP_PERSON_INDEXES)
            .map_err(e("publish"))?;
    }

    // A source's first publication has no relations to replace (skips a scan of staging).
    let has_relations = to_apply > 0
        && count(
            &tx,
            "SELECT EXISTS (SELECT 1 FROM relations WHERE source = ?1)",
            [&source],
        )? > 0;
    if has_relations {
        tx.execute(
            &format!(
                "DELETE FROM relations WHERE source = ?1 AND source_record_id IN
                 (SELECT s.source_record_id {changed_or_new})"
            ),
            [&source],
        )
        .map_err(e("publish relations"))?;
    }
    timer.lap("relations deleted");
    failpoint::hit("publish:relations");
    if to_apply > 0 {
        // Unpacked in SQL, as `codec::decode_relations` does: 33-byte entries of kind byte
        // (1 parent, 2 child, 3 household member) and pseudonym; unknown kinds are skipped.
        let (join, changed) = if first {
            ("", "")
        } else {
            (
                "LEFT JOIN involvements i
                   ON i.source = ?1 AND i.source_record_id = s.source_record_id",
                "(i.content_hash IS NULL OR i.content_hash <> s.content_hash) AND",
            )
        };
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO relations (source, source_record_id, person, kind, other, key_id)
                 SELECT ?1, s.source_record_id, s.person,
                        CASE substr(s.rels, g.value * 33 + 1, 1)
                          WHEN X'01' THEN 'parent' WHEN X'02' THEN 'child'
                          ELSE 'household_member' END,
                        substr(s.rels, g.value * 33 + 2, 32), s.key_id
                 FROM {s}.staging s
                 {join}
                 JOIN generate_series(0, length(s.rels) / 33 - 1) AS g
                 WHERE {changed} length(s.rels) >= 33
                   AND substr(s.rels, g.value * 33 + 1, 1) IN (X'01', X'02', X'03')"
            ),
            [&source],
        )
        .map_err(e("publish relations"))?;
    }
    timer.lap("relations inserted");
    failpoint::hit("publish:relations-inserted");

    let updated = if to_apply == 0 || first {
        0
    } else {
        tx.execute(
            &format!(
                "UPDATE OR IGNORE involvements SET
                   person = s.person, key_id = s.key_id,
                   organisation_code = s.organisation_code, organisation_name = s.organisation_name,
                   team = s.team, life_domain = s.life_domain, goal = s.goal,
                   contact_name = s.contact_name, contact_role = s.contact_role,
                   contact_phone = s.contact_phone, contact_email = s.contact_email,
                   start_date = s.start_date, end_date = s.end_date, status = s.status,
                   coordinator = s.coordinator, sensitive = s.sensitive, purge_after = s.purge_after,
                   shielded = s.shielded,
                   end_reason_code = s.end_reason_code, end_reason = s.end_reason,
                   content_hash = s.content_hash, changed_run = ?2, ended_by_run = NULL
                 FROM {s}.staging s
                 WHERE involvements.source = ?1
                   AND involvements.source_record_id = s.source_record_id
                   AND involvements.content_hash <> s.content_hash"
            ),
            params![source, run],
        )
        .map_err(e("publish updates"))? as u64
    };
    timer.lap("updated");
    failpoint::hit("publish:updated");

    let inserted = if to_apply == 0 {
        0
    } else {
        let new_only = if first {
            ""
        } else {
            "WHERE NOT EXISTS (SELECT 1 FROM involvements i
                               WHERE i.source = ?1 AND i.source_record_id = s.source_record_id)"
        };
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO involvements (source, source_record_id, person, key_id,
                   organisation_code, organisation_name, team, life_domain, goal,
                   contact_name, contact_role, contact_phone, contact_email,
                   start_date, end_date, status, coordinator, sensitive, purge_after,
                   shielded, end_reason_code, end_reason, content_hash, first_seen, changed_run)
                 SELECT ?1, s.source_record_id, s.person, s.key_id,
                   s.organisation_code, s.organisation_name, s.team, s.life_domain, s.goal,
                   s.contact_name, s.contact_role, s.contact_phone, s.contact_email,
                   s.start_date, s.end_date, s.status, s.coordinator, s.sensitive, s.purge_after,
                   s.shielded, s.end_reason_code, s.end_reason, s.content_hash, ?3, ?2
                 FROM {s}.staging s
                 {new_only}"
            ),
            params![source, run, now],
        )
        .map_err(e("publish inserts"))? as u64
    };
    // `OR IGNORE` above: a statement that may abort half-way makes SQLite keep a statement
    // journal of every page it changes (for a first import, a temporary file as large as the
    // new rows). Nothing can be ignored in fact — staging holds each record id once, the
    // insert takes new ids only and the columns have the index's constraints — and this
    // check makes sure: anything skipped fails the publication, which rolls back.
    if inserted + updated != to_apply {
        return Err(StoreError::RunState {
            run,
            status: "incomplete".into(),
            what: format!(
                "{to_apply} staged records were new or changed but {inserted} were inserted \
                 and {updated} updated (the index refused the others); nothing was published"
            ),
        });
    }
    timer.lap("inserted");
    failpoint::hit("publish:inserted");

    let ended = if c.mode == RunMode::Full && would_end > 0 {
        tx.execute(
            &format!(
                "UPDATE involvements AS i SET status = 'ended',
                   end_date = COALESCE(end_date, date(?3)), content_hash = X'',
                   changed_run = ?2, ended_by_run = ?2
                 WHERE {}",
                ending_clause(run)
            ),
            params![source, run, now],
        )
        .map_err(e("publish ends"))? as u64
    } else {
        0
    };
    timer.lap("ended");
    if rebuild_indexes {
        // Sort in smaller buffers (faster, and bounded memory with the helper thread), then
        // back to the page cache the rest of the store uses.
        tx.execute_batch(&format!(
            "PRAGMA cache_size = {SORT_CACHE}; {PERSON_INDEXES} PRAGMA cache_size = {PAGE_CACHE};"
        ))
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
    tx.execute(
        "UPDATE runs SET status = ?2, phase = 'published', finished_at = ?3, error = NULL,
           read = ?4, accepted = ?5, rejected = ?6, inserted = ?7, updated = ?8,
           unchanged = ?9, ended = ?10
         WHERE id = ?1",
        params![
            run,
            status.as_str(),
            now,
            c.read as i64,
            staged as i64,
            rejected as i64,
            inserted as i64,
            updated as i64,
            unchanged as i64,
            ended as i64
        ],
    )
    .map_err(e("publish run"))?;
    tx.execute(
        "UPDATE sources SET last_success_run = ?2, last_success_at = ?3,
           cursor = COALESCE(?4, cursor)
         WHERE name = ?1",
        params![source, run, now, c.cursor],
    )
    .map_err(e("publish run"))?;
    super::state_sqlite::apply(&tx, &source, run)?;
    let superseded = supersede_older_held(&tx, &source, run)?;
    failpoint::hit("publish:commit");
    tx.commit().map_err(e("publish commit"))?;
    timer.lap("committed");
    failpoint::hit("publish:committed");
    Ok((read_run(conn, run)?, superseded))
}

/// Marks held runs of the source older than `run` superseded; returns their ids.
fn supersede_older_held(
    tx: &Transaction<'_>,
    source: &str,
    run: RunId,
) -> Result<Vec<RunId>, StoreError> {
    let ids: Vec<RunId> = {
        let mut st = tx
            .prepare("SELECT id FROM runs WHERE source = ?1 AND status = 'held' AND id < ?2")
            .map_err(e("supersede"))?;
        st.query_map(params![source, run], |r| r.get(0))
            .map_err(e("supersede"))?
            .collect::<Result<_, _>>()
            .map_err(e("supersede"))?
    };
    tx.execute(
        "UPDATE runs SET status = 'superseded', phase = 'superseded',
           error = 'superseded by run ' || ?2 || '; can no longer be accepted'
         WHERE source = ?1 AND status = 'held' AND id < ?2",
        params![source, run],
    )
    .map_err(e("supersede"))?;
    Ok(ids)
}
